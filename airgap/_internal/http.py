"""A small HTTP/1.1 transport on http.client: one keep-alive connection per
thread and per origin.

http.client connections are not thread-safe, and a fresh TLS handshake per
blob would dominate the time of a bundle with thousands of small layers, so
every thread keeps its own connection to every origin it talks to (the
registry, and whatever storage host a blob redirect points at).
"""

from __future__ import annotations

import http.client
import ssl
import threading
from typing import IO, Mapping
from urllib.parse import urlsplit

# Large socket writes matter for multi-GiB uploads: http.client's default of 8 KiB
# turns every GiB into 131072 send() calls.
_BLOCKSIZE = 1 << 20

Body = bytes | IO[bytes] | None

# Errors after which the connection is unusable and the request may be retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class Transport:
    """Sends requests to absolute URLs, reusing one connection per (thread, origin)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, timeout: float = 60) -> None:
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

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
                conn = http.client.HTTPSConnection(
                    netloc, timeout=self._timeout, context=self._ssl_context, blocksize=_BLOCKSIZE
                )
            elif scheme == "http":
                conn = http.client.HTTPConnection(netloc, timeout=self._timeout, blocksize=_BLOCKSIZE)
            else:
                raise ValueError(f"unsupported URL scheme {scheme!r}")
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
        self, method: str, url: str, headers: Mapping[str, str] | None = None, body: Body = None
    ) -> http.client.HTTPResponse:
        """Send one request; the caller must :meth:`release` the response.

        On any transport error the connection is dropped, so the next request
        starts on a fresh one.
        """
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
        except BaseException:
            self._discard(parts.scheme, parts.netloc)
            raise
        resp._airgap_origin = (parts.scheme, parts.netloc)  # type: ignore[attr-defined]
        return resp

    def release(self, resp: http.client.HTTPResponse, *, drain_limit: int = 64 * 1024) -> None:
        """Finish with *resp*: keep the connection if the body can be drained cheaply."""
        origin = getattr(resp, "_airgap_origin", None)
        try:
            if not resp.isclosed():
                length = resp.length
                if length is not None and length <= drain_limit:
                    resp.read()
                else:
                    # Reading an unknown or large remainder just to reuse the socket
                    # costs more than a reconnect.
                    raise ConnectionAbortedError
        except BaseException:
            if origin:
                self._discard(*origin)
            resp.close()
            return
        if resp.will_close and origin:
            self._discard(*origin)

    def abandon(self, resp: http.client.HTTPResponse) -> None:
        """Drop *resp* and its connection (after an error while reading the body)."""
        origin = getattr(resp, "_airgap_origin", None)
        resp.close()
        if origin:
            self._discard(*origin)

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()
        self._local = threading.local()
