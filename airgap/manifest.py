"""The bundle manifest: the one document that pins everything in a bundle.

Signatures are made over its exact canonical-JSON bytes.  It lists every tar
member except itself and the signature envelope (path, size, sha256, mode), every
image (original reference, manifest digest, platforms) and where the bundle came
from (spec digest, toolkit version, base of a differential bundle).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from airgap import BUNDLE_FORMAT_VERSION, caps
from airgap._internal import schema, tarfmt
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.text import check_printable
from airgap.exceptions import FormatError, InputError, InvalidValueError

__all__ = [
    "BaseRecord",
    "BundleManifest",
    "ImageRecord",
    "LAYOUT_REGISTRY",
    "MANIFEST_MEMBER",
    "MemberRecord",
    "Names",
    "SIGNATURES_MEMBER",
    "check_image_names",
    "names_of",
]

MANIFEST_MEMBER = "manifest.json"
SIGNATURES_MEMBER = "signatures.json"
LAYOUT_REGISTRY = "oci-layout"  # the registry field of an image taken from a local OCI layout
_TYPE = "airgap-bundle-manifest"


def _validator():
    # The caps are read at every call (not at import), so the schema and the
    # rest of the format always agree on them; the compiled validator is cached per caps.
    return _compiled(caps.MAX_MEMBERS, caps.MAX_IMAGES, caps.MAX_EXTERNAL_BLOBS, caps.MAX_MEMBER_BYTES)


@lru_cache(maxsize=4)
def _compiled(members: int, images: int, external: int, member_bytes: int) -> schema.Validator:
    doc = json.loads(resources.files("airgap").joinpath("schemas/manifest.schema.json").read_text("utf-8"))
    doc["$defs"]["size"]["maximum"] = member_bytes
    props = doc["properties"]
    props["members"]["maxItems"] = members
    props["images"]["maxItems"] = images
    props["external_blobs"]["maxItems"] = external
    return schema.Validator(doc)


@dataclass(frozen=True)
class Names:
    """What an image's approved reference says: where it came from and the name import gives it."""

    layout_ref: str
    registry: str
    repository: str
    tag: str | None
    pinned: str | None  # the digest the reference pins, if any
    internal: str | None = None  # ALIAS/PATH of a reference written with a ``sources`` alias

    @property
    def destination(self) -> str:
        """The repository path in the internal registry (without the registry host)."""
        if self.internal is not None:
            return self.internal
        if self.registry == LAYOUT_REGISTRY:
            return f"local/{self.repository}"
        from airgap.reference import Reference, internal_repository

        return internal_repository(Reference(self.registry, self.repository, self.tag, None))


def names_of(ref: str, source: str | None = None) -> Names:
    """Derive every name of an image from its reference (``ValueError`` if it cannot be).

    ``build`` fills an image record's registry, repository, tag and layout_ref
    from this, and ``verify`` refuses a record whose fields say anything else,
    so the name an officer is shown (``ref``) is the name import writes.

    *source* is what the reference's alias stood for at build (the spec's
    ``sources: {ALIAS: HOST[:PORT][/PREFIX]}``, recorded as the image's
    ``source``): ``ALIAS/PATH:TAG`` was pulled from ``SOURCE/PATH:TAG`` and is
    named ``ALIAS/PATH`` inside the bundle and the internal registry, whatever
    the source was.
    """
    if source is not None:
        names = _aliased(ref, source)
    elif ref.startswith("oci:"):
        rel, _, tag = ref[len("oci:"):].rpartition(":")
        name = PurePosixPath(rel).name if rel else ""
        if not tag or not name or name == "..":
            raise InvalidValueError(f"{ref!r}: an OCI layout reference is oci:<directory>:<tag>, and the directory's "
                                    "name becomes the internal repository (local/<name>)")
        names = Names(ref, LAYOUT_REGISTRY, name, tag, None)
    else:
        from airgap.reference import parse_reference

        try:
            parsed = parse_reference(ref)
        except InputError as exc:
            raise InvalidValueError(str(exc)) from None
        names = Names(str(parsed), parsed.registry, parsed.repository, parsed.tag, parsed.digest)
    from airgap.reference import parse_reference

    try:
        parse_reference(f"localhost/{names.destination}" + (f":{names.tag}" if names.tag else ""))
    except InputError:
        raise InvalidValueError(f"{ref!r}: the internal name {names.destination!r} is not a valid repository path "
                                "(lower-case letters, digits, '.', '_', '-')") from None
    return names


_ALIAS_RE = re.compile(r"(?!localhost$)[a-z0-9]+(?:[_-][a-z0-9]+)*")


def _aliased(ref: str, source: str) -> Names:
    """The names of ``ALIAS/PATH[:TAG][@DIGEST]`` pulled from *source* (``HOST[:PORT][/PREFIX]``)."""
    from airgap.reference import parse_reference

    alias, sep, rest = ref.partition("/")
    if not sep or not _ALIAS_RE.fullmatch(alias):
        raise InvalidValueError(f"{ref!r}: a reference through a source alias is ALIAS/PATH[:TAG][@DIGEST], the alias "
                                "in lower-case letters, digits, '_' and '-' (no '.' or ':', which make a registry host)")
    host = source.split("/", 1)[0]
    if not ("." in host or ":" in host or host == "localhost") or source.endswith("/") or "@" in source:
        raise InvalidValueError(f"{ref!r}: source {source!r} is not a registry HOST[:PORT] with an optional /PREFIX")
    try:
        pulled = parse_reference(f"{source}/{rest}")
        internal = parse_reference(f"localhost/{alias}/{rest}")
    except InputError as exc:
        raise InvalidValueError(f"{ref!r} through {alias} = {source}: {exc}") from None
    layout_ref = str(internal)[len("localhost/"):]
    return Names(layout_ref, pulled.registry, pulled.repository, pulled.tag, pulled.digest, internal=internal.repository)


def _check_printable(doc: dict[str, Any], artifact: str) -> None:
    """Everything ``sign``, ``inspect`` and ``diff`` show an officer: no controls, no bidi.

    Member paths are checked with the tar names (``tarfmt.check_name``); the other
    fields are fixed patterns in the schema.
    """
    fields = [("description", doc.get("description")), ("spec.name", doc["spec"]["name"]),
              ("toolkit.version", doc["toolkit"]["version"])]
    if doc["base"]:
        fields.append(("base.description", doc["base"]["description"]))
    for i, img in enumerate(doc["images"]):
        fields += [(f"images[{i}].{key}", img[key]) for key in ("ref", "layout_ref", "registry", "repository")]
        if img["sovereignty"]:
            fields.append((f"images[{i}].sovereignty.provider", img["sovereignty"]["provider"]))
            fields.append((f"images[{i}].sovereignty.reason", img["sovereignty"]["reason"]))
    for where, value in fields:
        if value is not None:
            check_printable(value, artifact, where)


@dataclass(frozen=True)
class MemberRecord:
    path: str
    size: int
    sha256: str
    mode: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": self.mode}


@dataclass(frozen=True)
class ImageRecord:
    ref: str  # the reference as written in the spec
    layout_ref: str  # org.opencontainers.image.ref.name inside the bundle's OCI layout
    registry: str
    repository: str
    tag: str | None
    digest: str  # what is carried, pushed and run: never rewritten
    media_type: str
    size: int
    platforms: tuple[str, ...]
    source_index: str | None = None  # multi-arch index the platform manifest was chosen from
    sovereignty: dict[str, str] | None = None  # provider + written reason, when allowed by exception
    source: str | None = None  # what the ref's alias stood for at build (sources: ALIAS: HOST[:PORT][/PREFIX])

    @property
    def names(self) -> Names:
        """The names derived from ``ref`` (and ``source``); verified equal to the record's own fields."""
        return names_of(self.ref, self.source)

    @property
    def destination(self) -> str:
        """The internal repository path import pushes to (its tag is ``tag``)."""
        return self.names.destination

    def destination_text(self) -> str:
        """What import writes, exactly, for people who approve it: ``REGISTRY/<path>:<tag> @ <digest>``."""
        tag = f":{self.tag}" if self.tag else " (no tag)"
        return f"REGISTRY/{self.destination}{tag} @ {self.digest}"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "ref": self.ref,
            "layout_ref": self.layout_ref,
            "registry": self.registry,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "platforms": list(self.platforms),
            "source_index": self.source_index,
            "sovereignty": self.sovereignty,
        }
        if self.source is not None:  # only for an aliased ref, so other records keep their bytes
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRecord:
        return cls(
            ref=d["ref"],
            layout_ref=d["layout_ref"],
            registry=d["registry"],
            repository=d["repository"],
            tag=d["tag"],
            digest=d["digest"],
            media_type=d["mediaType"],
            size=d["size"],
            platforms=tuple(d["platforms"]),
            source_index=d["source_index"],
            sovereignty=d["sovereignty"],
            source=d.get("source"),
        )


@dataclass(frozen=True)
class BaseRecord:
    """What a differential bundle was built against."""

    kind: str  # "inventory" | "bundle"
    digest: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "digest": self.digest, "description": self.description}


@dataclass(frozen=True)
class BundleManifest:
    name: str
    version: str
    target: str
    created: str
    expires: str
    spec_name: str
    spec_sha256: str
    toolkit_version: str
    images: tuple[ImageRecord, ...]
    members: tuple[MemberRecord, ...]
    base: BaseRecord | None = None
    external_blobs: tuple[tuple[str, int], ...] = ()
    description: str | None = None
    workloads: tuple = ()  # airgap.workloads.WorkloadRecord: Kubernetes manifests and the images they run
    packages: Any = None  # airgap.debs.PackageSet: the nodes' OS packages, or None
    _raw: bytes | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ encoding
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "_type": _TYPE,
            "format": BUNDLE_FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "created": self.created,
            "expires": self.expires,
            "spec": {"name": self.spec_name, "sha256": self.spec_sha256},
            "toolkit": {"name": "airgap", "version": self.toolkit_version},
            "base": self.base.to_dict() if self.base else None,
            "images": [i.to_dict() for i in self.images],
            "members": [m.to_dict() for m in self.members],
            "external_blobs": [{"digest": d, "size": s} for d, s in self.external_blobs],
        }
        if self.description is not None:
            d["description"] = self.description
        # Present only when used, so bundles without them keep the same bytes.
        if self.workloads:
            d["workloads"] = [w.to_dict() for w in self.workloads]
        if self.packages is not None:
            d["packages"] = self.packages.to_dict()
        return d

    def to_bytes(self) -> bytes:
        """The exact bytes that are signed: canonical JSON."""
        if self._raw is not None:
            return self._raw
        return canonical_bytes(self.to_dict())

    @property
    def digest(self) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    def member(self, path: str) -> MemberRecord | None:
        return self._by_path().get(path)

    def _by_path(self) -> dict[str, MemberRecord]:
        cache = self.__dict__.get("_index")
        if cache is None:
            cache = {m.path: m for m in self.members}
            object.__setattr__(self, "_index", cache)
        return cache

    # ------------------------------------------------------------------ decoding
    @classmethod
    def from_bytes(cls, data: bytes, artifact: str = MANIFEST_MEMBER) -> BundleManifest:
        """Parse and validate untrusted manifest bytes; FormatError names what is wrong."""
        doc = loads_strict(data, artifact, max_size=caps.MAX_MANIFEST_BYTES)
        if not isinstance(doc, dict):
            raise FormatError(artifact, "manifest is not a JSON object")
        if doc.get("_type") == _TYPE and doc.get("format") not in (None, BUNDLE_FORMAT_VERSION):
            raise FormatError(artifact, f"unsupported bundle format {doc.get('format')!r} (this toolkit reads {BUNDLE_FORMAT_VERSION})")
        err = schema.best_match(list(_validator().iter_errors(doc)))
        if err is not None:
            raise FormatError(artifact, schema.describe(err))
        if canonical_bytes(doc) != data:
            # Only one byte string may stand for a manifest: a re-encoded one could
            # carry a signature over different bytes than a reviewer looked at.
            raise FormatError(artifact, "manifest is not in canonical JSON form")
        _check_printable(doc, artifact)
        members = tuple(MemberRecord(m["path"], m["size"], m["sha256"], m["mode"]) for m in doc["members"])
        seen: set[str] = set()
        for i, m in enumerate(members):
            tarfmt.check_name(m.path, f"{artifact}: members[{i}].path {m.path!r}")
            key = tarfmt.collision_key(m.path)
            if key in seen:
                raise FormatError(artifact, f"members[{i}].path {m.path!r} listed twice (or collides after normalisation)")
            seen.add(key)
            if m.path in (MANIFEST_MEMBER, SIGNATURES_MEMBER):
                raise FormatError(artifact, f"members[{i}].path {m.path!r} is reserved")
        images = tuple(ImageRecord.from_dict(i) for i in doc["images"])
        check_image_names(images, artifact)
        base = doc["base"]
        workloads, packages = _platform_sections(doc, members, artifact)
        return cls(
            name=doc["name"],
            version=doc["version"],
            target=doc["target"],
            created=doc["created"],
            expires=doc["expires"],
            spec_name=doc["spec"]["name"],
            spec_sha256=doc["spec"]["sha256"],
            toolkit_version=doc["toolkit"]["version"],
            images=images,
            members=members,
            base=BaseRecord(base["kind"], base["digest"], base["description"]) if base else None,
            external_blobs=tuple((b["digest"], b["size"]) for b in doc["external_blobs"]),
            description=doc.get("description"),
            workloads=workloads,
            packages=packages,
            _raw=data,
        )


def check_image_names(images: tuple[ImageRecord, ...], artifact: str = MANIFEST_MEMBER) -> None:
    """Every name field of every image must be what its ``ref`` says; no two images may share a destination."""
    seen: dict[tuple[str, str | None], int] = {}
    for i, img in enumerate(images):
        try:
            names = names_of(img.ref, img.source)
        except ValueError as exc:
            raise FormatError(artifact, f"images[{i}].ref: {exc}") from None
        for field_, got, want in (("layout_ref", img.layout_ref, names.layout_ref), ("registry", img.registry, names.registry),
                                  ("repository", img.repository, names.repository), ("tag", img.tag, names.tag)):
            if got != want:
                raise FormatError(artifact, f"images[{i}].{field_} is {got!r} but its ref {img.ref!r} says {want!r}: "
                                            "import would write another name than the one approved")
        if names.pinned is not None and names.pinned not in (img.digest, img.source_index):
            raise FormatError(artifact, f"images[{i}].digest {img.digest} is not the digest its ref {img.ref!r} pins")
        key = (names.destination, names.tag)
        if names.tag is not None and key in seen:
            raise FormatError(artifact, f"images[{i}] and images[{seen[key]}] would both be tagged "
                                        f"{names.destination}:{names.tag}")
        seen[key] = i


def _platform_sections(doc: dict[str, Any], members: tuple[MemberRecord, ...], artifact: str) -> tuple[tuple, Any]:
    """Workloads and packages: every file they name is a member, every image one the bundle carries."""
    paths = {m.path for m in members}
    images = {(i["layout_ref"], i["digest"]) for i in doc["images"]}
    records: tuple = ()
    if "workloads" in doc:
        from airgap import workloads  # start-up: only needed when the manifest has workloads (imports yaml)

        records = tuple(workloads.WorkloadRecord.from_dict(w) for w in doc["workloads"])
    names = [w.name for w in records]
    if len(set(names)) != len(names):
        raise FormatError(artifact, "workloads: a workload name appears twice")
    for w in records:
        for f in w.files:
            if f not in paths or not f.startswith(f"files/workloads/{w.name}/"):
                raise FormatError(artifact, f"workloads {w.name}: {f} is not one of its members")
        for i in w.images:
            if (i.image, i.digest) not in images:
                raise FormatError(artifact, f"workloads {w.name}: {i.object} runs {i.image}@{i.digest}, "
                                            "which the bundle does not carry")
    packages = None
    if "packages" in doc:
        from airgap import debs  # start-up: only needed when the manifest has packages (imports subprocess)

        packages = debs.PackageSet.from_dict(doc["packages"])
        for path in (*packages.index, *(d.path for d in packages.debs)):
            if path not in paths:
                raise FormatError(artifact, f"packages: {path} is not a member of the bundle")
    return records, packages
