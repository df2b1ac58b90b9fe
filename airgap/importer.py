"""Importing a verified bundle on the isolated side.

Order, so that a crash at any instant leaves nothing that looks complete:

1. verify (the same code as ``airgap verify``);
2. every blob, skipping those the registry has (HEAD), large ones in resumable
   chunks, each re-hashed as it streams out of the bundle;
3. child manifests, then image manifests, by digest;
4. tags, last: no tag can point at an image whose blobs are not all there;
5. files into a fresh quarantine directory, hashed while written, renamed to a
   version directory and switched in with one ``rename`` of the ``current`` link;
6. rollback state, trusted policy, ``imported.json`` and the audit entry,
   each written atomically, only after everything above succeeded.

A rerun after ``kill -9`` converges: blobs present are skipped, manifests and
tags are idempotent PUTs, stale quarantine directories are removed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from airgap import oci
from airgap._internal.fsutil import atomic_write
from airgap._internal.jsonutil import pretty_bytes
from airgap._internal.progress import ByteProgress
from airgap._internal.text import plural
from airgap.bundle import Bundle, stream
from airgap.exceptions import (
    AirgapError,
    BaseMissingError,
    IntegrityError,
    OperationError,
)
from airgap.manifest import BundleManifest, ImageRecord

QUARANTINE_PREFIX = ".incoming-"
PUSH_WORKERS = 4


class RegionReader(io.RawIOBase):
    """A read-only file object over one member's bytes inside the bundle."""

    def __init__(self, source, offset: int, size: int, start: int = 0):
        self.source, self.base, self.size, self.pos = source, offset, size, start

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.source.pread(self.base + self.pos, n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.size + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos


@dataclass
class ImportResult:
    name: str
    version: str
    manifest_digest: str
    registry: str
    uploaded_blobs: int = 0
    skipped_blobs: int = 0
    uploaded_bytes: int = 0
    manifests: int = 0
    manifests_new: int = 0
    tags: int = 0
    files: int = 0
    files_dir: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    verify_report: Any = None

    @property
    def status(self) -> str:
        return "imported" if self.uploaded_blobs or self.manifests_new else "already-present"

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": "accepted",
            "status": self.status,
            "name": self.name,
            "version": self.version,
            "manifest_digest": self.manifest_digest,
            "registry": self.registry,
            "uploaded_blobs": self.uploaded_blobs,
            "skipped_blobs": self.skipped_blobs,
            "uploaded_bytes": self.uploaded_bytes,
            "manifests": self.manifests,
            "manifests_new": self.manifests_new,
            "tags": self.tags,
            "files": self.files,
            "files_dir": self.files_dir,
            "images": self.images,
        }


def internal_repository(record: ImageRecord) -> str:
    if record.registry == "oci-layout":
        return f"local/{record.repository}"
    from airgap.reference import Reference
    from airgap.reference import internal_repository as _internal

    return _internal(Reference(record.registry, record.repository, record.tag, None))


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One import at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperationError(f"{state_dir}: another airgap import holds the lock") from None
        yield
    finally:
        os.close(fd)



def _image_documents(bundle: Bundle, manifest: BundleManifest, record: ImageRecord):
    """(top document bytes, [(child descriptor, child bytes)], [blob descriptors])."""

    def read(digest: str) -> bytes:
        member = bundle.member(oci.blob_path(digest))
        data = bundle.read(member, oci.MAX_MANIFEST_BYTES)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(oci.blob_path(digest), "changed since verification")
        return data

    top = read(record.digest)
    doc = oci.parse_document(top, f"image {record.ref}", record.media_type)
    children: list[tuple[oci.Descriptor, bytes]] = []
    blobs: list[oci.Descriptor] = []
    if isinstance(doc, oci.ImageIndex):
        for d in doc.manifests:
            data = read(d.digest)
            cdoc = oci.parse_document(data, f"image {record.ref}@{d.digest}", d.media_type)
            children.append((d, data))
            blobs.extend(cdoc.blobs())
    else:
        blobs.extend(doc.blobs())
    return top, children, blobs


def import_bundle(
    path: str | os.PathLike,
    *,
    trust_path: str | os.PathLike,
    registry: str,
    state_dir: str | os.PathLike,
    files_dir: str | os.PathLike | None = None,
    client=None,
    plain_http: bool = False,
    ca_file: str | None = None,
    credentials: tuple[str, str] | None = None,
    now: datetime | None = None,
    override=None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    from airgap import verify as verifymod

    now = now or datetime.now(timezone.utc)
    state_dir = Path(state_dir)
    if client is None:
        from airgap.registry import RegistryClient

        client = RegistryClient(registry, plain_http=plain_http, ca_file=ca_file, credentials=credentials)
    with state_lock(state_dir):
        report = verifymod.verify(path, trust_path=trust_path, state_dir=state_dir, now=now, override=override,
                                  progress=progress, hash_content=False)
        manifest = report.manifest
        assert manifest is not None
        result = ImportResult(manifest.name, manifest.version, manifest.digest, registry, verify_report=report)
        with Bundle.open(path) as bundle:
            if bundle.manifest_bytes != manifest.to_bytes():
                raise IntegrityError("manifest.json", "changed since verification")
            plans = []
            for record in manifest.images:
                repo = internal_repository(record)
                top, children, blobs = _image_documents(bundle, manifest, record)
                plans.append((record, repo, top, children, blobs))
            reason = _nothing_to_read(client, state_dir, manifest, registry, plans, files_dir)
            if reason:
                report.set("content", "skipped", reason)
                report.accepted = True
            else:
                verifymod.check_content(path, report, progress=progress)
            mounts = _check_base(client, manifest, plans)
            _push_blobs(client, bundle, manifest, plans, result, progress, log, mounts, state_dir)
            _push_manifests(client, plans, result, registry)
            if files_dir is not None:
                result.files_dir = str(_unpack_files(bundle, manifest, Path(files_dir), log))
                result.files = sum(1 for m in manifest.members if m.path.startswith("files/"))
        # Only now, after everything succeeded, is the import recorded.
        verifymod.rollback_record(report, state_dir)
        record_dir = state_dir / "bundles" / manifest.name
        record_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(record_dir / "manifest.json", manifest.to_bytes())
        atomic_write(record_dir / "imported.json", pretty_bytes({
            "name": manifest.name,
            "version": manifest.version,
            "manifest_digest": manifest.digest,
            "registry": registry,
            "imported_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "images": result.images,
            "files_dir": result.files_dir,
        }))
    return result


def _nothing_to_read(client, state_dir: Path, manifest: BundleManifest, registry: str, plans, files_dir) -> str | None:
    """Why a re-import needs no byte of the bundle's content, or None.

    Only when this exact manifest was already imported into this registry, the
    registry serves every blob and manifest by digest (content-addressed: a
    digest that is served is content that was verified when it was pushed), and
    the files are already unpacked from it.  Then nothing leaves the bundle, so
    there is nothing to hash; the signatures, policy, rollback state, member
    list and image documents have still been checked.
    """
    imported = state_dir / "bundles" / manifest.name / "imported.json"
    try:
        from airgap._internal.jsonutil import loads_strict

        doc = loads_strict(imported.read_bytes(), str(imported))
    except (OSError, AirgapError):
        return None
    if not isinstance(doc, dict) or doc.get("manifest_digest") != manifest.digest or doc.get("registry") != registry:
        return None
    if files_dir is not None:
        version_name = f"{manifest.name}-{manifest.version}-{manifest.digest.split(':')[1][:12]}"
        if not (Path(files_dir) / "versions" / version_name).is_dir():
            return None
    for record, repo, _top, children, blobs in plans:
        if not client.manifest_exists(repo, record.digest):
            return None
        for d, _data in children:
            if not client.manifest_exists(repo, d.digest):
                return None
        for d in blobs:
            if not client.blob_exists(repo, d.digest):
                return None
    return (f"already imported into {registry}: the registry serves every blob and manifest by digest "
            "and the files are unpacked; no content byte is read from this copy")


def _check_base(client, manifest: BundleManifest, plans) -> dict[tuple[str, str], str]:
    """A differential bundle's left-out blobs must already be in the registry.

    The base is a registry-wide inventory (or an earlier bundle), so a left-out
    blob may sit in another repository than the one that now needs it: a new
    image built on a base layer the isolated side already holds.  Such blobs are
    found here (read-only HEADs, first in this bundle's repositories, then in
    the catalog) and returned as ``{(repo, digest): source repo}`` for
    :func:`_push_blobs` to mount.  Nothing is written before every left-out blob
    has been found, so a refused bundle leaves the registry untouched.
    """
    external = dict(manifest.external_blobs)
    mounts: dict[tuple[str, str], str] = {}
    if not external:
        return mounts
    plan_repos = list(dict.fromkeys(repo for _r, repo, *_ in plans))
    catalog: list[str] | None = None
    found_in: dict[str, str] = {}

    def locate(digest: str, repo: str) -> str | None:
        nonlocal catalog
        if digest in found_in:
            return found_in[digest]
        for other in plan_repos:
            if other != repo and client.blob_exists(other, digest):
                found_in[digest] = other
                return other
        if catalog is None:
            try:
                catalog = list(client.catalog())
            except AirgapError:
                catalog = []  # no catalog access: only this bundle's repositories can be searched
        for other in catalog:
            if other != repo and other not in plan_repos and client.blob_exists(other, digest):
                found_in[digest] = other
                return other
        return None

    for record, repo, _top, _children, blobs in plans:
        for d in blobs:
            if d.digest not in external or (repo, d.digest) in mounts or client.blob_exists(repo, d.digest):
                continue
            source = locate(d.digest, repo)
            if source is None:
                base = manifest.base.description if manifest.base else "its base"
                raise BaseMissingError(
                    f"image {record.ref}",
                    f"blob {d.digest} is left out of this differential bundle (built against {base}) "
                    f"and is not in {client.registry}/{repo}; import the base bundle first",
                )
            mounts[(repo, d.digest)] = source
    return mounts


def _push_blobs(client, bundle: Bundle, manifest: BundleManifest, plans, result: ImportResult, progress: bool, log,
                mounts: dict[tuple[str, str], str] | None = None, state_dir: Path | None = None) -> None:
    external = dict(manifest.external_blobs)
    mounts = mounts or {}
    todo: list[tuple[str, oci.Descriptor]] = []
    seen: set[tuple[str, str]] = set()
    for _record, repo, _top, _children, blobs in plans:
        for d in blobs:
            if (repo, d.digest) in seen:
                continue
            seen.add((repo, d.digest))
            if d.digest in external:
                source = mounts.get((repo, d.digest))
                if source is not None and not client.mount_blob(repo, d.digest, source):
                    raise BaseMissingError(
                        f"{client.registry}/{repo}@{d.digest}",
                        f"left out of this differential bundle; it is in {client.registry}/{source} "
                        "but the registry refused to mount it into this repository",
                    )
                result.skipped_blobs += 1
                continue
            todo.append((repo, d))
    total = sum(d.size for _, d in todo)
    # Large blobs go up in chunks; their upload sessions are kept in STATE/uploads/
    # so a rerun after kill -9 resumes them instead of starting again at byte 0.
    # This is bookkeeping for the registry's sessions, not an import record.
    uploads_dir: Path | None = None
    chunk = getattr(client, "chunk_size", None)
    if state_dir is not None and chunk and any(d.size > chunk for _, d in todo):
        uploads_dir = Path(state_dir) / "uploads"
        uploads_dir.mkdir(parents=True, exist_ok=True)
    # One task per distinct blob, largest first: uploaded once into the first
    # repository that needs it, mounted into the others.  Several blobs go up at
    # once, like skopeo's copies do.
    by_digest: dict[str, tuple[oci.Descriptor, list[str]]] = {}
    for repo, d in todo:
        by_digest.setdefault(d.digest, (d, []))[1].append(repo)
    lock = threading.Lock()

    def count(field_: str, n: int = 1) -> None:
        with lock:
            setattr(result, field_, getattr(result, field_) + n)

    with ByteProgress(total=total, desc="pushing", enabled=progress) as bar:

        def push_one(item: tuple[oci.Descriptor, list[str]]) -> None:
            d, repos = item
            member = bundle.member(oci.blob_path(d.digest))

            def opener(offset: int, m=member):
                return io.BufferedReader(RegionReader(bundle.source, m.data_offset, m.size, offset), buffer_size=1 << 20)

            home: str | None = None
            for repo in repos:
                if client.blob_exists(repo, d.digest):
                    count("skipped_blobs")
                    bar.update(d.size)
                    home = home or repo
                    continue
                if home is not None and client.mount_blob(repo, d.digest, home):
                    count("skipped_blobs")
                    bar.update(d.size)
                    continue
                if log:
                    log(f"pushing {d.digest} ({plural(d.size, 'byte')}) to {repo}")
                client.push_blob(repo, d.digest, d.size, opener, progress=bar.update,
                                 state_path=_upload_state_path(uploads_dir, repo, d) if uploads_dir else None)
                home = home or repo
                count("uploaded_blobs")
                count("uploaded_bytes", d.size)

        items = sorted(by_digest.values(), key=lambda item: -item[0].size)
        with ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="airgap-push") as pool:
            futures = [pool.submit(push_one, item) for item in items]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()
    if uploads_dir is not None:
        try:
            uploads_dir.rmdir()  # empty once every session has completed
        except OSError:
            pass


def _upload_state_path(uploads_dir: Path, repo: str, d: oci.Descriptor) -> Path:
    repo_id = hashlib.sha256(repo.encode()).hexdigest()[:16]
    return uploads_dir / f"{d.digest.split(':', 1)[1]}-{repo_id}.json"


def _push_manifests(client, plans, result: ImportResult, registry: str) -> None:
    # Children and untagged images first; tags strictly last.
    for record, repo, top, children, _blobs in plans:
        for d, data in children:
            if not client.manifest_exists(repo, d.digest):
                result.manifests_new += 1
            client.put_manifest(repo, d.digest, data, d.media_type)
            result.manifests += 1
        if not client.manifest_exists(repo, record.digest):
            result.manifests_new += 1
        client.put_manifest(repo, record.digest, top, record.media_type)
        result.manifests += 1
    for record, repo, top, _children, _blobs in plans:
        if record.tag:
            client.put_manifest(repo, record.tag, top, record.media_type)
            result.tags += 1
        internal = f"{registry}/{repo}"
        result.images.append({
            "ref": record.ref,
            "internal_ref": f"{internal}@{record.digest}",
            "internal_name": internal,
            "tag": record.tag,
            "digest": record.digest,
            "platforms": list(record.platforms),
        })


def _unpack_files(bundle: Bundle, manifest: BundleManifest, files_dir: Path, log) -> Path:
    """Unpack ``files/`` into a new version directory and switch ``current`` to it."""
    files = [m for m in bundle.content_members if m.name.startswith("files/")]
    files_dir.mkdir(parents=True, exist_ok=True)
    for stale in files_dir.glob(QUARANTINE_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    version_name = f"{manifest.name}-{manifest.version}-{manifest.digest.split(':')[1][:12]}"
    final = files_dir / "versions" / version_name
    if not final.is_dir():
        quarantine = files_dir / f"{QUARANTINE_PREFIX}{version_name}-{os.getpid()}"
        quarantine.mkdir()
        try:
            for m in files:
                record = manifest.member(m.name)
                rel = m.name[len("files/"):]
                dest = quarantine / rel
                # Every parent is created here, inside the fresh quarantine
                # directory, so no component can be a pre-existing symlink.
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as f:
                    for chunk in stream(bundle.source, m.data_offset, m.size, artifact=m.name):
                        h.update(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if h.hexdigest() != record.sha256:
                    raise IntegrityError(m.name, "changed since verification")
                os.chmod(dest, record.mode)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(quarantine, final)
        except OSError as exc:
            shutil.rmtree(quarantine, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                raise OperationError(f"{files_dir}: no space left on device while unpacking files; nothing was switched") from None
            raise OperationError(f"{files_dir}: cannot unpack files: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(quarantine, ignore_errors=True)
            raise
    current = files_dir / "current"
    tmp_link = files_dir / f".current-{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(os.path.join("versions", version_name), tmp_link)
    os.replace(tmp_link, current)
    dfd = os.open(files_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if log:
        log(f"files: {len(files)} unpacked to {final}, {current} switched")
    return current


def format_result(r: ImportResult) -> str:
    lines = [f"IMPORTED: {r.name} {r.version} (manifest {r.manifest_digest}) into {r.registry}"]
    lines.append(f"  blobs: {r.uploaded_blobs} uploaded ({plural(r.uploaded_bytes, 'byte')}), {r.skipped_blobs} already present")
    lines.append(f"  manifests: {r.manifests} ({r.manifests_new} new), tags: {r.tags}")
    for img in r.images:
        lines.append(f"  {img['ref']} -> {img['internal_ref']}")
    if r.files_dir:
        lines.append(f"  files: {r.files_dir}")
    return "\n".join(lines)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
