"""Pulling images for a build: where they come from, and what they are made of.

Resolving an image fetches its documents (manifest or index, the index's
children, a config whose platform must be checked) and lists the blobs the
bundle needs.  Everything a source says is checked before it is used:

* every document (manifests, indexes, and image configs, which are parsed as
  verify parses them) is fetched once per digest, capped at its descriptor's
  size (or the 4 MiB document cap) and checked against the descriptor's
  digest, size and media type;
* every blob descriptor is refused above the bundle's 1 TiB blob cap before a
  byte is fetched, and descriptors that disagree on a blob's size are refused;
* the number of distinct blobs is capped as they are found, and documents are
  held in memory only up to a fixed budget (then spooled to a temporary file),
  so no index, however large or repetitive, grows the builder's memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from airgap import caps, oci
from airgap._internal.fsutil import read_capped
from airgap._internal.jsonutil import loads_strict
from airgap._internal.text import plural
from airgap.exceptions import FormatError, InputError, IntegrityError, SpecError

__all__ = ["Blob", "Documents", "ImageOrigin", "LayoutOrigin", "RegistryOrigin", "Resolved", "Resolver"]

FILE_CHUNK = 1024 * 1024
DOCUMENT_BUDGET = 32 * 1024 * 1024
"""Bytes of fetched documents held in memory; the rest waits in a temporary file."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...
    def seek(self, pos: int) -> None: ...
    def tell(self) -> int: ...


# --------------------------------------------------------------------------- documents


class Documents:
    """Manifests and configs already fetched and checked, by digest.

    Held in memory up to *budget* bytes, then appended to an anonymous
    temporary file in *spool_dir* (next to the output, not a RAM-backed /tmp),
    which disappears when closed or when the process dies.
    """

    def __init__(self, spool_dir: Path, budget: int = DOCUMENT_BUDGET) -> None:
        self._dir, self._budget = spool_dir, budget
        self._memory: dict[str, bytes] = {}
        self._held = 0
        self._spooled: dict[str, tuple[int, int]] = {}
        self._spool: IO[bytes] | None = None

    def __contains__(self, digest: str) -> bool:
        return digest in self._memory or digest in self._spooled

    def put(self, digest: str, data: bytes) -> None:
        if digest in self:
            return
        if self._held + len(data) <= self._budget:
            self._memory[digest] = data
            self._held += len(data)
            return
        if self._spool is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=self._dir, prefix=".airgap-documents.")
        offset = self._spool.seek(0, io.SEEK_END)
        self._spool.write(data)
        self._spooled[digest] = (offset, len(data))

    def get(self, digest: str) -> bytes | None:
        data = self._memory.get(digest)
        if data is not None or digest not in self._spooled:
            return data
        assert self._spool is not None
        offset, size = self._spooled[digest]
        self._spool.flush()
        return os.pread(self._spool.fileno(), size, offset)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._memory.clear()


# --------------------------------------------------------------------------- origins


class ImageOrigin:
    """Where an image's documents and blobs come from."""

    label: str

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of the image a tag or digest names."""
        raise NotImplementedError

    def get_child(self, desc: oci.Descriptor) -> bytes:
        """An index's child manifest, checked against *desc*."""
        raise NotImplementedError

    def get_config(self, desc: oci.Descriptor) -> bytes:
        """A small blob (an image config), checked against *desc*."""
        raise NotImplementedError

    def copy_blob(self, digest: str, size: int, sink: Sink) -> None:
        raise NotImplementedError


class RegistryOrigin(ImageOrigin):
    def __init__(self, client, repository: str):
        self.client = client
        self.repository = repository
        self.label = f"{client.registry}/{repository}"

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        m = self.client.get_manifest(self.repository, reference)
        return m.data, m.media_type, m.digest

    def get_child(self, desc: oci.Descriptor) -> bytes:
        # Capped at, and checked against, the descriptor's size and digest.
        m = self.client.get_manifest(self.repository, desc.digest, (desc.media_type,), size=desc.size)
        return m.data

    def get_config(self, desc: oci.Descriptor) -> bytes:
        # A config is a blob whatever media type its descriptor claims: never /manifests/.
        return self.client.read_blob(self.repository, desc.digest, desc.size, cap=oci.MAX_CONFIG_BYTES)

    def copy_blob(self, digest: str, size: int, sink: Sink) -> None:
        self.client.fetch_blob_into(self.repository, digest, size, sink)


class LayoutOrigin(ImageOrigin):
    """A local OCI image layout (``oci:path:tag`` in the spec)."""

    def __init__(self, layout: Path):
        self.layout = layout
        self.label = f"oci:{layout}"
        # Capped before parsing: a local layout is input like any other, and a
        # gigabyte index.json must not be read whole to learn it is too large.
        oci.check_layout_file(read_capped(layout / "oci-layout", 4096, "an OCI layout's oci-layout file"),
                              f"{layout}/oci-layout")
        self.index = oci.parse_layout_index(read_capped(layout / "index.json", oci.MAX_INDEX_BYTES,
                                                        "an OCI layout's index.json"), f"{layout}/index.json")

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
            raise InputError(f"{self.label}: {reference!r} names {plural(len(matches), 'image')} in index.json")
        desc = matches[0]
        return self.get_child(desc), desc.media_type, desc.digest

    def get_child(self, desc: oci.Descriptor) -> bytes:
        path = self._path(desc.digest)
        if not path.is_file():
            raise InputError(f"{self.label}: blob {desc.digest} is missing")
        if desc.size > oci.MAX_MANIFEST_BYTES:
            raise FormatError(f"{self.label}@{desc.digest}", f"document of {desc.size} bytes exceeds the cap of "
                                                             f"{oci.MAX_MANIFEST_BYTES}")
        with open(path, "rb") as f:
            data = f.read(desc.size + 1)
        if len(data) != desc.size or "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
            raise IntegrityError(f"{self.label}@{desc.digest}", "content does not match its descriptor")
        return data

    get_config = get_child

    def copy_blob(self, digest: str, size: int, sink: Sink) -> None:
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
class Blob:
    digest: str
    size: int
    media_type: str
    origin: ImageOrigin | None = None
    manifest: bool = False  # an image manifest or index: always carried, even in a differential bundle
    stored: bool = False  # its bytes are in the Documents store (fetched and checked while resolving)


@dataclass(frozen=True)
class Resolved:
    """One image: what the manifest records about it."""

    digest: str
    media_type: str
    size: int
    platforms: tuple[str, ...]
    source_index: str | None


class Resolver:
    """Resolves images into one set of blobs (by digest) for the whole bundle."""

    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.blobs: dict[str, Blob] = {}

    def _add(self, blob: Blob, artifact: str) -> None:
        prev = self.blobs.get(blob.digest)
        if prev is None:
            if len(self.blobs) >= caps.MAX_MEMBERS:
                raise FormatError(artifact, f"more than {caps.MAX_MEMBERS} distinct blobs: over the bundle's member cap")
            self.blobs[blob.digest] = blob
        elif prev.size != blob.size:
            raise IntegrityError(blob.digest, f"two descriptors disagree on its size ({prev.size} and {blob.size})")
        elif (blob.manifest and not prev.manifest) or (blob.stored and not prev.stored):
            blob.manifest = blob.manifest or prev.manifest
            self.blobs[blob.digest] = blob

    def _document(self, origin: ImageOrigin, desc: oci.Descriptor, config: bool) -> bytes:
        data = self.documents.get(desc.digest)
        if data is None:
            data = origin.get_config(desc) if config else origin.get_child(desc)
            self.documents.put(desc.digest, data)
        return data

    @staticmethod
    def _check_caps(manifest: oci.ImageManifest, artifact: str) -> None:
        """Refuse a blob above the bundle's cap before anything of the image is fetched."""
        for where, d in (("config", manifest.config), *((f"layers[{i}]", l) for i, l in enumerate(manifest.layers))):
            if d.size > oci.MAX_BLOB_BYTES:
                raise FormatError(artifact, f"{where} ({d.digest}): size {d.size} exceeds the cap of "
                                            f"{oci.MAX_BLOB_BYTES} bytes (1 TiB) for a blob")

    def _add_manifest_blobs(self, origin: ImageOrigin, manifest: oci.ImageManifest, artifact: str) -> None:
        for d in manifest.blobs():
            self._add(Blob(d.digest, d.size, d.media_type, origin, stored=d.digest in self.documents), artifact)

    def _config(self, origin: ImageOrigin, manifest: oci.ImageManifest, artifact: str) -> bytes:
        """The config bytes, parsed as verify will parse them (kept, so they are fetched once)."""
        if manifest.config.size > oci.MAX_CONFIG_BYTES:
            raise FormatError(f"{artifact} config", f"{manifest.config.size} bytes exceeds the cap of {oci.MAX_CONFIG_BYTES}")
        config = self._document(origin, manifest.config, config=True)
        oci.check_config(config, f"{artifact} config")
        return config

    def _platform(self, origin: ImageOrigin, manifest: oci.ImageManifest, artifact: str) -> oci.Platform | None:
        """The platform the image's config names."""
        doc = loads_strict(self._config(origin, manifest, artifact), f"{artifact} config", max_size=oci.MAX_CONFIG_BYTES)
        if isinstance(doc, dict) and isinstance(doc.get("os"), str) and isinstance(doc.get("architecture"), str):
            return oci.Platform(doc["os"], doc["architecture"], doc.get("variant") or None)
        return None

    def resolve(self, origin: ImageOrigin, reference: str, wanted: list[str] | None, artifact: str) -> Resolved:
        """Fetch the documents of one image and add the blobs it needs."""
        data, media_type, digest = origin.get_manifest(reference)
        doc = oci.parse_document(data, artifact, media_type)
        self.documents.put(digest, data)
        top = Blob(digest, len(data), media_type, origin, manifest=True, stored=True)
        wanted_p = [oci.Platform.parse(p) for p in wanted] if wanted else None
        if isinstance(doc, oci.ImageManifest):
            self._check_caps(doc, artifact)
            plats: tuple[str, ...] = ()
            if wanted_p:
                plat = self._platform(origin, doc, artifact)
                if plat is None or not any(w.matches(plat) for w in wanted_p):
                    raise SpecError(artifact, f"image is for {plat or 'an unknown platform'}, spec asks for {', '.join(wanted or [])}")
                plats = (str(plat),)
            else:
                self._config(origin, doc, artifact)
            self._add(top, artifact)
            self._add_manifest_blobs(origin, doc, artifact)
            return Resolved(digest, media_type, len(data), plats, None)
        return self._resolve_index(origin, doc, top, wanted, wanted_p, artifact)

    def _resolve_index(self, origin: ImageOrigin, doc: oci.ImageIndex, top: Blob, wanted: list[str] | None,
                       wanted_p: list[oci.Platform] | None, artifact: str) -> Resolved:
        chosen: dict[str, oci.Descriptor] = {}  # each child once, however often the index lists it
        for i, d in enumerate(doc.manifests):
            if d.media_type in oci.INDEX_TYPES:
                raise FormatError(artifact, "nested image indexes are not supported")
            if d.size > oci.MAX_MANIFEST_BYTES:
                raise FormatError(artifact, f"manifests[{i}] ({d.digest}): size {d.size} exceeds the manifest cap "
                                            f"of {oci.MAX_MANIFEST_BYTES} bytes")
            if wanted_p is None or (d.platform and any(w.matches(d.platform) for w in wanted_p)):
                chosen.setdefault(d.digest, d)
        if wanted and wanted_p:
            missing = [w for w, p in zip(wanted, wanted_p) if not any(d.platform and p.matches(d.platform) for d in chosen.values())]
            if missing:
                available = sorted({str(d.platform) for d in doc.manifests if d.platform})
                raise SpecError(artifact, f"platform {', '.join(missing)} not in the index (available: {', '.join(available)})")
        for d in chosen.values():
            child = self._document(origin, d, config=False)
            cdoc = oci.parse_document(child, f"{artifact}@{d.digest}", d.media_type)
            assert isinstance(cdoc, oci.ImageManifest)
            self._check_caps(cdoc, f"{artifact}@{d.digest}")
            self._config(origin, cdoc, f"{artifact}@{d.digest}")
            self._add(Blob(d.digest, d.size, d.media_type, origin, manifest=True, stored=True), artifact)
            self._add_manifest_blobs(origin, cdoc, f"{artifact}@{d.digest}")
        platforms = tuple(dict.fromkeys(str(d.platform) for d in doc.manifests if d.platform and d.digest in chosen))
        if wanted_p is None or set(chosen) == {d.digest for d in doc.manifests}:
            self._add(top, artifact)
            return Resolved(top.digest, top.media_type, top.size, platforms, None)
        if len(chosen) == 1:
            # A strict subset of one platform: carry that platform's manifest, unchanged,
            # and record the index it came from.  Rewriting the index would change the
            # digest that runs.
            only = next(iter(chosen.values()))
            return Resolved(only.digest, only.media_type, only.size, platforms, top.digest)
        if len(wanted_p) == 1:
            raise SpecError(artifact, f"platform {wanted[0] if wanted else ''} matches {plural(len(chosen), 'different manifest')} "
                                      "in the index; pin the one you want by digest")
        raise SpecError(artifact, "choose one platform or all of them: a subset of several would need a rewritten index")
