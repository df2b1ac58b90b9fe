"""An SBOM for every image of a bundle: CycloneDX 1.5 JSON from the layers' package databases.

At build, every layer is streamed from its source (the build keeps what is
streamed for its writer: ``docs/sbom.md``, "Each layer is fetched once"), the package databases are taken out of it, whiteouts
are applied layer by layer, and one document per image is written to
``sbom/sha256/<image-manifest-hex>.cdx.json``: a bundle member like any other,
pinned in the manifest and so covered by every signature.  Verify accepts
exactly that area, and only documents that parse and describe an image of the
bundle.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airgap import oci
from airgap.exceptions import FormatError, IntegrityError, OperationError
from airgap.sbom.cyclonedx import MAX_SBOM_BYTES, Component, ImageSbom, document, read

if TYPE_CHECKING:
    from concurrent.futures import Future

    from airgap.sbom.layers import FsView
# Generating reads layers (tarfile, gzip, email.parser, a thread pool): imported by the
# functions that generate, so verify, which only reads SBOMs, does not pay for them.

__all__ = ["PREFIX", "member_path", "for_images", "check_member_name", "check_documents", "read_bundle",
           "ImageSbom", "Component", "MAX_SBOM_BYTES"]

PREFIX = "sbom/sha256/"
SUFFIX = ".cdx.json"
_MEMBER = re.compile(r"sbom/sha256/([0-9a-f]{64})\.cdx\.json\Z")
CONTAINER_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


def member_path(image_digest: str) -> str:
    return PREFIX + image_digest.split(":", 1)[1] + SUFFIX


# --------------------------------------------------------------------------- generating


@dataclass
class _Platform:
    platform: str | None
    manifest: oci.ImageManifest
    origin: Any  # airgap.pull.ImageOrigin: copy_blob / get_config


@dataclass
class _Scanned:
    platform: str | None
    view: FsView
    notes: list[str]
    incomplete: bool


class _Chains:
    """Each (view, layer) is computed once: layer chains shared between images (a common
    base) are read once, and a layer listed again on a view it already produced (a hostile
    manifest listing one layer thousands of times) is not read again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple, Future] = {}

    def get(self, chain: tuple, compute: Callable[[], Any]) -> Any:
        from concurrent.futures import Future

        with self._lock:
            fut = self._done.get(chain)
            owner = fut is None
            if fut is None:
                fut = self._done[chain] = Future()
        if owner:
            try:
                fut.set_result(compute())
            except BaseException as exc:
                fut.set_exception(exc)
                raise
        return fut.result()


def _platforms(img, artifact: str) -> list[_Platform]:
    docs = img.documents  # digest -> carried document (data, media_type, origin)
    top = docs[img.record.digest]
    doc = oci.parse_document(top.data, artifact, top.media_type)
    if isinstance(doc, oci.ImageManifest):
        return [_Platform(img.record.platforms[0] if len(img.record.platforms) == 1 else None, doc, top.origin)]
    out = []
    for d in doc.manifests:
        child = docs.get(d.digest)
        if child is None:
            continue  # not carried: a platform the spec left out
        cdoc = oci.parse_document(child.data, f"{artifact}@{d.digest}", d.media_type)
        if isinstance(cdoc, oci.ImageManifest):
            out.append(_Platform(str(d.platform) if d.platform else None, cdoc, child.origin))
    return out


def _read_layer(view: FsView, desc: oci.Descriptor, origin, artifact: str) -> FsView:
    from airgap.sbom.layers import Restart, apply_layer, decompressed, piped

    for _ in range(3):
        try:
            with piped(lambda sink: origin.copy_blob(desc.digest, desc.size, sink)) as raw, \
                    decompressed(raw, desc.media_type, artifact) as tar:
                return apply_layer(view, tar, desc.digest, artifact)
        except Restart:
            continue
    raise OperationError(f"{artifact}: the download restarted three times while reading its package databases")


def _scan(p: _Platform, chains: _Chains, artifact: str) -> _Scanned:
    from airgap.sbom.layers import LAYER_TYPES, FsView

    notes: list[str] = []
    where = f" ({p.platform})" if p.platform else ""
    if p.manifest.config.media_type not in CONTAINER_CONFIGS:
        return _Scanned(p.platform, FsView(), [f"not a container image{where} (config {p.manifest.config.media_type}): no packages"], False)
    view, incomplete = FsView(), False
    for desc in p.manifest.layers:
        if desc.media_type not in LAYER_TYPES:
            notes.append(f"layer {desc.digest}{where} has media type {desc.media_type}: not read")
            incomplete = True
            continue
        lower = view
        view = chains.get((lower.key(), desc.digest),
                          functools.partial(_read_layer, lower, desc, p.origin, f"{artifact} layer {desc.digest}"))
    return _Scanned(p.platform, view, notes, incomplete)


def _platform_of(p: _Platform, artifact: str) -> str | None:
    if p.platform or p.manifest.config.media_type not in CONTAINER_CONFIGS:
        return p.platform
    if p.manifest.config.size > oci.MAX_MANIFEST_BYTES:
        return None
    from airgap._internal.jsonutil import loads_strict

    cfg = loads_strict(p.origin.get_config(p.manifest.config), f"{artifact} config", max_size=oci.MAX_MANIFEST_BYTES)
    if isinstance(cfg, dict) and isinstance(cfg.get("os"), str) and isinstance(cfg.get("architecture"), str):
        return str(oci.Platform(cfg["os"], cfg["architecture"], cfg.get("variant") or None))
    return None


def _os_release(view: FsView) -> dict:
    for path in ("etc/os-release", "usr/lib/os-release"):
        f = view.files.get(path)
        if f is not None and f.symlink:
            f = view.files.get(f.symlink)
        if f is not None and f.os_release is not None:
            return f.os_release
    return {}


def _assemble(img, scanned: list[_Scanned]) -> ImageSbom:
    comps: dict[str, Component] = {}
    notes: list[str] = []
    incomplete = False
    for s in scanned:
        notes += s.notes
        incomplete |= s.incomplete
        osr = _os_release(s.view)
        distro_id = (osr.get("ID") or "").lower() or None
        distro = f"{distro_id}-{osr['VERSION_ID']}" if distro_id and osr.get("VERSION_ID") else None
        where = f" ({s.platform})" if s.platform else ""
        found_db = False
        for path in sorted(s.view.files):
            f = s.view.files[path]
            if f.kind == "os-release":
                continue
            if f.problem:
                notes.append(f"{f.problem}{where}")
                incomplete = True
                continue
            found_db = True
            if f.skipped:
                notes.append(f"{path}{where}: {f.skipped} entries without a name or version were skipped")
            for pkg in f.packages:
                namespace = None
                if pkg.type in ("deb", "apk"):
                    namespace = distro_id or ("debian" if pkg.type == "deb" else "alpine")
                purl = pkg.purl(namespace, distro if pkg.type in ("deb", "apk") else None)
                c = comps.setdefault(purl, Component(purl, pkg.name, pkg.version))
                if s.platform:
                    c.platforms.add(s.platform)
                c.locations.add(path)
        if not found_db and not s.notes:
            notes.append(f"no package database found{where} (dpkg, apk or Python dist-info): no packages listed")
    r = img.record
    platforms = sorted({s.platform for s in scanned if s.platform})
    return ImageSbom(r.digest, r.repository, list(comps.values()), incomplete, sorted(set(notes)), platforms)


def _image_purl(record) -> str:
    from airgap.sbom.packages import build_purl

    qualifiers = {"tag": record.tag or ""}
    if record.registry != "oci-layout":
        qualifiers["repository_url"] = f"{record.registry}/{record.repository}"
    return build_purl("oci", None, record.repository.rsplit("/", 1)[-1].lower(), record.digest, qualifiers)


def for_images(images: Iterable, *, workers: int = 2, log: Callable[[str], None] | None = None) -> list[tuple[str, bytes]]:
    """(member path, CycloneDX bytes) for every image of a build, sorted by path.

    *images* have the image ``record`` and ``documents``: the carried manifests and
    indexes by digest, each with its bytes and the origin that can stream a layer again.
    """
    from concurrent.futures import ThreadPoolExecutor

    images = list(images)
    chains = _Chains()
    jobs: list[tuple[Any, _Platform, str]] = []
    for img in images:
        artifact = f"image {img.record.ref}"
        jobs += [(img, p, artifact) for p in _platforms(img, artifact)]
    workers = max(1, min(workers, os.cpu_count() or 1, len(jobs) or 1))

    def one(job) -> _Scanned:
        img, p, artifact = job
        p.platform = _platform_of(p, artifact)
        if log:
            log(f"sbom {img.record.ref}{' ' + p.platform if p.platform else ''}")
        return _scan(p, chains, artifact)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sbom") as pool:
        results = list(pool.map(one, jobs))
    out = []
    for img in images:
        scanned = [s for (owner, _, _), s in zip(jobs, results) if owner is img]
        data = document(_assemble(img, scanned), image_purl=_image_purl(img.record), reference=img.record.ref)
        if len(data) > MAX_SBOM_BYTES:
            raise FormatError(f"image {img.record.ref}", f"its SBOM is {len(data)} bytes, over the cap of {MAX_SBOM_BYTES}")
        out.append((member_path(img.record.digest), data))
    return sorted(out)


# --------------------------------------------------------------------------- reading a bundle


def check_member_name(path: str, manifest) -> None:
    """The one SBOM area verify accepts: ``sbom/sha256/<hex>.cdx.json`` of an image of the bundle."""
    m = _MEMBER.match(path)
    if m is None:
        raise FormatError(path, f"unexpected path under sbom/ (expected {PREFIX}<image manifest hex>{SUFFIX})")
    if "sha256:" + m.group(1) not in {i.digest for i in manifest.images}:
        raise FormatError(path, "SBOM of an image the bundle does not carry")


def check_documents(manifest, read_verified: Callable[[str, int], bytes]) -> set[str]:
    """Parse every SBOM member (bytes already checked against the manifest); return their paths."""
    done = set()
    for m in manifest.members:
        if m.path.startswith(PREFIX):
            _parse_member(m.path, read_verified(m.path, MAX_SBOM_BYTES))
            done.add(m.path)
    return done


def _parse_member(path: str, data: bytes) -> ImageSbom:
    sbom = read(data, path)
    m = _MEMBER.match(path)
    if m is None or sbom.image_digest != "sha256:" + m.group(1):
        raise FormatError(path, f"describes image {sbom.image_digest}, not the one its path names")
    return sbom


def read_bundle(bundle, manifest) -> dict[str, ImageSbom]:
    """Image digest -> SBOM, for inspect, diff and sign: each member's sha256 checked against the manifest."""
    out = {}
    for record in manifest.members:
        if not record.path.startswith(PREFIX):
            continue
        member = bundle.member(record.path)
        if member is None:
            raise IntegrityError(record.path, "listed in the manifest but absent from the archive")
        data = bundle.read(member, MAX_SBOM_BYTES)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise IntegrityError(record.path, "sha256 mismatch with the manifest")
        check_member_name(record.path, manifest)
        sbom = _parse_member(record.path, data)
        out[sbom.image_digest] = sbom
    return out


# --------------------------------------------------------------------------- views for people


def package_rows(sbom: ImageSbom) -> list[dict[str, Any]]:
    """One row per package: type, name, version, arch, platforms (sorted)."""
    rows = [{"type": c.type, "name": c.name, "version": c.version, "arch": c.arch, "purl": c.purl,
             "platforms": sorted(c.platforms)} for c in sbom.components]
    return sorted(rows, key=lambda r: (r["type"], r["name"], r["version"], r["purl"]))


def count_text(sbom: ImageSbom | None) -> str:
    """``97 packages (deb 90, pypi 7)``, ``no packages (...)``, or ``no SBOM``."""
    if sbom is None:
        return "no SBOM"
    by_type: dict[str, int] = {}
    for c in sbom.components:
        by_type[c.type] = by_type.get(c.type, 0) + 1
    n = len(sbom.components)
    text = f"{n} package{'s' if n != 1 else ''}"
    if by_type:
        text += " (" + ", ".join(f"{t} {k}" for t, k in sorted(by_type.items())) + ")"
    if sbom.incomplete:
        text += " INCOMPLETE: " + "; ".join(sbom.notes)
    elif not n and sbom.notes:
        text += f": {sbom.notes[0]}"
    return text


def diff_packages(a: ImageSbom | None, b: ImageSbom | None) -> dict[str, list[dict[str, Any]]]:
    """Packages added, removed and changed (same type, name, arch and platform; other version)."""
    # The platform is part of a package's identity only in multi-platform images.
    multi = len({*(a.platforms if a else []), *(b.platforms if b else [])}) > 1

    def index(s: ImageSbom | None) -> dict[tuple, set[str]]:
        out: dict[tuple, set[str]] = {}
        for c in (s.components if s else []):
            plats: list[str | None] = [*sorted(c.platforms)] if multi else []
            for plat in plats or [None]:
                out.setdefault((c.type, c.name, c.arch, plat), set()).add(c.version)
        return out

    ia, ib = index(a), index(b)

    def row(key, **versions):
        t, name, arch, plat = key
        return {"type": t, "name": name, "arch": arch, "platform": plat, **versions}

    return {
        "added": [row(k, version=", ".join(sorted(ib[k]))) for k in sorted(set(ib) - set(ia), key=str)],
        "removed": [row(k, version=", ".join(sorted(ia[k]))) for k in sorted(set(ia) - set(ib), key=str)],
        "changed": [row(k, **{"from": ", ".join(sorted(ia[k])), "to": ", ".join(sorted(ib[k]))})
                    for k in sorted(set(ia) & set(ib), key=str) if ia[k] != ib[k]],
    }
