"""A small HTTP/1.1 transport on http.client: one keep-alive connection per
thread and per origin, and an overall deadline on every exchange.

http.client connections are not thread-safe, and a fresh TLS handshake per
blob would dominate the time of a bundle with thousands of small layers, so
every thread keeps its own connection to every origin it talks to (the
registry, and whatever storage host a blob redirect points at).

A socket timeout only bounds each ``recv``: a server that drips one byte a
second never trips it.  So every exchange (connect, request, headers, body,
until :meth:`Transport.release`) also has a deadline; a watchdog thread shuts
the socket down when it passes, which wakes the blocked call, and the
exchange is marked expired so the caller reports a deadline, not a drop.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import IO, TypeVar
from urllib.parse import urlsplit

from airgap.exceptions import InvalidValueError

# Large socket writes matter for multi-GiB uploads: http.client's default of 8 KiB
# turns every GiB into 131072 send() calls.
_BLOCKSIZE = 1 << 20

Body = bytes | IO[bytes] | None

# Errors after which the connection is unusable; whether a retry can help is
# the caller's decision (see airgap.registry._failures).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class DeadlineExceeded(TimeoutError):
    """An exchange ran past its deadline (the peer is too slow, or stalled)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:.0f} s")
        self.seconds = seconds


class _Exchange:
    """One request/response on one connection, from connect until release."""

    __slots__ = ("conn", "seconds", "expired", "armed")

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn, self.seconds = conn, seconds
        self.expired = False
        self.armed = True


class _Watchdog:
    """One thread that shuts down the sockets of exchanges past their deadline."""

    # A deadline that passes while the socket is still connecting has nothing to
    # shut down yet; look again this much later.
    _RECHECK = 0.2
    # With nothing armed for this long the thread ends; the next arm() starts another.
    _IDLE = 5.0

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, ex: _Exchange) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + ex.seconds, next(self._seq), ex))
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="airgap-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, ex: _Exchange) -> None:
        with self._cond:
            if ex.armed:
                ex.armed = False  # dropped from the heap once it is at the top
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    if not self._cond.wait(self._IDLE) and not self._heap:
                        break
                    continue
                due, _, ex = self._heap[0]
                now = time.monotonic()
                if not ex.armed:
                    heapq.heappop(self._heap)
                    continue
                if due > now:
                    self._cond.wait(due - now)
                    continue
                heapq.heappop(self._heap)
                ex.expired = True
                sock = ex.conn.sock
                if sock is None:
                    heapq.heappush(self._heap, (now + self._RECHECK, next(self._seq), ex))
                    continue
                try:
                    # The plain socket's shutdown, also for an SSLSocket: it wakes a
                    # blocked recv/send in another thread without unwrapping TLS.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            if self._thread is threading.current_thread():
                self._thread = None


_Conn = TypeVar("_Conn", bound=http.client.HTTPConnection)


def _connection_class(base: type[_Conn]) -> type[_Conn]:
    # Generic so the HTTPS subclass keeps HTTPSConnection's ``context`` parameter.
    class Conn(base):  # type: ignore[valid-type, misc]
        """Connects within the connect timeout, then reads with the (longer) read timeout."""

        read_timeout: float = 60

        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(self.read_timeout)

    Conn.__name__ = Conn.__qualname__ = f"Deadline{base.__name__}"
    return Conn


_HTTP = _connection_class(http.client.HTTPConnection)
_HTTPS = _connection_class(http.client.HTTPSConnection)


class Transport:
    """Sends requests to absolute URLs, reusing one connection per (thread, origin)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60,
        connect_timeout: float = 15,
    ) -> None:
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()

    def _connections(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns = self._connections()
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = _HTTPS(netloc, timeout=self._connect_timeout, context=self._ssl_context, blocksize=_BLOCKSIZE)
            elif scheme == "http":
                conn = _HTTP(netloc, timeout=self._connect_timeout, blocksize=_BLOCKSIZE)
            else:
                raise InvalidValueError(f"unsupported URL scheme {scheme!r}")
            conn.read_timeout = self._timeout  # type: ignore[attr-defined]
            conns[(scheme, netloc)] = conn
            with self._lock:
                self._all.add(conn)
        return conn

    def _discard(self, scheme: str, netloc: str) -> None:
        conn = self._connections().pop((scheme, netloc), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        *,
        deadline: float | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request; the caller must :meth:`release` (or :meth:`abandon`) the response.

        *deadline* (seconds) bounds the whole exchange, reading the body
        included, until the response is released; past it the socket is shut
        down and :class:`DeadlineExceeded` is raised here or the body reads
        fail (check :meth:`expired`).  On any transport error the connection
        is dropped, so the next request starts on a fresh one.
        """
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = self._connection(parts.scheme, parts.netloc)
        ex = _Exchange(conn, deadline) if deadline is not None else None
        if ex is not None:
            self._watchdog.arm(ex)
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            if ex is not None and ex.expired:
                raise DeadlineExceeded(ex.seconds)
        except BaseException as exc:
            if ex is not None:
                self._watchdog.disarm(ex)
            self._discard(parts.scheme, parts.netloc)
            if ex is not None and ex.expired and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(ex.seconds) from exc
            raise
        resp._airgap_origin = (parts.scheme, parts.netloc)  # type: ignore[attr-defined]
        resp._airgap_exchange = ex  # type: ignore[attr-defined]
        return resp

    @staticmethod
    def expired(resp: http.client.HTTPResponse) -> DeadlineExceeded | None:
        """The deadline error if *resp*'s exchange ran out of time (its reads then end early)."""
        ex = getattr(resp, "_airgap_exchange", None)
        return DeadlineExceeded(ex.seconds) if ex is not None and ex.expired else None

    def _end(self, resp: http.client.HTTPResponse) -> bool:
        """Disarm the deadline; True if it had already passed."""
        ex = getattr(resp, "_airgap_exchange", None)
        if ex is None:
            return False
        self._watchdog.disarm(ex)
        return ex.expired

    def release(self, resp: http.client.HTTPResponse, *, drain_limit: int = 64 * 1024) -> None:
        """Finish with *resp*: keep the connection if the body can be drained cheaply."""
        origin = getattr(resp, "_airgap_origin", None)
        try:
            if not resp.isclosed():
                length = resp.length
                if length is not None and length <= drain_limit:
                    resp.read()  # still under the deadline: a dripped remainder cannot hold us
                else:
                    # Reading an unknown or large remainder just to reuse the socket
                    # costs more than a reconnect.
                    raise ConnectionAbortedError
            if self._end(resp):
                raise ConnectionAbortedError  # the socket was shut down under us
        except BaseException:
            self._end(resp)
            if origin:
                self._discard(*origin)
            resp.close()
            return
        if resp.will_close and origin:
            self._discard(*origin)

    def abandon(self, resp: http.client.HTTPResponse) -> None:
        """Drop *resp* and its connection (after an error while reading the body)."""
        self._end(resp)
        origin = getattr(resp, "_airgap_origin", None)
        resp.close()
        if origin:
            self._discard(*origin)

    def close(self) -> None:
        """Close every connection opened by any thread."""
        self._watchdog.stop()
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()
        self._local = threading.local()
