"""Resumable, verified blob download.  Private to :mod:`airgap.registry`.

The expected size is the cap: a body that announces or delivers more is refused
at once, never read to the end.  Every (re)request has a deadline scaled to the
bytes still missing; after a dropped connection the download resumes with
``Range`` (or starts again from zero if the registry ignores it), and the sha256
is computed over exactly the bytes written.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable
from typing import IO

from airgap._internal.http import TRANSIENT_ERRORS
from airgap._internal.text import plural
from airgap.exceptions import IntegrityError, NotFoundError
from airgap.registry._session import Session

COPY_BUF = 1 << 20

Progress = Callable[[int], None]


class _State:
    """What has been written so far."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.have = 0

    def restart(self, sink: IO[bytes], progress: Progress | None) -> None:
        sink.seek(0)
        if hasattr(sink, "truncate"):
            sink.truncate()
        if progress:
            progress(-self.have)
        self.hasher, self.have = hashlib.sha256(), 0


def _open(s: Session, url: str, scope: str, what: str, artifact: str, st: _State, limit: int,
          sink: IO[bytes], progress: Progress | None) -> http.client.HTTPResponse | None:
    """GET the rest of the blob; None if nothing is left."""
    headers = {"Range": f"bytes={st.have}-"} if st.have else {}
    resp = s.request("GET", url, scope=scope, what=what, headers=headers, nbytes=limit - st.have)
    if resp.status == 404:
        s.transport.release(resp)
        raise NotFoundError(f"{artifact}: blob not found (404)")
    if resp.status == 416 and st.have >= limit:
        s.transport.release(resp)
        return None
    if resp.status not in (200, 206):
        raise s.fail(resp, what)
    if st.have and (resp.status == 200 or not (resp.getheader("Content-Range") or "").startswith(f"bytes {st.have}-")):
        # The registry ignored or mangled the Range: start again from zero.
        if resp.status != 200:
            s.transport.abandon(resp)
            resp = s.request("GET", url, scope=scope, what=what, nbytes=limit)
            if resp.status != 200:
                raise s.fail(resp, what)
        st.restart(sink, progress)
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and st.have + int(length) > limit:
        s.transport.abandon(resp)
        raise IntegrityError(artifact, f"size mismatch (registry announces {st.have + int(length)} bytes, "
                                       f"expected {limit})")
    return resp


def _copy(s: Session, resp: http.client.HTTPResponse, view: memoryview, sink: IO[bytes], st: _State,
          limit: int, progress: Progress | None, artifact: str, what: str) -> None:
    length = resp.getheader("Content-Length")
    end = st.have + int(length) if length and length.isdigit() else None
    while True:
        n = resp.readinto(view[: min(COPY_BUF, limit - st.have + 1)])
        if not n:
            s.check_expired(resp, what)
            # http.client reports a body cut short as a plain EOF.
            if end is not None and st.have < end:
                raise http.client.IncompleteRead(b"", end - st.have)
            return
        if st.have + n > limit:
            raise IntegrityError(artifact, f"size mismatch (more than the expected {limit} bytes)")
        sink.write(view[:n])
        st.hasher.update(view[:n])
        st.have += n
        if progress:
            progress(n)


def download(s: Session, repo: str, digest: str, size: int, sink: IO[bytes], progress: Progress | None,
             artifact: str) -> None:
    """Stream blob *digest* of exactly *size* bytes into *sink*; raise unless it matches."""
    url = s.url(f"/v2/{repo}/blobs/{digest}")
    scope = f"repository:{repo}:pull"
    what = f"GET blob {artifact}"
    st = _State()
    drops = 0
    view = memoryview(bytearray(COPY_BUF))
    while True:
        resp = _open(s, url, scope, what, artifact, st, size, sink, progress)
        if resp is None:
            break
        try:
            _copy(s, resp, view, sink, st, size, progress, artifact, what)
        except TRANSIENT_ERRORS as exc:
            drops = s.after_drop(resp, exc, drops, artifact, "downloading", what)
            continue
        except BaseException:
            s.transport.abandon(resp)
            raise
        s.transport.release(resp)
        break
    if st.have != size:
        raise IntegrityError(artifact, f"size mismatch (got {plural(st.have, 'byte')}, expected {size})")
    got = "sha256:" + st.hasher.hexdigest()
    if got != digest:
        raise IntegrityError(artifact, f"sha256 mismatch (got {got})")
