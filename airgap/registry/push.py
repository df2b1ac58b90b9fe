"""Pushing one blob: skip what the registry has, mount, upload monolithic or in
chunks, and resume an interrupted upload session.

Blobs up to the client's ``chunk_size`` go up in one PUT, larger ones in PATCH
chunks.  After a dropped connection the session is asked for its ``Range`` and
continued; with a session file the upload URL is also kept on disk (written
atomically and fsynced) so a later run, after a crash, resumes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from airgap._internal.fsutil import atomic_write
from airgap._internal.http import TRANSIENT_ERRORS
from airgap._internal.text import plural
from airgap.exceptions import IntegrityError, RegistryError
from airgap.registry._failures import RETRY_STATUSES, Retryable
from airgap.registry._session import Session

__all__ = ["BlobUpload", "OpenStream", "PushResult"]

OpenStream = Callable[[int], IO[bytes]]
PushResult = Literal["exists", "mounted", "uploaded"]
Progress = Callable[[int], None]


def add_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _ShortStream(Exception):
    pass


class _Limited:
    """At most *n* bytes of *stream*, hashed as they are read (a request body)."""

    def __init__(self, stream: IO[bytes], n: int, hasher, progress: Progress | None) -> None:
        self._stream, self._left, self._hasher, self._progress = stream, n, hasher, progress
        self.short = False

    def read(self, amt: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if amt is None or amt < 0 else min(amt, self._left)
        data = self._stream.read(want)
        if not data:
            # http.client would otherwise send a body shorter than Content-Length and hang.
            self.short = True
            raise _ShortStream
        self._left -= len(data)
        if self._hasher is not None:
            self._hasher.update(data)
        if self._progress:
            self._progress(len(data))
        return data


# --- upload sessions -------------------------------------------------------------


def start_upload(s: Session, repo: str, digest: str, mount_from: str | None = None) -> str | None:
    """POST a new upload session; its URL, or None if the blob was mounted instead."""
    artifact = f"{s.registry}/{repo}@{digest}"
    url = s.url(f"/v2/{repo}/blobs/uploads/")
    scope = f"repository:{repo}:pull,push"
    if mount_from:
        url = add_query(url, mount=digest, **{"from": mount_from})
        scope += f" repository:{mount_from}:pull"
    resp = s.request("POST", url, scope=scope, what=f"start upload of {artifact}",
                     headers={"Content-Length": "0"}, body=b"")
    try:
        if resp.status == 201 and mount_from:
            return None
        if resp.status != 202:
            raise s.fail(resp, f"start upload of {artifact}")
        location = resp.getheader("Location")
    finally:
        s.transport.release(resp)
    if not location:
        raise RegistryError(f"{artifact}: upload session started without a Location")
    return urljoin(url, location)


def upload_status(s: Session, location: str, repo: str) -> tuple[str, int] | None:
    """(location, offset) of a live upload session, or None if it is gone."""
    try:
        resp = s.request("GET", location, scope=f"repository:{repo}:pull,push", what="upload status")
    except RegistryError:
        return None
    try:
        if resp.status != 204:
            return None
        rng = resp.getheader("Range") or "0-0"
        new_location = urljoin(location, resp.getheader("Location") or location)
    finally:
        s.transport.release(resp)
    m = re.fullmatch(r"(?:bytes=)?0-(\d+)", rng.strip())
    if not m:
        return None
    end = int(m.group(1))
    # Distribution answers "0-0" for an empty session as well as for one
    # byte; chunks are never one byte long, so "0-0" means nothing stored.
    return new_location, (end + 1 if end > 0 else 0)


def cancel_upload(s: Session, location: str, repo: str) -> None:
    try:
        resp = s.request("DELETE", location, scope=f"repository:{repo}:pull,push", what="cancel upload")
        s.transport.release(resp)
    except RegistryError:
        pass


# --- one blob ----------------------------------------------------------------------


class BlobUpload:
    """One blob going up into *repo*: :meth:`run` returns what happened."""

    def __init__(self, s: Session, repo: str, digest: str, size: int, open_stream: OpenStream, *,
                 chunk_size: int, mount_from: str | None = None, state_path: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None) -> None:
        self.s, self.repo, self.digest, self.size = s, repo, digest, size
        self.open_stream, self.chunk_size, self.mount_from = open_stream, chunk_size, mount_from
        self.state = Path(state_path) if state_path is not None else None
        self.progress = progress
        self.artifact = f"{s.registry}/{repo}@{digest}"
        self.scope = f"repository:{repo}:pull,push"

    def run(self) -> PushResult:
        location, offset = self._resume()
        if location is None and self.mount_from:
            location = start_upload(self.s, self.repo, self.digest, self.mount_from)
            if location is None:
                self.forget_state()
                return "mounted"
        if location is None:
            location = start_upload(self.s, self.repo, self.digest)
        assert location is not None
        result = self._send_all(location, offset)
        self.forget_state()
        return result

    def _resume(self) -> tuple[str | None, int]:
        """The session of an earlier, interrupted run, if the registry still has it."""
        saved = self._load_state() if self.state is not None else None
        status = upload_status(self.s, saved, self.repo) if saved else None
        return status if status else (None, 0)

    def _send_all(self, location: str, offset: int) -> PushResult:
        # The local hash is only meaningful for bytes streamed in order from 0;
        # snapshots at chunk boundaries let it survive a resume at such a boundary.
        hasher = hashlib.sha256() if offset == 0 else None
        snapshots = {0: hashlib.sha256()} if offset == 0 else {}
        monolithic = offset == 0 and self.size <= self.chunk_size
        failures = 0
        while True:
            try:
                if monolithic:
                    return self._put(location, 0, self.size, hasher)
                while offset < self.size:
                    n = min(self.chunk_size, self.size - offset)
                    location = self._patch(location, offset, n, hasher)
                    offset += n
                    if hasher is not None:
                        snapshots = {offset: hasher.copy()}
                    self._save_state(location)
                return self._put(location, offset, 0, hasher)
            except _ShortStream:
                cancel_upload(self.s, location, self.repo)
                self.forget_state()
                raise IntegrityError(self.artifact, f"source stream ended before the expected {plural(self.size, 'byte')}") from None
            except Retryable as exc:
                failures += 1
                if failures > self.s.retries:
                    raise RegistryError(f"{self.artifact}: upload failed {failures} times ({exc.args[0]})") from None
                self.s.sleep(failures - 1)
                status = upload_status(self.s, location, self.repo)
                if status is None or monolithic:
                    if status is not None:
                        cancel_upload(self.s, status[0], self.repo)
                    location, offset = start_upload(self.s, self.repo, self.digest), 0  # type: ignore[assignment]
                    hasher, snapshots = hashlib.sha256(), {0: hashlib.sha256()}
                else:
                    location, offset = status
                    snap = snapshots.get(offset)
                    hasher = snap.copy() if snap is not None else None

    def _body_request(self, method: str, url: str, offset: int, n: int, hasher, what: str,
                      headers: dict[str, str], nbytes: int):
        """Send *n* bytes from *offset* (none for n == 0); map drops to Retryable."""
        stream = self.open_stream(offset) if n else None
        body: object = _Limited(stream, n, hasher, self.progress) if stream is not None else b""
        try:
            return self.s.send(method, url, scope=self.scope, what=what, body=body,  # type: ignore[arg-type]
                               headers=headers, nbytes=nbytes)
        except RegistryError:
            raise
        except TRANSIENT_ERRORS as exc:
            if isinstance(body, _Limited) and body.short:
                raise _ShortStream from None
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if stream is not None:
                stream.close()

    def _patch(self, location: str, offset: int, n: int, hasher) -> str:
        rng = f"{offset}-{offset + n - 1}"
        resp = self._body_request("PATCH", location, offset, n, hasher, f"PATCH {self.artifact} bytes {rng}",
                                  {"Content-Type": "application/octet-stream", "Content-Length": str(n),
                                   "Content-Range": rng}, n)
        try:
            if resp.status in RETRY_STATUSES:
                raise Retryable(f"{resp.status} {resp.reason}")
            if resp.status != 202:
                raise self.s.fail(resp, f"PATCH {self.artifact}")
            new_location = resp.getheader("Location")
        finally:
            self.s.transport.release(resp)
        return urljoin(location, new_location) if new_location else location

    def _put(self, location: str, offset: int, n: int, hasher) -> PushResult:
        url = add_query(location, digest=self.digest)
        if n == 0 and hasher is not None and "sha256:" + hasher.hexdigest() != self.digest:
            cancel_upload(self.s, url, self.repo)
            raise IntegrityError(self.artifact, f"sha256 mismatch (source stream is sha256:{hasher.hexdigest()})")
        headers = {"Content-Length": str(n)}
        if n:
            headers["Content-Type"] = "application/octet-stream"
        # The registry may hash the whole blob before it answers the final PUT.
        resp = self._body_request("PUT", url, offset, n, hasher, f"PUT blob {self.artifact}", headers, self.size)
        try:
            if resp.status in RETRY_STATUSES:
                raise Retryable(f"{resp.status} {resp.reason}")
            if resp.status == 400:
                err = self.s.fail(resp, f"PUT blob {self.artifact}")
                if "DIGEST_INVALID" in str(err) or "SIZE_INVALID" in str(err):
                    got = f"got sha256:{hasher.hexdigest()}" if hasher is not None else "registry answered DIGEST_INVALID"
                    raise IntegrityError(self.artifact, f"sha256 mismatch ({got})")
                raise err
            if resp.status != 201:
                raise self.s.fail(resp, f"PUT blob {self.artifact}")
            answered = resp.getheader("Docker-Content-Digest")
        finally:
            self.s.transport.release(resp)
        if answered and answered != self.digest:
            raise IntegrityError(self.artifact, f"registry stored the blob as {answered}")
        return "uploaded"

    # -- the session file

    def _load_state(self) -> str | None:
        assert self.state is not None
        try:
            doc = json.loads(self.state.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("digest") == self.digest and doc.get("repo") == self.repo:
            loc = doc.get("location")
            return loc if isinstance(loc, str) else None
        return None

    def _save_state(self, location: str) -> None:
        if self.state is not None:
            data = json.dumps({"digest": self.digest, "repo": self.repo, "location": location}).encode()
            atomic_write(self.state, data, 0o600, root=self.state.parent)  # under --state: never through a link

    def forget_state(self) -> None:
        if self.state is not None:
            self.state.unlink(missing_ok=True)
