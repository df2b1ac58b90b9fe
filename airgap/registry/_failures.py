"""Which network failures a retry can fix, and what to tell the user about the others.

Retried: a connection dropped or timed out mid-exchange (a stale keep-alive
socket, a reset, a stalled read), 5xx answers, and 429 when the registry asks
for a wait we are willing to make.  Not retried, because a retry gives the same
answer: a refused connection, an unknown host name, a TLS mismatch or an
untrusted certificate, a deadline missed (the peer is too slow), and any other
4xx.  Those end at once, with the address and what to check.
"""

from __future__ import annotations

import email.utils
import errno
import http.client
import socket
import ssl
from datetime import UTC, datetime

from airgap.exceptions import RegistryError, UnreachableError
from airgap.registry.auth import Origin
from airgap.registry.limits import format_rate

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Longest Retry-After honoured; a registry asking for more is asked again another day.
MAX_RETRY_AFTER = 60.0
# OpenSSL's names for "the peer did not answer with TLS" (a plain-HTTP server).
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})
# What Go's net/http (docker-registry, Harbor, zot ...) answers plain HTTP with on a TLS port.
GO_TLS_PORT_ANSWER = b"Client sent an HTTP request to an HTTPS server"


def _where(origin: Origin) -> str:
    return origin.netloc if origin.port not in (80, 443) else f"{origin.host}:{origin.port}"


def https_on_plain_port(origin: Origin, what: str) -> UnreachableError:
    return UnreachableError(origin.netloc, (
        f"{_where(origin)} answered plain HTTP with TLS ({what}): it is an HTTPS registry; "
        "drop --plain-http (and give --ca-file CA.pem if its certificate comes from an internal CA)"))


def unreachable(exc: BaseException, url: str, what: str) -> UnreachableError | None:
    """The error to raise at once for *exc* on *url*; None if a retry may help."""
    origin = Origin.of(url)
    where = _where(origin)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UnreachableError(origin.netloc, (
            f"TLS certificate of {where} is not trusted ({exc.verify_message}) ({what}): if the registry's "
            "certificate comes from an internal CA, give --ca-file CA.pem"))
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
        return UnreachableError(origin.netloc, (
            f"server gave HTTP response to HTTPS client ({what}): "
            f"if {where} is a plain-HTTP registry, add --plain-http"))
    if isinstance(exc, ssl.SSLError):
        return UnreachableError(origin.netloc, f"TLS with {where} failed ({exc.reason or exc}) ({what})")
    if isinstance(exc, http.client.BadStatusLine) and str(exc.args[0] if exc.args else "").startswith("\x15\x03"):
        return https_on_plain_port(origin, what)  # a TLS alert record where a status line belongs
    if isinstance(exc, ConnectionRefusedError):
        return UnreachableError(origin.netloc, (
            f"{where}: connection refused ({what}): nothing listens on {origin.host} port {origin.port}; "
            "check the registry address (host:port) and that the registry is running"))
    if isinstance(exc, socket.gaierror):
        return UnreachableError(origin.netloc, (
            f"{origin.host}: cannot resolve the host name ({exc.strerror}) ({what}): "
            "check the registry name and this machine's DNS"))
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return UnreachableError(origin.netloc, (
            f"{where}: no route to the host ({exc.strerror}) ({what}): check the address and this machine's network"))
    return None


class Retryable(Exception):
    """A push step failed in a way that asking the session for its Range may fix."""


def exhausted(registry: str, what: str, exc: BaseException, attempts: int, origin: Origin) -> RegistryError:
    msg = f"{registry}: {what}: {type(exc).__name__}: {exc} (after {attempts} attempts)"
    if origin.scheme == "http" and isinstance(exc, (http.client.BadStatusLine, ConnectionResetError)):
        # A TLS server hangs up on a plain-HTTP request without a word (Go's says so: see fail()).
        msg += f"; if {_where(origin)} serves HTTPS, drop --plain-http"
    return RegistryError(msg)


def too_slow(netloc: str, what: str, seconds: float, min_rate: int) -> RegistryError:
    return RegistryError(
        f"{what}: {netloc} did not complete the answer within {seconds:.0f} s "
        f"(minimum rate {format_rate(min_rate)}): the registry is stalled or too slow; "
        "for a slow link lower --min-rate")


def retry_after(header: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not header:
        return None
    value = header.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - datetime.now(UTC).timestamp())


def asks_too_long(status: int, reason: str, netloc: str, what: str, wait: float) -> RegistryError:
    return RegistryError(f"{status} {reason} from {netloc} ({what}): it asks to wait {wait:.0f} s, "
                         f"more than the {MAX_RETRY_AFTER:.0f} s airgap waits; try again later")


def backoff_delay(backoff: float, attempt: int, jitter: float, asked: float | None = None) -> float:
    """Exponential backoff with jitter (0..1), at least what the registry asked for."""
    delay = backoff * (2**attempt) * (0.5 + jitter / 2)
    if asked is not None:
        delay = max(delay, asked)
    return min(delay, MAX_RETRY_AFTER)
