"""A client for the OCI distribution API, on the standard library alone.

Pull side (``build``): every fetch is capped before it starts (a descriptor's
size, or the document cap) and has a deadline scaled to that size; manifests
and blobs are checked against their descriptor (digest computed here, never
taken from the registry's word; size; media type); blobs are streamed, hashed
while written, resumed with ``Range`` after a dropped connection.

Push side (``import``): blobs the registry already has are skipped, large blobs
go up in chunks and an interrupted upload session is resumed from where the
registry says it stands (:mod:`airgap.registry.push`); manifests are pushed
last by the caller.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin

from airgap import oci
from airgap._internal import fsutil
from airgap._internal.text import plural
from airgap.exceptions import InputError, IntegrityError, NotFoundError, RegistryError
from airgap.reference import validate_digest
from airgap.registry._download import Progress, download
from airgap.registry._session import JSON_CAP, Session
from airgap.registry.limits import Limits
from airgap.registry.push import (
    BlobUpload,
    OpenStream,
    PushResult,
    cancel_upload,
    start_upload,
)

__all__ = ["DEFAULT_ACCEPT", "DEFAULT_CHUNK_SIZE", "MANIFEST_CAP", "BlobRequest", "Manifest", "RegistryClient",
           "sha256_digest"]

DEFAULT_ACCEPT: tuple[str, ...] = oci.ALL_MANIFEST_TYPES
MANIFEST_CAP = oci.MAX_MANIFEST_BYTES
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
# A listing longer than this (tags, catalog) is refused rather than held.
MAX_LISTED = 1_000_000


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as served; ``digest`` is the sha256 computed locally."""

    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class BlobRequest:
    """One blob for :meth:`RegistryClient.fetch_blobs`."""

    digest: str
    size: int
    dest: str | os.PathLike[str]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return m.group(1)
    return None


def _media_type(data: bytes, content_type: str, accept: Sequence[str], artifact: str) -> str:
    if content_type in accept:
        return content_type
    # Some registries answer application/json; the document says what it is.
    try:
        declared = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared in accept:
        return declared
    raise RegistryError(f"{artifact}: registry answered media type {content_type[:100]!r}, not one of {', '.join(accept)}")


class RegistryClient:
    """Talks to one registry (``host[:port]``) over the OCI distribution API.

    Safe to share between threads: each thread gets its own keep-alive connection.
    """

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        credentials: tuple[str, str] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        timeout: float = 60,
        retries: int = 4,
        backoff: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        limits: Limits | None = None,
    ) -> None:
        if not registry or "/" in registry:
            raise InputError(f"{registry!r}: not a registry host[:port]")
        self.registry = registry
        self._s = Session(registry, plain_http=plain_http, ca_file=ca_file, credentials=credentials,
                          auth_file=auth_file, timeout=timeout, retries=retries, backoff=backoff,
                          limits=limits or Limits())
        self.chunk_size = chunk_size
        self.page_size = 1000

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` that requests and credentials go to."""
        return str(self._s.origin)

    def close(self) -> None:
        self._s.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names

    @staticmethod
    def _check_repo(repo: str) -> None:
        if not repo or repo.startswith("/") or ".." in repo.split("/") or any(c in repo for c in "?#@: "):
            raise InputError(f"{repo!r}: not a repository name")

    def _artifact(self, repo: str, reference: str) -> str:
        # Tags cannot contain ':', digests always do.
        return f"{self.registry}/{repo}{'@' if ':' in reference else ':'}{reference}"

    def _manifest_target(self, repo: str, reference: str) -> tuple[str, str]:
        """(artifact name for messages, URL) of a manifest by tag or validated digest."""
        self._check_repo(repo)
        artifact = self._artifact(repo, reference)
        if ":" in reference:
            validate_digest(reference, artifact)
        return artifact, self._s.url(f"/v2/{repo}/manifests/{quote(reference, safe=':')}")

    def _blob_artifact(self, repo: str, digest: str, size: int) -> str:
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        if type(size) is not int or size < 0:
            raise InputError(f"{artifact}: size {size!r} is not a non-negative integer")
        if size > oci.MAX_BLOB_BYTES:
            raise IntegrityError(artifact, f"size {size} exceeds the cap of {oci.MAX_BLOB_BYTES} bytes (1 TiB)")
        return artifact

    # -- manifests

    def get_manifest(self, repo: str, reference: str, accept: Sequence[str] = DEFAULT_ACCEPT, *,
                     size: int | None = None) -> Manifest:
        """Fetch a manifest by tag or digest, checked before it is returned.

        Capped at *size* when a descriptor gives it (and then exactly that long),
        else at the 4 MiB document cap; the digest is computed here and must match
        a digest reference and the registry's own header.
        """
        artifact, url = self._manifest_target(repo, reference)
        if size is not None and size > MANIFEST_CAP:
            raise IntegrityError(artifact, f"descriptor size {size} exceeds the manifest cap of {MANIFEST_CAP} bytes")
        cap = MANIFEST_CAP if size is None else size
        limit = f"the cap of {MANIFEST_CAP}" if size is None else f"the descriptor's {size} bytes"
        data, headers = self._s.get_document(url, scope=f"repository:{repo}:pull", artifact=artifact, noun="manifest",
                                             cap=cap, limit=limit, headers={"Accept": ", ".join(accept)})
        if size is not None and len(data) != size:
            raise IntegrityError(artifact, f"size mismatch (got {plural(len(data), 'byte')}, the descriptor says {size})")
        digest = sha256_digest(data)
        if ":" in reference and digest != reference:
            raise IntegrityError(artifact, f"sha256 mismatch (got {digest})")
        header_digest = headers.get("Docker-Content-Digest")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise IntegrityError(artifact, f"registry says Docker-Content-Digest {header_digest[:80]}, content is {digest}")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        return Manifest(data=data, media_type=_media_type(data, content_type, accept, artifact), digest=digest)

    def manifest_exists(self, repo: str, reference: str) -> bool:
        """True if the registry has a manifest under *reference* (tag or digest)."""
        artifact, url = self._manifest_target(repo, reference)
        return self._s.exists(url, f"repository:{repo}:pull", f"HEAD manifest {artifact}",
                              {"Accept": ", ".join(DEFAULT_ACCEPT)})

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Push a manifest under a tag or its digest; return its sha256 digest."""
        artifact, url = self._manifest_target(repo, reference)
        digest = sha256_digest(data)
        if ":" in reference and reference != digest:
            raise IntegrityError(artifact, f"sha256 mismatch (content is {digest})")
        if len(data) > MANIFEST_CAP:
            raise InputError(f"{artifact}: manifest of {len(data)} bytes exceeds the cap of {MANIFEST_CAP}")
        resp = self._s.request("PUT", url, scope=f"repository:{repo}:pull,push", what=f"PUT manifest {artifact}",
                               headers={"Content-Type": media_type, "Content-Length": str(len(data))}, body=data,
                               nbytes=len(data))
        try:
            if resp.status not in (200, 201):
                raise self._s.fail(resp, f"PUT manifest {artifact}")
            answered = resp.getheader("Docker-Content-Digest")
        finally:
            self._s.transport.release(resp)
        if answered and answered != digest:
            raise IntegrityError(artifact, f"registry stored the manifest as {answered}, content is {digest}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        if ":" not in digest:
            raise InputError(f"{self.registry}/{repo}@{digest}: deletes take a digest")
        artifact, url = self._manifest_target(repo, digest)
        resp = self._s.request("DELETE", url, scope=f"repository:{repo}:delete", what=f"DELETE manifest {artifact}")
        try:
            if resp.status not in (200, 202):
                raise self._s.fail(resp, f"DELETE manifest {artifact}")
        finally:
            self._s.transport.release(resp)

    # -- listings

    def _paginate(self, path: str, key: str, scope: str, what: str) -> list[str]:
        out: list[str] = []
        url: str | None = self._s.url(path)
        seen: set[str] = set()
        while url:
            if url in seen or len(out) > MAX_LISTED:
                raise RegistryError(f"{what}: pagination loops or lists more than {MAX_LISTED} entries")
            seen.add(url)
            resp = self._s.request("GET", url, scope=scope, what=what, nbytes=JSON_CAP)
            try:
                if resp.status == 404:
                    raise NotFoundError(f"{what}: not found (404)")
                if resp.status != 200:
                    raise self._s.fail(resp, what)
                doc = self._s.read_json(resp, what)
                link = resp.getheader("Link")
            finally:
                self._s.transport.release(resp)
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is not None and not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
                raise RegistryError(f"{what}: {key!r} is not a list of strings")
            out.extend(items or [])
            nxt = _next_link(link)
            url = urljoin(url, nxt) if nxt else None
        return out

    def list_tags(self, repo: str) -> list[str]:
        """All tags of *repo*, following pagination."""
        self._check_repo(repo)
        return self._paginate(f"/v2/{repo}/tags/list?n={self.page_size}", "tags", f"repository:{repo}:pull",
                              f"GET tags of {self.registry}/{repo}")

    def catalog(self) -> list[str]:
        """All repositories of the registry, following pagination."""
        return self._paginate(f"/v2/_catalog?n={self.page_size}", "repositories", "registry:catalog:*",
                              f"GET catalog of {self.registry}")

    # -- blobs: pull

    def blob_exists(self, repo: str, digest: str) -> bool:
        """True if *repo* has the blob (HEAD, following redirects)."""
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        return self._s.exists(self._s.url(f"/v2/{repo}/blobs/{digest}"), f"repository:{repo}:pull", f"HEAD blob {artifact}")

    def fetch_blob(self, repo: str, digest: str, size: int, dest_path: str | os.PathLike[str],
                   progress: Progress | None = None) -> Path:
        """Download a blob to *dest_path*, verified; resume with Range after a drop.

        Written to a temporary file next to *dest_path* and moved into place only
        after size and sha256 match; on mismatch the temporary file is removed and
        IntegrityError raised.  ``progress(n)`` gets byte counts as they arrive (a
        negative count when a restart discards what was already counted).
        """
        artifact = self._blob_artifact(repo, digest, size)
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fsutil.atomic_writer(dest, 0o600) as f:
            download(self._s, repo, digest, size, f, progress, artifact)
        return dest

    def fetch_blob_into(self, repo: str, digest: str, size: int, sink, progress: Progress | None = None) -> None:
        """Stream a blob into *sink* (``write``; ``seek(0)`` for a restart), verified.

        For writers that place the blob themselves (a region of a bundle file).
        Size and sha256 are checked after the last byte: on IntegrityError the
        sink holds unverified bytes and the caller must discard them.
        ``progress`` is called here, so a sink must not count the bytes again.
        """
        download(self._s, repo, digest, size, sink, progress, self._blob_artifact(repo, digest, size))

    def read_blob(self, repo: str, digest: str, size: int, *, cap: int = MANIFEST_CAP) -> bytes:
        """A small blob (an image config) in memory, refused unread if *size* is over *cap*."""
        artifact = self._blob_artifact(repo, digest, size)
        if size > cap:
            raise IntegrityError(artifact, f"size {size} exceeds the cap of {cap} bytes for a document held in memory")
        sink = io.BytesIO()
        download(self._s, repo, digest, size, sink, None, artifact)
        return sink.getvalue()

    def fetch_blobs(self, repo: str, items: Iterable[BlobRequest | tuple[str, int, str | os.PathLike[str]]],
                    workers: int = 4, progress: Progress | None = None) -> list[Path]:
        """:meth:`fetch_blob` for several (digest, size, dest) in parallel.

        The first failure cancels what has not started and is raised; *progress*
        is called from worker threads (tqdm's ``update`` is safe for that).
        """
        reqs = [i if isinstance(i, BlobRequest) else BlobRequest(*i) for i in items]
        if not reqs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(reqs))), thread_name_prefix="airgap-fetch") as pool:
            futures = [pool.submit(self.fetch_blob, repo, r.digest, r.size, r.dest, progress) for r in reqs]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            for fut in futures:
                if fut.done() and not fut.cancelled() and fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            return [fut.result() for fut in futures]

    # -- blobs: push

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if mounted, False if the registry declined."""
        self._check_repo(repo)
        self._check_repo(from_repo)
        location = start_upload(self._s, repo, digest, from_repo)
        if location is None:
            return True
        cancel_upload(self._s, location, repo)
        return False

    def push_blob(self, repo: str, digest: str, size: int, open_stream: OpenStream, *, mount_from: str | None = None,
                  state_path: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> PushResult:
        """Upload a blob unless *repo* already has it; return what happened.

        ``open_stream(offset)`` returns a binary file positioned at *offset* (the
        blob may sit inside a tar); it is closed after use.  See
        :class:`~airgap.registry.push.BlobUpload` for chunks, resuming and
        *state_path*; *mount_from* tries a cross-repository mount first.
        """
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        if size < 0:
            raise InputError(f"{artifact}: negative size {size}")
        if mount_from:
            self._check_repo(mount_from)
        upload = BlobUpload(self._s, repo, digest, size, open_stream, chunk_size=self.chunk_size,
                            mount_from=mount_from, state_path=state_path, progress=progress)
        if self.blob_exists(repo, digest):
            upload.forget_state()
            return "exists"
        return upload.run()
