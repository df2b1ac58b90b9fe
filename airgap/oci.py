"""OCI image-spec documents: media types, descriptors, manifests and indexes.

Parsing here is strict because these documents decide which blobs an image is
made of: a descriptor with an unknown digest algorithm, upper-case hex, a
negative size or a media type that does not match the document it points at is
an error, never something to be normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from airgap import caps
from airgap._internal import digest as _digest
from airgap._internal.jsonutil import loads_strict
from airgap.exceptions import FormatError, InvalidValueError

__all__ = [
    "ALL_MANIFEST_TYPES",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "Descriptor",
    "INDEX_TYPES",
    "ImageIndex",
    "ImageManifest",
    "LAYOUT_VERSION",
    "MANIFEST_TYPES",
    "MAX_BLOB_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_INDEX_BYTES",
    "MAX_MANIFEST_BYTES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Platform",
    "REF_NAME",
    "blob_path",
    "check_config",
    "check_digest",
    "check_layout_file",
    "layout_file",
    "parse_document",
    "parse_layout_index",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ALL_MANIFEST_TYPES = INDEX_TYPES + MANIFEST_TYPES
LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_MANIFEST_BYTES = caps.MAX_DOCUMENT_BYTES  # the distribution spec's recommended limit
MAX_INDEX_BYTES = caps.MAX_DOCUMENT_BYTES
# The largest blob a bundle may carry: the manifest's member size cap.  Build refuses
# a descriptor above it before a byte is fetched, so a claimed 2^62-byte layer costs nothing.
MAX_BLOB_BYTES = caps.MAX_MEMBER_BYTES
MAX_CONFIG_BYTES = caps.MAX_DOCUMENT_BYTES  # configs are parsed too (Go reads them); real ones are kilobytes
_MAX_SIZE = 2**63 - 1  # Go decodes descriptor sizes into int64

_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z")


def check_digest(value: Any, artifact: str, where: str = "digest") -> str:
    if not isinstance(value, str):
        raise FormatError(artifact, f"{where} is not a string")
    if not _digest.is_digest(value):
        algo = value.split(":", 1)[0] if ":" in value else value
        if algo != "sha256":
            raise FormatError(artifact, f"{where} {value!r}: unsupported digest algorithm (only sha256)")
        raise FormatError(artifact, f"{where} {value!r}: not 64 lower-case hex digits")
    return value


def blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Platform) -> bool:
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or other.variant is None or self.variant == other.variant


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = None

    @classmethod
    def parse(cls, d: Any, artifact: str, where: str) -> Descriptor:
        if not isinstance(d, dict):
            raise FormatError(artifact, f"{where} is not an object")
        mt = d.get("mediaType")
        if not isinstance(mt, str) or not _MEDIA_TYPE.match(mt):
            raise FormatError(artifact, f"{where}.mediaType {mt!r} is not a valid media type")
        digest = check_digest(d.get("digest"), artifact, f"{where}.digest")
        size = d.get("size")
        if type(size) is not int or not 0 <= size <= _MAX_SIZE:
            raise FormatError(artifact, f"{where}.size {size!r} is not a non-negative 64-bit integer")
        plat = None
        if "platform" in d:
            p = d["platform"]
            if not isinstance(p, dict) or not isinstance(p.get("os"), str) or not isinstance(p.get("architecture"), str):
                raise FormatError(artifact, f"{where}.platform needs string os and architecture")
            variant = p.get("variant")
            if variant is not None and not isinstance(variant, str):
                raise FormatError(artifact, f"{where}.platform.variant is not a string")
            plat = Platform(p["os"], p["architecture"], variant or None)
        ann = d.get("annotations")
        if ann is not None and (not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values())):
            raise FormatError(artifact, f"{where}.annotations must map strings to strings")
        return cls(mt, digest, size, plat, ann)


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]


def parse_document(data: bytes, artifact: str, expected_media_type: str | None = None) -> ImageManifest | ImageIndex:
    """Parse an image manifest or index; check it is what its descriptor claimed."""
    doc = loads_strict(data, artifact, max_size=MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict):
        raise FormatError(artifact, "not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise FormatError(artifact, f"schemaVersion {doc.get('schemaVersion')!r} is not 2")
    declared = doc.get("mediaType")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise FormatError(artifact, "both an image index (manifests) and an image manifest (config, layers)")
    if "manifests" in doc:
        kind = "index"
        media_type = declared or OCI_INDEX
        allowed = INDEX_TYPES
    elif "layers" in doc or "config" in doc:
        kind = "manifest"
        media_type = declared or OCI_MANIFEST
        allowed = MANIFEST_TYPES
    else:
        raise FormatError(artifact, "neither an image manifest nor an image index")
    if media_type not in allowed:
        raise FormatError(artifact, f"mediaType {media_type!r} does not fit an image {kind}")
    if expected_media_type is not None and expected_media_type != media_type:
        raise FormatError(artifact, f"descriptor says {expected_media_type!r} but the document is {media_type!r}")
    if kind == "index":
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise FormatError(artifact, "manifests is not a list")
        descs = tuple(Descriptor.parse(m, artifact, f"manifests[{i}]") for i, m in enumerate(items))
        for i, d in enumerate(descs):
            if d.media_type not in ALL_MANIFEST_TYPES:
                raise FormatError(artifact, f"manifests[{i}].mediaType {d.media_type!r} is not a manifest type")
        return ImageIndex(media_type, descs)
    config = Descriptor.parse(doc.get("config"), artifact, "config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise FormatError(artifact, "layers is not a list")
    layers = tuple(Descriptor.parse(l, artifact, f"layers[{i}]") for i, l in enumerate(layers_raw))
    return ImageManifest(media_type, config, layers)


def parse_layout_index(data: bytes, artifact: str = "index.json") -> tuple[Descriptor, ...]:
    """The OCI layout's top-level index.json."""
    doc = parse_document(data, artifact)
    if not isinstance(doc, ImageIndex):
        raise FormatError(artifact, "index.json is not an image index")
    return doc.manifests


def check_config(data: bytes, artifact: str) -> None:
    """An image config: airgap uses none of it, but podman and containerd read it with
    Go's encoding/json, so it must parse as strictly as every other document."""
    doc = loads_strict(data, artifact, max_size=MAX_CONFIG_BYTES)
    if not isinstance(doc, dict):
        raise FormatError(artifact, "image config is not a JSON object")


def layout_file() -> bytes:
    return b'{"imageLayoutVersion":"' + LAYOUT_VERSION.encode() + b'"}'


def check_layout_file(data: bytes, artifact: str = "oci-layout") -> None:
    doc = loads_strict(data, artifact, max_size=4096)
    if doc != {"imageLayoutVersion": LAYOUT_VERSION}:
        raise FormatError(artifact, f"unsupported OCI layout {doc!r}")
