"""Importing a verified bundle on the isolated side.

Order, so that a crash at any instant leaves nothing that looks complete:

1. verify (the same code as ``airgap verify``), which opens the bundle once and
   returns the :class:`~airgap.verified.VerifiedBundle` everything below reads;
2. the target directories are checked (no symbolic link anywhere under
   ``--state`` or ``--files-dir``, ``current`` is airgap's link) before anything
   is pushed;
3. every blob, skipping those the registry has (HEAD), large ones in resumable
   chunks, read from the verified descriptor under the digest verify checked
   (the client hashes what it sends, the registry refuses other bytes);
4. child manifests, then image manifests, by digest: the bytes verify hashed;
5. tags, last: no tag can point at an image whose blobs are not all there;
6. files into a fresh quarantine directory, each hashed as it is written,
   renamed to a version directory, a completion marker written last, and
   switched in with one ``rename`` of the ``current`` link;
7. only after everything above succeeded, the record (:func:`airgap.anchored.commit`):
   the audit entries first (overrides, a first use of the policy, the import),
   then the trusted policy, ``manifest.json``, ``imported.json`` and
   ``state.json`` last, each written atomically and stamped with the entry.

A rerun after ``kill -9`` converges: blobs present are skipped, manifests and
tags are idempotent PUTs, stale quarantine directories are removed, a version
directory without its completion marker is unpacked again, and an import killed
between its audit entry and ``state.json`` is completed by the rerun (the log's
entry is pending until then, and only this bundle may complete it).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import oci
from airgap._internal.fsutil import Dir, display
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.progress import ByteProgress
from airgap._internal.text import plural
from airgap.exceptions import (
    AirgapError,
    BaseMissingError,
    OperationError,
    UnsafePathError,
)
from airgap.extract import write_member
from airgap.manifest import BundleManifest, ImageRecord
from airgap.verified import ImagePlan, VerifiedBundle

__all__ = [
    "COMPLETE_SUFFIX", "PUSH_WORKERS", "QUARANTINE_PREFIX", "ImportResult", "format_result", "import_bundle",
    "import_verified", "internal_repository", "state_lock",
]

QUARANTINE_PREFIX = ".incoming-"
COMPLETE_SUFFIX = ".complete"
PUSH_WORKERS = 4


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
    files: int = 0  # files written by this run (0 when the version was already unpacked)
    files_total: int = 0  # files the bundle carries
    files_dir: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    verify_report: Any = None

    @property
    def status(self) -> str:
        return "imported" if self.uploaded_blobs or self.manifests_new or self.files else "already-present"

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
            "files_total": self.files_total,
            "files_dir": self.files_dir,
            "images": self.images,
        }


def internal_repository(record: ImageRecord) -> str:
    """The repository path import pushes *record* to: derived from its approved ``ref``."""
    return record.destination


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One import at a time per state directory."""
    with Dir.open_root(state_dir, create=True, mode=0o700) as root:
        fd = root.open_file(".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperationError(f"{display(state_dir)}: another airgap import holds the lock") from None
        yield
    finally:
        os.close(fd)


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
    audit_log: str | os.PathLike | None = None,
) -> ImportResult:
    """Verify the bundle at *path* (under the state lock), then import the verified object.

    The import is recorded in ``STATE/audit.log`` (*audit_log*, if given, must be
    that file): the acceptance by :func:`airgap.anchored.commit`, a refusal or
    failure here, with its reason.
    """
    from airgap.auditing import AuditTrail

    trail = AuditTrail.of(state_dir, audit_log)
    with trail.refusals("import", {"bundle": os.fspath(path), "registry": registry}):
        return _import_bundle(path, trust_path=trust_path, registry=registry, state_dir=Path(state_dir),
                              files_dir=files_dir, client=client, plain_http=plain_http, ca_file=ca_file,
                              credentials=credentials, now=now or datetime.now(UTC), override=override,
                              progress=progress, log=log)


def _import_bundle(path, *, trust_path, registry: str, state_dir: Path, files_dir, client, plain_http: bool,
                   ca_file: str | None, credentials, now: datetime, override, progress: bool,
                   log: Callable[[str], None] | None) -> ImportResult:
    from airgap import verify as verifymod

    if client is None:
        from airgap.registry import RegistryClient

        client = RegistryClient(registry, plain_http=plain_http, ca_file=ca_file, credentials=credentials)
    with state_lock(state_dir):
        with verifymod.verify(path, trust_path=trust_path, state_dir=state_dir, now=now, override=override,
                              progress=progress, hash_content=False) as verified:
            try:
                return import_verified(verified, registry=registry, state_dir=state_dir, files_dir=files_dir,
                                       client=client, now=now, progress=progress, log=log)
            except AirgapError as exc:
                # A failure after verification (a registry error, content that did not
                # hash) still carries the checks that ran, for import --json.
                if getattr(exc, "report", None) is None:
                    exc.report = verified.report  # type: ignore[attr-defined]
                raise


def import_verified(
    verified: VerifiedBundle,
    *,
    registry: str,
    state_dir: str | os.PathLike,
    files_dir: str | os.PathLike | None,
    client,
    now: datetime,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    """Push and unpack what *verified* holds; record it.  The caller holds the state lock."""
    from airgap import anchored

    state_dir = Path(state_dir)
    manifest = verified.manifest
    result = ImportResult(manifest.name, manifest.version, manifest.digest, registry, verify_report=verified.report)
    files = _FilesTarget(Path(files_dir), manifest) if files_dir is not None else None
    _check_state_dir(state_dir, manifest)
    if files is not None:
        files.check()
    reason = _nothing_to_read(client, state_dir, manifest, registry, verified.images, files)
    if reason:
        # Every blob and manifest was just seen in the registry by digest: nothing to push
        # or to ask again; the tags are still put, in case someone moved one.
        verified.skip_content(reason)
        result.skipped_blobs = len({(plan.repository, d.digest) for plan in verified.images for d in plan.blobs})
    else:
        verified.check_content(progress=progress)
        mounts = _check_base(client, manifest, verified.images)
        _push_blobs(client, verified, result, progress, log, mounts, state_dir)
    _push_manifests(client, verified, result, registry, present=bool(reason))
    if files is not None:
        result.files_dir, result.files = files.unpack(verified, log)
        result.files_total = len(files.members)
    # Only now, after everything succeeded, is the import recorded: audit entry first.
    obj = {"bundle": verified.report.bundle, "name": manifest.name, "version": manifest.version,
           "manifest": manifest.digest, "registry": registry}
    detail = {k: v for k, v in result.to_dict().items() if k in _AUDITED}
    anchored.commit(state_dir, verified, "import", obj, detail, imported={
        "name": manifest.name,
        "version": manifest.version,
        "manifest_digest": manifest.digest,
        "registry": registry,
        "imported_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": result.images,
        "files_dir": result.files_dir,
    })
    return result


_AUDITED = ("uploaded_blobs", "skipped_blobs", "uploaded_bytes", "manifests", "tags", "files", "files_total",
            "files_dir", "status")


def _check_state_dir(state_dir: Path, manifest: BundleManifest) -> None:
    """Refuse, before anything is pushed, a link where import will write its records."""
    with Dir.open_root(state_dir, create=True, mode=0o700) as root:
        for name in ("state.json", "trust.json", "audit.log", "uploads"):
            root.refuse_link(name)
        try:
            records = root.walk(f"bundles/{manifest.name}")
        except FileNotFoundError:
            return  # nothing there yet: nothing to refuse, and nothing is made before success
        with records:
            for name in ("manifest.json", "imported.json"):
                records.refuse_link(name)


def _nothing_to_read(client, state_dir: Path, manifest: BundleManifest, registry: str, plans: list[ImagePlan],
                     files: _FilesTarget | None) -> str | None:
    """Why a re-import needs no byte of the bundle's content, or None.

    Only when this exact manifest was already imported into this registry, the
    registry serves every blob and manifest by digest (content-addressed: a
    digest that is served is content that was verified when it was pushed), and
    the files' version directory is complete (its marker, written last, says
    so).  Then nothing leaves the bundle, so there is nothing to hash; the
    signatures, policy, rollback state, member list and image documents have
    still been checked.
    """
    try:
        with Dir.open_root(state_dir) as root, root.walk(f"bundles/{manifest.name}") as records:
            fd = records.open_file("imported.json", os.O_RDONLY)
            with os.fdopen(fd, "rb") as fh:
                doc = loads_strict(fh.read(1 << 24), "imported.json")
    except (OSError, AirgapError):
        return None
    if not isinstance(doc, dict) or doc.get("manifest_digest") != manifest.digest or doc.get("registry") != registry:
        return None
    if files is not None and not files.complete():
        return None
    for plan in plans:
        repo = plan.repository
        if not client.manifest_exists(repo, plan.record.digest):
            return None
        for d in plan.children:
            if not client.manifest_exists(repo, d.digest):
                return None
        for d in plan.blobs:
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
    plan_repos = list(dict.fromkeys(plan.repository for plan in plans))
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

    for plan in plans:
        record, repo = plan.record, plan.repository
        for d in plan.blobs:
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


def _blobs_to_push(client, verified: VerifiedBundle, result: ImportResult,
                   mounts: dict[tuple[str, str], str]) -> list[tuple[str, oci.Descriptor]]:
    """(repository, blob) pairs to push, once each; a differential bundle's base blobs are mounted or skipped."""
    external = dict(verified.manifest.external_blobs)
    todo: list[tuple[str, oci.Descriptor]] = []
    seen: set[tuple[str, str]] = set()
    for plan in verified.images:
        repo = plan.repository
        for d in plan.blobs:
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
    return todo


def _uploads_dir(client, state_dir: Path | None, todo: list[tuple[str, oci.Descriptor]]) -> Path | None:
    """Large blobs go up in chunks; their upload sessions are kept in STATE/uploads/
    so a rerun after kill -9 resumes them instead of starting again at byte 0.
    This is bookkeeping for the registry's sessions, not an import record."""
    chunk = getattr(client, "chunk_size", None)
    if state_dir is None or not chunk or not any(d.size > chunk for _, d in todo):
        return None
    with Dir.open_root(state_dir) as root:
        root.child("uploads", create=True, mode=0o700).close()
    return Path(state_dir) / "uploads"


def _push_blobs(client, verified: VerifiedBundle, result: ImportResult, progress: bool, log,
                mounts: dict[tuple[str, str], str] | None = None, state_dir: Path | None = None) -> None:
    todo = _blobs_to_push(client, verified, result, mounts or {})
    total = sum(d.size for _, d in todo)
    uploads_dir = _uploads_dir(client, state_dir, todo)
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
            # The digest pushed is the member's name, which verify checked is the
            # sha256 the manifest pins; the registry refuses any other bytes.
            opener = verified.opener(oci.blob_path(d.digest))
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
                failure = f.exception() if f.done() and not f.cancelled() else None
                if failure is not None:
                    raise failure
    if uploads_dir is not None:
        try:
            uploads_dir.rmdir()  # empty once every session has completed
        except OSError:
            pass


def _upload_state_path(uploads_dir: Path, repo: str, d: oci.Descriptor) -> Path:
    repo_id = hashlib.sha256(repo.encode()).hexdigest()[:16]
    return uploads_dir / f"{d.digest.split(':', 1)[1]}-{repo_id}.json"


def _push_manifests(client, verified: VerifiedBundle, result: ImportResult, registry: str, *, present: bool = False) -> None:
    """Children and untagged images first; tags strictly last.  *present*: every manifest is served by digest.

    Each document is read again from the verified bundle, hashed against the
    manifest, and pushed under the digest it was checked for.
    """
    def document(digest: str) -> bytes:
        return verified.read(oci.blob_path(digest), oci.MAX_MANIFEST_BYTES)

    for plan in verified.images:
        record, repo = plan.record, plan.repository
        for digest, media_type in [*((d.digest, d.media_type) for d in plan.children), (record.digest, record.media_type)]:
            result.manifests += 1
            if present:
                continue
            if not client.manifest_exists(repo, digest):
                result.manifests_new += 1
            client.put_manifest(repo, digest, document(digest), media_type)
    for plan in verified.images:
        record, repo = plan.record, plan.repository
        if record.tag:
            client.put_manifest(repo, record.tag, document(record.digest), record.media_type)
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


class _FilesTarget:
    """The files directory: ``versions/<name>-<version>-<digest12>/`` plus the ``current`` link.

    A version directory counts only when its completion marker
    (``versions/<version>.complete``: the manifest digest and every file's
    path, size, sha256 and mode) is present and says exactly this bundle; it
    is written last.  Anything else in its place is unpacked again.
    """

    def __init__(self, root: Path, manifest: BundleManifest):
        self.root = root
        self.manifest = manifest
        self.members = [m for m in manifest.members if m.path.startswith("files/")]
        self.version = f"{manifest.name}-{manifest.version}-{manifest.digest.split(':')[1][:12]}"
        self.marker_name = self.version + COMPLETE_SUFFIX
        self.marker = canonical_bytes({
            "_type": "airgap-files-version",
            "manifest_digest": manifest.digest,
            "files": [m.to_dict() for m in self.members],
        }) + b"\n"

    def check(self) -> None:
        """Refuse, before anything is pushed, what would make the switch fail or follow a link."""
        with Dir.open_root(self.root, create=True) as root:
            st = root.lstat("current")
            if st is not None and not _is_link(st):
                raise UnsafePathError(display(self.root / "current"),
                                      "is not a symbolic link: airgap switches 'current' by replacing its link; "
                                      "move it out of the way")
            try:
                root.child("versions").close()
            except FileNotFoundError:
                pass

    def complete(self) -> bool:
        try:
            with Dir.open_root(self.root) as root, root.walk("versions") as versions:
                st = versions.lstat(self.version)
                if st is None or not _is_dir(st):
                    return False
                fd = versions.open_file(self.marker_name, os.O_RDONLY)
                with os.fdopen(fd, "rb") as fh:
                    return fh.read(len(self.marker) + 1) == self.marker
        except (OSError, AirgapError):
            return False

    def unpack(self, verified: VerifiedBundle, log) -> tuple[str, int]:
        """Unpack into a new version directory (unless complete) and switch ``current``; (current, files written)."""
        written = 0
        with Dir.open_root(self.root, create=True) as root:
            for name in root.names():
                if name.startswith(QUARANTINE_PREFIX):
                    root.rmtree(name)
            with root.child("versions", create=True) as versions:
                if not self.complete():
                    written = self._unpack_new(verified, root, versions)
            self._switch(root)
        current = self.root / "current"
        if log:
            final = self.root / "versions" / self.version
            if written:
                log(f"files: {written} unpacked to {display(final)}, {display(current)} switched")
            else:
                log(f"files: {len(self.members)} already unpacked in {display(final)} (complete), {display(current)} switched")
        return str(current), written

    def _unpack_new(self, verified: VerifiedBundle, root: Dir, versions: Dir) -> int:
        versions.unlink(self.marker_name)  # a stale marker never vouches for a new directory
        quarantine = f"{QUARANTINE_PREFIX}{self.version}-{os.getpid()}"
        try:
            with root.child(quarantine, create=True) as q:
                for m in self.members:
                    write_member(verified, q, m.path, m.path[len("files/"):])
                q.fsync()
            if versions.lstat(self.version) is not None:
                # An incomplete (or foreign) directory under this version's name: replaced, never trusted.
                aside = f"{QUARANTINE_PREFIX}stale-{self.version}-{os.getpid()}"
                os.rename(self.version, aside, src_dir_fd=versions.fd, dst_dir_fd=root.fd)
                root.rmtree(aside)
            os.rename(quarantine, self.version, src_dir_fd=root.fd, dst_dir_fd=versions.fd)
            versions.fsync()
            versions.write_atomic(self.marker_name, self.marker)
        except OSError as exc:
            root.rmtree(quarantine)
            if exc.errno == errno.ENOSPC:
                raise OperationError(f"{display(self.root)}: no space left on device while unpacking files; nothing was switched") from None
            raise OperationError(f"{display(self.root)}: cannot unpack files: {exc.strerror or exc}") from None
        except BaseException:
            root.rmtree(quarantine)
            raise
        return len(self.members)

    def _switch(self, root: Dir) -> None:
        tmp_link = f".current-{os.getpid()}"
        root.unlink(tmp_link)
        root.symlink(os.path.join("versions", self.version), tmp_link)
        root.replace(tmp_link, "current")
        root.fsync()


def _is_link(st: os.stat_result) -> bool:
    return stat.S_ISLNK(st.st_mode)


def _is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def format_result(r: ImportResult) -> str:
    lines = [f"IMPORTED: {r.name} {r.version} (manifest {r.manifest_digest}) into {r.registry}"]
    lines.append(f"  blobs: {r.uploaded_blobs} uploaded ({plural(r.uploaded_bytes, 'byte')}), {r.skipped_blobs} already present")
    lines.append(f"  manifests: {r.manifests} ({r.manifests_new} new), tags: {r.tags}")
    for img in r.images:
        lines.append(f"  {img['ref']} -> {img['internal_ref']}")
    if r.files_dir:
        written = f"{r.files} written" if r.files else "already unpacked"
        lines.append(f"  files: {r.files_total} ({written}), current: {r.files_dir}")
    return "\n".join(lines)

