"""One registry's HTTP conversation: authentication, redirects, retries, deadlines
and capped reads.  Private to :mod:`airgap.registry`."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Mapping
from email.message import Message
from typing import IO
from urllib.parse import urljoin, urlsplit

from airgap._internal.http import TRANSIENT_ERRORS, DeadlineExceeded, Transport
from airgap.exceptions import InputError, IntegrityError, NotFoundError, RegistryError
from airgap.registry import _failures as fail
from airgap.registry.auth import DOCKER_HUB_HOSTS, Authenticator, Origin
from airgap.registry.limits import Limits

log = logging.getLogger("airgap.registry")

# Tag lists, catalogs, tokens, error bodies.
JSON_CAP = 16 * 1024 * 1024
MAX_REDIRECTS = 5
_ERROR_BODY_CAP = 64 * 1024
# An error body that cannot be read or parsed still leaves the status line to report.
_UNREADABLE_ERROR_BODY: tuple[type[BaseException], ...] = (ValueError, *TRANSIENT_ERRORS)

Body = bytes | IO[bytes] | None


def _ssl_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file is not None:
        # Added to the system CAs: a blob redirect may point at a storage host
        # signed by a public CA while the registry uses the internal one.
        try:
            ctx.load_verify_locations(cafile=os.fspath(ca_file))
        except FileNotFoundError:
            raise InputError(f"{ca_file}: no such CA file (--ca-file)") from None
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"{ca_file}: not a readable PEM CA bundle ({getattr(exc, 'strerror', None) or exc})") from None
    return ctx


class Session:
    """Sends requests to one registry; safe to share between threads."""

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool,
        ca_file: str | os.PathLike[str] | None,
        credentials: tuple[str, str] | None,
        auth_file: str | os.PathLike[str] | None,
        timeout: float,
        retries: int,
        backoff: float,
        limits: Limits,
    ) -> None:
        # Docker Hub's name in references is not the host that serves its API.
        endpoint = "registry-1.docker.io" if registry in DOCKER_HUB_HOSTS else registry
        self.base = f"{'http' if plain_http else 'https'}://{endpoint}"
        try:
            self.origin = Origin.of(self.base + "/")
        except ValueError:
            raise InputError(f"{registry!r}: not a registry host[:port]") from None
        self.registry = registry
        self.transport = Transport(ssl_context=_ssl_context(ca_file), timeout=timeout)
        self.auth = Authenticator(registry, self.origin, credentials=credentials, auth_file=auth_file)
        self.retries = retries
        self.backoff = backoff
        self.limits = limits

    def url(self, path: str) -> str:
        return self.base + path

    def sleep(self, attempt: int, asked: float | None = None) -> None:
        time.sleep(fail.backoff_delay(self.backoff, attempt, random.random(), asked))

    # -- one exchange, one logical request, retries

    def _exchange(self, method: str, url: str, headers: dict[str, str], body: Body, nbytes: int,
                  what: str) -> http.client.HTTPResponse:
        seconds = self.limits.deadline(nbytes)
        log.debug("%s %s (deadline %.0f s)", method, url, seconds)
        try:
            resp = self.transport.request(method, url, headers, body, deadline=seconds)
        except DeadlineExceeded as exc:
            raise fail.too_slow(Origin.of(url).netloc, what, exc.seconds, self.limits.min_rate) from None
        except TRANSIENT_ERRORS as exc:
            final = fail.unreachable(exc, url, what)
            if final is not None:
                raise final from None
            raise
        if resp.status == 400 and url.startswith("http:") and resp.version == 10 and not resp.headers.keys():
            # Go's servers answer plain HTTP on a TLS port with a bare HTTP/1.0 400.
            self.transport.abandon(resp)
            raise fail.https_on_plain_port(Origin.of(url), what)
        return resp

    def send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        nbytes: int = 0,
        follow_redirects: bool = True,
        authenticate: bool = True,
    ) -> http.client.HTTPResponse:
        """One logical request: authentication and redirects, no retries.

        *nbytes* is the most the exchange may carry (body sent plus body
        expected); it sets the deadline of every hop.
        """
        challenged = False
        for _ in range(MAX_REDIRECTS + 1):
            try:
                origin = Origin.of(url)
            except ValueError:
                raise RegistryError(f"{what}: redirected to {url!r}: only http:// and https:// URLs are followed") from None
            # Credentials only ever go to the registry's own origin (scheme, host, port).
            own = authenticate and origin == self.origin
            h = dict(headers or {})
            auth = self.auth.header(scope, self.get_json) if own else None
            if auth:
                h["Authorization"] = auth
            resp = self._exchange(method, url, h, body, nbytes, what)
            if resp.status == 401 and own and not challenged:
                challenge = resp.getheader("WWW-Authenticate")
                self.transport.release(resp)
                self.auth.on_challenge(challenge, scope, auth is not None, what)
                challenged = True
                if body is not None and not isinstance(body, bytes):
                    # A streamed body is spent; the push loop re-sends from the
                    # session's Range, now with valid credentials.
                    raise fail.Retryable(f"401 from {self.registry}, re-authenticated")
                continue
            if resp.status in fail.REDIRECT_STATUSES and follow_redirects:
                location = resp.getheader("Location")
                self.transport.release(resp)
                url = self._redirect(url, location, resp.status, what)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            if resp.status == 401 and authenticate:
                self.transport.release(resp)
                if own and self.auth.credentials() is None:
                    # Anonymous tokens exist but do not reach this repository.
                    raise self.auth.no_credentials(what)
                if own:
                    raise self.auth.rejected(origin.netloc, what)
                raise RegistryError(f"401 Unauthorized from {origin.netloc} ({what})")
            return resp
        raise RegistryError(f"{self.registry}: {what}: more than {MAX_REDIRECTS} redirects")

    def _redirect(self, url: str, location: str | None, status: int, what: str) -> str:
        if not location:
            raise RegistryError(f"{self.registry}: {what}: redirect {status} without Location")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in location):
            raise RegistryError(f"{what}: redirect {status} to a Location with spaces or control characters")
        new = urljoin(url, location)
        scheme = urlsplit(new).scheme.lower()
        if scheme not in ("http", "https"):
            raise RegistryError(f"{what}: redirected to {new[:200]!r}: only http:// and https:// URLs are followed")
        if log.isEnabledFor(logging.DEBUG):
            target = Origin.of(new)
            log.debug("%s: redirect %d to %s%s", what, status, target,
                      "" if target == self.origin else " (another origin: no credentials sent)")
        return new

    def request(self, method: str, url: str, *, scope: str, what: str, **kw) -> http.client.HTTPResponse:
        """:meth:`send`, retried for the failures a retry can fix (see ``_failures``)."""
        attempt = 0
        while True:
            try:
                resp = self.send(method, url, scope=scope, what=what, **kw)
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise fail.exhausted(self.registry, what, exc, attempt + 1, self.origin) from exc
                log.debug("%s: %s: %s; retrying", what, type(exc).__name__, exc)
                self.sleep(attempt)
                attempt += 1
                continue
            if resp.status in fail.RETRY_STATUSES:
                asked = fail.retry_after(resp.getheader("Retry-After"))
                if asked is not None and asked > fail.MAX_RETRY_AFTER:
                    self.transport.release(resp)
                    raise fail.asks_too_long(resp.status, resp.reason, self.origin.netloc, what, asked)
                if attempt < self.retries:
                    self.transport.release(resp)
                    log.debug("%s: %d %s; retrying", what, resp.status, resp.reason)
                    self.sleep(attempt, asked)
                    attempt += 1
                    continue
            return resp

    # -- bodies

    def check_expired(self, resp: http.client.HTTPResponse, what: str) -> None:
        exc = self.transport.expired(resp)
        if exc is not None:
            netloc = getattr(resp, "_airgap_origin", ("", self.origin.netloc))[1]
            raise fail.too_slow(netloc, what, exc.seconds, self.limits.min_rate)

    def after_drop(self, resp: http.client.HTTPResponse, exc: BaseException, drops: int, artifact: str,
                   doing: str, what: str) -> int:
        """Count a connection lost mid-body: raise once retries are used up, else wait; the new count."""
        self.transport.abandon(resp)
        self.check_expired(resp, what)
        drops += 1
        if drops > self.retries:
            raise RegistryError(f"{artifact}: connection lost {drops} times while {doing} ({exc})") from exc
        log.debug("%s: connection lost while %s (%s); retrying", artifact, doing, exc)
        self.sleep(drops - 1)
        return drops

    def read_capped(self, resp: http.client.HTTPResponse, cap: int, artifact: str, noun: str, limit: str) -> bytes:
        """The whole body, refused if it is (or announces to be) over *cap*."""
        length = resp.getheader("Content-Length")
        announced = int(length) if length and length.isdigit() else None
        if announced is not None and announced > cap:
            raise IntegrityError(artifact, f"{noun} of {announced} bytes exceeds {limit}")
        data = resp.read(cap + 1)
        self.check_expired(resp, f"GET {noun} {artifact}")
        if len(data) > cap:
            raise IntegrityError(artifact, f"{noun} exceeds {limit}")
        if announced is not None and len(data) < announced:
            raise http.client.IncompleteRead(data, announced - len(data))
        return data

    def get_document(self, url: str, *, scope: str, artifact: str, noun: str, cap: int, limit: str,
                     headers: Mapping[str, str] | None = None) -> tuple[bytes, Message]:
        """GET a small document (manifest, config) whole, capped; retried after a drop."""
        what = f"GET {noun} {artifact}"
        drops = 0
        while True:
            resp = self.request("GET", url, scope=scope, what=what, headers=headers, nbytes=cap)
            try:
                if resp.status == 404:
                    raise NotFoundError(f"{artifact}: {noun} not found (404)")
                if resp.status != 200:
                    raise self.fail(resp, what)
                data = self.read_capped(resp, cap, artifact, noun, limit)
            except TRANSIENT_ERRORS as exc:
                drops = self.after_drop(resp, exc, drops, artifact, f"reading the {noun}", what)
                continue
            except BaseException:
                self.transport.abandon(resp)
                raise
            self.transport.release(resp)
            return data, resp.msg

    def read_json(self, resp: http.client.HTTPResponse, what: str) -> object:
        data = resp.read(JSON_CAP + 1)
        self.check_expired(resp, what)
        if len(data) > JSON_CAP:
            raise RegistryError(f"{self.registry}: {what}: response larger than {JSON_CAP} bytes")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{self.registry}: {what}: response is not JSON ({exc})") from None

    def get_json(self, url: str, headers: dict[str, str], what: str) -> tuple[int, object]:
        """For the token realm: one GET with our own headers, no registry auth, no redirects."""
        resp = self.request("GET", url, scope="", what=what, headers=headers, nbytes=JSON_CAP,
                            follow_redirects=False, authenticate=False)
        try:
            return resp.status, (self.read_json(resp, what) if resp.status == 200 else None)
        finally:
            self.transport.release(resp)

    def fail(self, resp: http.client.HTTPResponse, what: str) -> RegistryError:
        """Turn an unexpected answer into a RegistryError quoting the registry's errors."""
        detail = ""
        body = b""
        try:
            body = resp.read(_ERROR_BODY_CAP)
            doc = json.loads(body) if body else None
            if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
                detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in doc["errors"] if isinstance(e, dict))
        except _UNREADABLE_ERROR_BODY:
            pass
        finally:
            self.transport.abandon(resp)
        if resp.status == 400 and fail.GO_TLS_PORT_ANSWER in body:
            scheme, netloc = getattr(resp, "_airgap_origin", ("http", self.origin.netloc))
            return fail.https_on_plain_port(Origin.of(f"{scheme}://{netloc}/"), what)
        return RegistryError(f"{what}: {resp.status} {resp.reason}" + (f" ({detail[:500]})" if detail else ""))

    def exists(self, url: str, scope: str, what: str, headers: Mapping[str, str] | None = None) -> bool:
        """HEAD *url*: 200 is True, 404 is False, anything else is an error naming *what*."""
        resp = self.request("HEAD", url, scope=scope, what=what, headers=headers)
        try:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise self.fail(resp, what)
        finally:
            self.transport.release(resp)

    def close(self) -> None:
        self.transport.close()
