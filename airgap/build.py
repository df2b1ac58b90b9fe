"""Building a bundle on the connected side.

Every size and digest is known before the first blob byte arrives (descriptors
carry them, local files are hashed first), so the whole archive layout, and
therefore the manifest, is fixed up front.  Blobs are then downloaded in
parallel straight into their final place in the output file: one write per
byte, no staging copy, digests checked while the bytes stream.

The output appears at its path only when complete and signed (temporary file,
fsync, ``os.replace``); any failure removes the temporary file.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from airgap import __version__, oci
from airgap._internal import tarfmt
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.progress import ByteProgress
from airgap.exceptions import FormatError, InputError, IntegrityError, SpecError
from airgap.manifest import (
    MANIFEST_MEMBER,
    SIGNATURES_MEMBER,
    BaseRecord,
    BundleManifest,
    ImageRecord,
    MemberRecord,
)

FILE_CHUNK = 1024 * 1024


def format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_time(created: str | None = None) -> datetime:
    """The bundle's creation time: explicit, else SOURCE_DATE_EPOCH, else now.

    Reproducible builds need the time to be an input, not a reading of the clock.
    """
    if created:
        try:
            t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise InputError(f"--created {created!r}: expected an RFC 3339 UTC time like 2026-11-23T12:00:00Z") from None
        return t
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        if not epoch.isdigit():
            raise InputError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds")
        return datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    return datetime.now(timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------- sinks


class RegionWriter:
    """Writes one blob into its reserved region of the output file with pwrite.

    ``seek`` lets a downloader restart or resume after a dropped connection.
    """

    def __init__(self, fd: int, offset: int, size: int, progress: Callable[[int], None] | None = None, artifact: str = "blob"):
        self.fd, self.offset, self.size, self.artifact = fd, offset, size, artifact
        self.pos = 0
        self.progress = progress

    def write(self, data: bytes) -> int:
        if self.pos + len(data) > self.size:
            raise IntegrityError(self.artifact, f"more bytes than the descriptor's {self.size}")
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.offset + self.pos)
            self.pos += n
            view = view[n:]
            if self.progress:
                self.progress(n)
        return len(data)

    def seek(self, pos: int) -> None:
        if self.progress and pos < self.pos:
            self.progress(pos - self.pos)
        self.pos = pos

    def tell(self) -> int:
        return self.pos


# --------------------------------------------------------------------------- sources


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str
    data: bytes | None = None  # manifests and indexes are kept: they are small and must be parsed
    origin: "ImageOrigin | None" = None
    cached: bytes | None = None  # a config already fetched (and digest-checked) to learn its platform


class ImageOrigin:
    """Where an image's documents and blobs come from."""

    label: str

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        raise NotImplementedError

    def get_document(self, desc: oci.Descriptor) -> bytes:
        raise NotImplementedError

    def copy_blob(self, digest: str, size: int, sink: RegionWriter) -> None:
        raise NotImplementedError


class RegistryOrigin(ImageOrigin):
    def __init__(self, client, repository: str):
        self.client = client
        self.repository = repository
        self.label = f"{client.registry}/{repository}"

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        m = self.client.get_manifest(self.repository, reference)
        return m.data, m.media_type, m.digest

    def get_document(self, desc: oci.Descriptor) -> bytes:
        if desc.media_type not in oci.ALL_MANIFEST_TYPES:
            # A config (or other small blob) lives under /blobs/, not /manifests/.
            sink = io.BytesIO()
            self.client.fetch_blob_into(self.repository, desc.digest, desc.size, sink)
            return sink.getvalue()
        m = self.client.get_manifest(self.repository, desc.digest)
        if m.media_type != desc.media_type:
            raise FormatError(f"{self.label}@{desc.digest}", f"registry served {m.media_type!r}, descriptor says {desc.media_type!r}")
        return m.data

    def copy_blob(self, digest: str, size: int, sink: RegionWriter) -> None:
        self.client.fetch_blob_into(self.repository, digest, size, sink)


class LayoutOrigin(ImageOrigin):
    """A local OCI image layout (``oci:path:tag`` in the spec)."""

    def __init__(self, layout: Path):
        self.layout = layout
        self.label = f"oci:{layout}"
        try:
            oci.check_layout_file((layout / "oci-layout").read_bytes(), f"{layout}/oci-layout")
            self.index = oci.parse_layout_index((layout / "index.json").read_bytes(), f"{layout}/index.json")
        except OSError as exc:
            raise InputError(f"{layout}: not a readable OCI layout ({exc.strerror})") from None

    def _path(self, digest: str) -> Path:
        return self.layout / oci.blob_path(digest)

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        if reference.startswith("sha256:"):
            matches = [d for d in self.index if d.digest == reference]
        else:
            matches = [d for d in self.index if (d.annotations or {}).get(oci.REF_NAME) == reference]
        if not matches:
            raise InputError(f"{self.label}: no image {reference!r} in index.json")
        if len(matches) > 1:
            raise InputError(f"{self.label}: {reference!r} names {len(matches)} images in index.json")
        desc = matches[0]
        return self.get_document(desc), desc.media_type, desc.digest

    def get_document(self, desc: oci.Descriptor) -> bytes:
        path = self._path(desc.digest)
        if not path.is_file():
            raise InputError(f"{self.label}: blob {desc.digest} is missing")
        if desc.size > oci.MAX_MANIFEST_BYTES:
            raise FormatError(f"{self.label}@{desc.digest}", "manifest larger than 4 MiB")
        data = path.read_bytes()
        if len(data) != desc.size or "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
            raise IntegrityError(f"{self.label}@{desc.digest}", "content does not match its descriptor")
        return data

    def copy_blob(self, digest: str, size: int, sink: RegionWriter) -> None:
        path = self._path(digest)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(FILE_CHUNK):
                    h.update(chunk)
                    sink.write(chunk)
        except FileNotFoundError:
            raise InputError(f"{self.label}: blob {digest} is missing") from None
        if sink.tell() != size or "sha256:" + h.hexdigest() != digest:
            raise IntegrityError(f"{self.label}@{digest}", f"sha256 mismatch (got sha256:{h.hexdigest()}, {sink.tell()} bytes)")


# --------------------------------------------------------------------------- resolving


@dataclass
class ResolvedImage:
    record: ImageRecord
    documents: list[Blob]  # manifests/indexes carried (digest -> bytes)
    blobs: list[Blob]  # configs and layers


def _config(origin: ImageOrigin, manifest: oci.ImageManifest, artifact: str) -> bytes:
    """The config bytes, parsed as verify will parse them (kept, so they are fetched once)."""
    if manifest.config.size > oci.MAX_CONFIG_BYTES:
        raise FormatError(f"{artifact} config", f"{manifest.config.size} bytes exceeds the cap of {oci.MAX_CONFIG_BYTES}")
    config = origin.get_document(manifest.config)
    oci.check_config(config, f"{artifact} config")
    return config


def _platform_of_manifest(origin: ImageOrigin, manifest: oci.ImageManifest, artifact: str) -> tuple[oci.Platform | None, bytes | None]:
    """The platform an image's config names, and the config bytes (kept, so they are fetched once)."""
    config = _config(origin, manifest, artifact)
    doc = loads_strict(config, f"{artifact} config", max_size=oci.MAX_CONFIG_BYTES)
    if isinstance(doc, dict) and isinstance(doc.get("os"), str) and isinstance(doc.get("architecture"), str):
        return oci.Platform(doc["os"], doc["architecture"], doc.get("variant") or None), config
    return None, config


def resolve_image(origin: ImageOrigin, reference: str, wanted: list[str] | None, artifact: str) -> tuple[str, str, int, list[Blob], list[Blob], list[str], str | None]:
    """Fetch the documents of one image and decide which blobs it needs.

    Returns (digest, media_type, size, documents, blobs, platforms, source_index).
    """
    data, media_type, digest = origin.get_manifest(reference)
    doc = oci.parse_document(data, artifact, media_type)
    wanted_p = [oci.Platform.parse(p) for p in wanted] if wanted else None
    top = Blob(digest, len(data), media_type, data, origin)

    if isinstance(doc, oci.ImageManifest):
        plats: list[str] = []
        if wanted_p:
            plat, config = _platform_of_manifest(origin, doc, artifact)
            if plat is None or not any(w.matches(plat) for w in wanted_p):
                raise SpecError(artifact, f"image is for {plat or 'an unknown platform'}, spec asks for {', '.join(wanted)}")
            plats = [str(plat)]
        else:
            config = _config(origin, doc, artifact)
        blobs = [Blob(d.digest, d.size, d.media_type, None, origin) for d in doc.blobs()]
        blobs[0].cached = config  # doc.blobs() starts with the config
        return digest, media_type, len(data), [top], blobs, plats, None

    # A multi-arch index.
    children = []
    for d in doc.manifests:
        if d.media_type in oci.INDEX_TYPES:
            raise FormatError(artifact, "nested image indexes are not supported")
        if wanted_p is None or (d.platform and any(w.matches(d.platform) for w in wanted_p)):
            children.append(d)
    if wanted_p:
        missing = [w for w in wanted if not any(oci.Platform.parse(w).matches(d.platform) for d in children if d.platform)]
        if missing:
            available = sorted(str(d.platform) for d in doc.manifests if d.platform)
            raise SpecError(artifact, f"platform {', '.join(missing)} not in the index (available: {', '.join(available)})")
    documents: list[Blob] = []
    blobs: list[Blob] = []
    for d in children:
        child = origin.get_document(d)
        cdoc = oci.parse_document(child, f"{artifact}@{d.digest}", d.media_type)
        assert isinstance(cdoc, oci.ImageManifest)
        documents.append(Blob(d.digest, d.size, d.media_type, child, origin))
        child_blobs = [Blob(b.digest, b.size, b.media_type, None, origin) for b in cdoc.blobs()]
        child_blobs[0].cached = _config(origin, cdoc, f"{artifact}@{d.digest}")
        blobs.extend(child_blobs)
    platforms = [str(d.platform) for d in children if d.platform]
    if wanted_p is None or len(children) == len(doc.manifests):
        return digest, media_type, len(data), [top, *documents], blobs, platforms, None
    if len(children) == 1:
        # A strict subset of one platform: carry that platform's manifest, unchanged,
        # and record the index it came from.  Rewriting the index would change the
        # digest that runs.
        only = children[0]
        return only.digest, only.media_type, only.size, documents, blobs, platforms, digest
    raise SpecError(artifact, "choose one platform or all of them: a subset of several would need a rewritten index")


# --------------------------------------------------------------------------- layout


@dataclass
class PlannedMember:
    path: str
    size: int
    sha256: str
    mode: int
    data: bytes | None = None  # small members written from memory
    blob: Blob | None = None  # downloaded into place
    file: Path | None = None  # copied from the spec's directory
    header_offset: int = 0


def plan_members(images: list[ResolvedImage], files: list[tuple[str, Path, int, int, str]], skip: set[str]) -> tuple[list[PlannedMember], list[tuple[str, int]]]:
    """Order and describe every member (except manifest and signatures)."""
    index_entries = []
    for img in images:
        r = img.record
        index_entries.append(
            {"mediaType": r.media_type, "digest": r.digest, "size": r.size, "annotations": {oci.REF_NAME: r.layout_ref}}
        )
    index_entries.sort(key=lambda e: e["annotations"][oci.REF_NAME])
    index_bytes = canonical_bytes({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": index_entries})
    layout_bytes = oci.layout_file()

    blobs: dict[str, Blob] = {}
    for img in images:
        for b in (*img.documents, *img.blobs):
            prev = blobs.get(b.digest)
            if prev is not None and prev.size != b.size:
                raise IntegrityError(b.digest, f"two descriptors disagree on its size ({prev.size} and {b.size})")
            if prev is None or (prev.data is None and b.data is not None) or (prev.cached is None and b.cached is not None):
                blobs[b.digest] = b
    external: list[tuple[str, int]] = []
    members = [
        PlannedMember("oci-layout", len(layout_bytes), hashlib.sha256(layout_bytes).hexdigest(), 0o644, data=layout_bytes),
        PlannedMember("index.json", len(index_bytes), hashlib.sha256(index_bytes).hexdigest(), 0o644, data=index_bytes),
    ]
    for digest in sorted(blobs):
        b = blobs[digest]
        # Manifests are always carried, even in a differential bundle: they are what
        # import pushes last and they are tiny.
        if digest in skip and b.data is None:
            external.append((digest, b.size))
            continue
        data = b.data if b.data is not None else b.cached
        members.append(
            PlannedMember(oci.blob_path(digest), b.size, digest.split(":", 1)[1], 0o644, data=data, blob=None if data is not None else b)
        )
    for dest, src, size, mode, sha in sorted(files):
        members.append(PlannedMember("files/" + dest, size, sha, mode, file=src))
    return members, external


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def collect_files(spec) -> list[tuple[str, Path, int, int, str]]:
    """(dest, src, size, mode, sha256) for every file the spec carries."""
    out: dict[str, tuple[str, Path, int, int, str]] = {}
    seen: dict[str, str] = {}
    for f in spec.files:
        for dest, src in f.entries:
            if src.is_symlink() or not src.is_file():
                raise SpecError(f"files[{f.index}].src", f"{src} is not a regular file")
            mode = f.mode if f.mode is not None else (0o755 if os.stat(src).st_mode & 0o111 else 0o644)
            tarfmt.check_name("files/" + dest, f"files[{f.index}] {dest}")
            key = tarfmt.collision_key(dest)
            if key in seen:
                raise SpecError(f"files[{f.index}].dest", f"{dest} collides with {seen[key]}")
            seen[key] = dest
            size, sha = hash_file(src)
            out[dest] = (dest, src, size, mode & 0o777, sha)
    return list(out.values())


# --------------------------------------------------------------------------- writing


def _layout_offsets(members: list[PlannedMember], manifest_size: int) -> int:
    offset = tarfmt.BLOCK + tarfmt.padded(manifest_size)
    for m in members:
        m.header_offset = offset
        offset += tarfmt.BLOCK + tarfmt.padded(m.size)
    return offset


def write_bundle(
    out: Path,
    manifest_bytes: bytes,
    members: list[PlannedMember],
    envelope_bytes: bytes,
    *,
    workers: int = 4,
    progress: ByteProgress | None = None,
) -> None:
    """Write the archive to a temporary file next to *out*, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    sig_offset = _layout_offsets(members, len(manifest_bytes))
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def put(offset: int, data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                offset += n
                view = view[n:]

        put(0, tarfmt.header(MANIFEST_MEMBER, len(manifest_bytes), 0o644) + manifest_bytes + tarfmt.padding(len(manifest_bytes)))
        downloads: list[PlannedMember] = []
        for m in members:
            put(m.header_offset, tarfmt.header(m.path, m.size, m.mode))
            pad = tarfmt.padding(m.size)
            if pad:
                put(m.header_offset + tarfmt.BLOCK + m.size, pad)
            if m.data is not None:
                put(m.header_offset + tarfmt.BLOCK, m.data)
            elif m.file is not None:
                _copy_file(m, fd)
            else:
                downloads.append(m)
        tail = tarfmt.header(SIGNATURES_MEMBER, len(envelope_bytes), 0o644) + envelope_bytes + tarfmt.padding(len(envelope_bytes)) + tarfmt.END_OF_ARCHIVE
        put(sig_offset, tail)
        os.ftruncate(fd, sig_offset + len(tail))
        _download_all(downloads, fd, workers, progress)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, out)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _copy_file(m: PlannedMember, fd: int) -> None:
    h = hashlib.sha256()
    sink = RegionWriter(fd, m.header_offset + tarfmt.BLOCK, m.size, artifact=str(m.file))
    assert m.file is not None
    with open(m.file, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            h.update(chunk)
            sink.write(chunk)
    if sink.tell() != m.size or h.hexdigest() != m.sha256:
        raise IntegrityError(str(m.file), "file changed while the bundle was being built")


def _download_all(downloads: list[PlannedMember], fd: int, workers: int, progress: ByteProgress | None) -> None:
    if not downloads:
        return
    # Largest first, so one big layer does not start last and run alone.
    downloads = sorted(downloads, key=lambda m: -m.size)
    errors: list[BaseException] = []
    stop = threading.Event()

    def one(m: PlannedMember) -> None:
        if stop.is_set():
            return
        assert m.blob is not None and m.blob.origin is not None
        sink = RegionWriter(fd, m.header_offset + tarfmt.BLOCK, m.size, progress.update if progress else None,
                            artifact=f"{m.blob.origin.label}@{m.blob.digest}")
        try:
            m.blob.origin.copy_blob(m.blob.digest, m.size, sink)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, first error wins
            stop.set()
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, downloads))
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    path: Path
    manifest: BundleManifest
    blob_bytes: int
    external_blobs: int
    warnings: tuple[str, ...] = ()


def load_since(path: str | None) -> tuple[set[str], BaseRecord | None]:
    """Blobs the receiving side confirmed it has (``airgap inventory`` output or a manifest)."""
    if not path:
        return set(), None
    from airgap import inventory

    inv = inventory.Inventory.load(path)
    return inv.blob_digests(), BaseRecord(inv.kind, inv.digest, inv.description)


def build(
    spec_path: str | os.PathLike,
    out: str | os.PathLike,
    signing_key,
    *,
    plain_http: bool = False,
    ca_file: str | None = None,
    created: str | None = None,
    since: str | None = None,
    workers: int = 4,
    progress: bool = False,
    registry_client_factory: Callable[..., object] | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build and sign a bundle from a spec; see the module docstring."""
    from airgap import sovereignty
    from airgap import spec as specmod

    spec_path = Path(spec_path)
    out = Path(out)
    t0 = build_time(created)
    # Relative expiry counts from the creation time, not the clock: same inputs, same bytes.
    spec = specmod.load_spec(spec_path, now=t0)
    expires = spec.metadata.expires_at
    policy = sovereignty.SovereigntyPolicy.load()
    factory = registry_client_factory or _default_client_factory(plain_http, ca_file)
    clients: dict[str, object] = {}
    skip, base = load_since(since)

    resolved: list[ResolvedImage] = []
    for img in spec.images:
        artifact = f"{img.field} {img.ref}"
        if img.kind == "oci-layout":
            origin: ImageOrigin = LayoutOrigin(Path(img.layout_path))
            reference = img.digest or img.tag
            registry, repository, tag = "oci-layout", Path(img.layout_path).name, img.tag
            sov = None
            layout_ref = img.ref
        else:
            ref = img.reference
            sov = None
            match = policy.check_image_source(ref.registry, img.allow_reason, artifact=f"{img.field} {img.ref}")
            if match is not None:
                sov = {"provider": match.provider, "reason": img.allow_reason}
            client = clients.get(ref.registry)
            if client is None:
                client = clients[ref.registry] = factory(ref.registry)
            origin = RegistryOrigin(client, ref.repository)
            reference = ref.digest or ref.tag
            registry, repository, tag = ref.registry, ref.repository, ref.tag
            layout_ref = str(ref)
        if log:
            log(f"resolving {img.ref}")
        digest, media_type, size, documents, blobs, platforms, source_index = resolve_image(origin, reference, img.platforms, artifact)
        if img.kind != "oci-layout" and ref.digest and source_index is None and digest != ref.digest:
            raise IntegrityError(artifact, f"registry served {digest}, the spec pins {ref.digest}")
        record = ImageRecord(
            ref=img.ref,
            layout_ref=layout_ref,
            registry=registry,
            repository=repository,
            tag=tag,
            digest=digest,
            media_type=media_type,
            size=size,
            platforms=tuple(platforms),
            source_index=source_index,
            sovereignty=sov,
        )
        resolved.append(ResolvedImage(record, documents, blobs))
    for c in clients.values():
        close = getattr(c, "close", None)
        if close:
            close()

    refs = [r.record.layout_ref for r in resolved]
    if len(set(refs)) != len(refs):
        raise SpecError("images", "the same image reference is listed twice")
    files = collect_files(spec)
    warnings: list[str] = []
    if getattr(spec, "wheels", None):
        files.extend(_wheel_files(spec, warnings))
    members, external = plan_members(resolved, files, skip)
    manifest = BundleManifest(
        name=spec.metadata.name,
        version=spec.metadata.version,
        target=spec.metadata.target,
        created=format_time(t0),
        expires=format_time(expires),
        spec_name=spec_path.name,
        spec_sha256=spec.digest.split(":")[-1],
        toolkit_version=__version__,
        images=tuple(r.record for r in resolved),
        members=tuple(MemberRecord(m.path, m.size, m.sha256, m.mode) for m in members),
        base=base,
        external_blobs=tuple(sorted(external)),
        description=spec.metadata.description,
    )
    manifest_bytes = manifest.to_bytes()
    # Build refuses what verify would refuse, before a byte is written.
    checked = BundleManifest.from_bytes(manifest_bytes)
    from airgap import dsse

    envelope = dsse.Envelope(manifest_bytes)
    envelope.add_signature(signing_key, artifact=SIGNATURES_MEMBER)
    blob_bytes = sum(m.size for m in members if m.blob is not None)
    with ByteProgress(total=blob_bytes, desc="pulling", enabled=progress) as bar:
        write_bundle(out, manifest_bytes, members, envelope.to_bytes(), workers=workers, progress=bar)
    return BuildResult(out, checked, blob_bytes, len(external), tuple(warnings))


def _default_client_factory(plain_http: bool, ca_file: str | None):
    from airgap.registry import RegistryClient

    def make(registry: str):
        return RegistryClient(registry, plain_http=plain_http, ca_file=ca_file)

    return make


def _wheel_files(spec, warnings: list[str]) -> list[tuple[str, Path, int, int, str]]:
    """The wheelhouse's wheels and, when it has one, its toolkit release statement.

    The statement's signatures are the isolated side's business (the builder
    holds no toolkit key and may not know the policy), but a statement that
    does not describe these very wheels is refused here: carried, it would only
    make the rollout keep the old toolkit.
    """
    from airgap import toolkit, wheels

    house = wheels.wheelhouse(spec)
    out = []
    records = {}
    for path in house.wheels:
        size, sha = hash_file(path)
        records[path.name] = toolkit.WheelRecord(path.name, size, sha)
        out.append((f"wheels/{path.name}", path, size, 0o644, sha))
    if house.release is None:
        warnings.append(f"{house.directory} has no {toolkit.RELEASE_FILE}: the bundle carries {len(out)} wheels that "
                        "no toolkit release lists, so isolated hosts keep their installed toolkit (build with "
                        f"{wheels.ENV}=<a toolkit release directory>)")
        return out
    statement = toolkit.ReleaseStatement.from_file(house.release)
    problems = toolkit.check_wheels(statement.release, records, house.directory)
    if problems:
        raise InputError(f"{house.release} does not describe the wheels next to it: {'; '.join(problems)}")
    size, sha = hash_file(house.release)
    out.append((f"wheels/{toolkit.RELEASE_FILE}", house.release, size, 0o644, sha))
    return out
