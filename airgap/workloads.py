"""Kubernetes workloads in a bundle: read, pinned to the bundle's images, rendered for the internal registry.

A workload is a set of Kubernetes manifests (Pod or Deployment and friends,
ConfigMap, Service): the same files a Haven cluster applies.  The engineer
writes them next to the spec, naming images the way the spec's ``images:``
does.  ``build`` carries the files unchanged under ``files/workloads/<name>/``
and records in the signed manifest every object and every image reference it
found, with the bundle image (and digest) each one resolved to.  ``render``
(isolated side, after verification) reads the files again, refuses anything
that differs from that record, and writes each workload as one YAML stream in
which every image is ``<internal registry>/<internal repository>@sha256:...``:
exactly what was signed, in the place it was imported to.

Every place in an object that can make a node pull is known here (containers,
init and ephemeral containers, image volumes) and rewritten; a kind whose
image fields airgap does not know is refused, and so is an ``image`` key
anywhere else in a pod-bearing object, so nothing is left to pull by tag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airgap._internal import schema, strictyaml
from airgap._internal.text import plural
from airgap.exceptions import FormatError

__all__ = ["KINDS", "ImageUse", "WorkloadImage", "WorkloadRecord", "parse", "scan", "rewrite", "dump"]

KINDS: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("v1", "Pod"): ("spec",),
    ("apps/v1", "Deployment"): ("spec", "template", "spec"),
    ("apps/v1", "StatefulSet"): ("spec", "template", "spec"),
    ("apps/v1", "DaemonSet"): ("spec", "template", "spec"),
    ("batch/v1", "Job"): ("spec", "template", "spec"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
    ("v1", "ConfigMap"): None,
    ("v1", "Service"): None,
}
"""(apiVersion, kind) that a workload may hold -> path of its pod spec (None: it runs nothing)."""

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
MAX_WORKLOAD_BYTES = 1 << 20
"""A workload file larger than this is refused (manifests are a few kilobytes)."""

_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class ImageUse:
    """One image reference found in a workload's objects."""

    object: str  # "Deployment/pilot-status"
    field: str  # "spec.template.spec.containers[0].image"
    ref: str  # as written in the file


@dataclass(frozen=True)
class WorkloadImage:
    """An image reference of a workload and the bundle image it resolved to at build."""

    object: str
    field: str
    ref: str
    image: str  # the bundle image's layout_ref (its name inside the bundle)
    digest: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.object, "field": self.field, "ref": self.ref, "image": self.image, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkloadImage:
        return cls(d["object"], d["field"], d["ref"], d["image"], d["digest"])

    def use(self) -> ImageUse:
        return ImageUse(self.object, self.field, self.ref)


@dataclass(frozen=True)
class WorkloadRecord:
    """A workload as the signed manifest records it."""

    name: str
    files: tuple[str, ...]  # member paths, files/workloads/<name>/...
    objects: tuple[str, ...]  # "Kind/name", in file order
    images: tuple[WorkloadImage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "files": list(self.files), "objects": list(self.objects),
                "images": [i.to_dict() for i in self.images]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkloadRecord:
        return cls(d["name"], tuple(d["files"]), tuple(d["objects"]),
                   tuple(WorkloadImage.from_dict(i) for i in d["images"]))


def member_path(workload: str, rel: str) -> str:
    """Where a workload's file travels in the bundle."""
    return f"files/workloads/{workload}/{rel}"


# --------------------------------------------------------------------------- reading


def parse(data: bytes, artifact: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of one YAML file, read strictly (FormatError names the file and line)."""
    if len(data) > MAX_WORKLOAD_BYTES:
        raise FormatError(artifact, f"{plural(len(data), 'byte')}; a workload file may hold at most {MAX_WORKLOAD_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(artifact, f"not valid UTF-8 (byte {exc.start})") from None

    def error(where: str, message: str, line: int | None) -> FormatError:
        return FormatError(artifact, ": ".join(part for part in (where, f"line {line}" if line else "", message) if part))

    docs = strictyaml.load_all(text, artifact, error, "a Kubernetes manifest")
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise FormatError(artifact, f"document {i + 1} is not a Kubernetes object (a mapping with apiVersion and kind)")
    return docs


def object_name(doc: dict[str, Any], artifact: str) -> str:
    """``Kind/name`` of a known kind; FormatError for anything airgap cannot pin."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        raise FormatError(artifact, "an object without apiVersion and kind")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or len(name) > 253 or not _NAME_RE.fullmatch(name):
        raise FormatError(artifact, f"{kind}: metadata.name must be a DNS subdomain name (lower case, digits, '-', '.')")
    if (api, kind) not in KINDS:
        known = ", ".join(f"{k} ({a})" for a, k in KINDS)
        raise FormatError(artifact, f"{kind}/{name} ({api}): airgap does not know where this kind keeps images, so it "
                                    f"cannot pin them; a workload may hold {known}")
    return f"{kind}/{name}"


def _get(doc: Any, path: tuple) -> Any:
    """The value at *path* (mapping keys and list indexes), or None."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(doc, list) or key >= len(doc):
                return None
            doc = doc[key]
        elif isinstance(doc, dict):
            doc = doc.get(key)
        else:
            return None
    return doc


def _image_positions(doc: dict[str, Any], obj: str, artifact: str) -> list[tuple[tuple, str]]:
    """(path as keys and indexes, field text) of every image reference in a known object."""
    spec_path = KINDS[(doc["apiVersion"], doc["kind"])]
    if spec_path is None:
        return []
    pod = _get(doc, spec_path)
    where = schema.field_path(spec_path)
    if not isinstance(pod, dict):
        raise FormatError(artifact, f"{obj}: {where} must be a pod spec (a mapping)")
    out: list[tuple[tuple, str]] = []
    for lst in CONTAINER_LISTS:
        items = pod.get(lst, [])
        if not isinstance(items, list):
            raise FormatError(artifact, f"{obj}: {where}.{lst} must be a list")
        for i, c in enumerate(items):
            field = f"{where}.{lst}[{i}].image"
            if not isinstance(c, dict) or not isinstance(c.get("image"), str) or not c["image"]:
                raise FormatError(artifact, f"{obj}: {field} must be an image reference (every container names one: "
                                            "a container without an image would run whatever the node's default is)")
            out.append(((*spec_path, lst, i, "image"), field))
    volumes = pod.get("volumes", [])
    if not isinstance(volumes, list):
        raise FormatError(artifact, f"{obj}: {where}.volumes must be a list")
    for i, v in enumerate(volumes):
        if isinstance(v, dict) and "image" in v:
            field = f"{where}.volumes[{i}].image.reference"
            if not isinstance(v["image"], dict) or not isinstance(v["image"].get("reference"), str):
                raise FormatError(artifact, f"{obj}: {field} must be an image reference")
            out.append(((*spec_path, "volumes", i, "image", "reference"), field))
    if not out:
        raise FormatError(artifact, f"{obj}: runs no container")
    return out


def _stray_images(node: Any, path: tuple, known: set[tuple], obj: str, artifact: str) -> None:
    """Refuse an ``image`` key that is not at a known place: something else might pull it."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, key)
            if key in ("image", "images") and here not in known and (*here, "reference") not in known:
                field = schema.field_path(here)
                raise FormatError(artifact, f"{obj}: {field}: an image reference in a place airgap does not rewrite; "
                                            "it would be pulled as written, not from the internal registry by digest")
            _stray_images(value, here, known, obj, artifact)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _stray_images(value, (*path, i), known, obj, artifact)


def scan(docs: Iterable[dict[str, Any]], artifact: str, seen: set[str] | None = None) -> tuple[list[str], list[ImageUse]]:
    """(objects as ``Kind/name``, every image use) of a workload's documents; refuses duplicates and strays."""
    seen = set() if seen is None else seen
    objects: list[str] = []
    uses: list[ImageUse] = []
    for doc in docs:
        obj = object_name(doc, artifact)
        if obj in seen:
            raise FormatError(artifact, f"{obj} is defined twice in this workload")
        seen.add(obj)
        objects.append(obj)
        positions = _image_positions(doc, obj, artifact)
        if positions:
            _stray_images(doc, (), {p for p, _ in positions}, obj, artifact)
        uses += [ImageUse(obj, field, _get(doc, p)) for p, field in positions]
    return objects, uses


# --------------------------------------------------------------------------- writing


def rewrite(docs: list[dict[str, Any]], artifact: str, new_ref: Callable[[ImageUse], str]) -> list[dict[str, Any]]:
    """*docs* with every image reference replaced by ``new_ref(use)`` (in place, and returned)."""
    for doc in docs:
        obj = object_name(doc, artifact)
        for path, field in _image_positions(doc, obj, artifact):
            parent = _get(doc, path[:-1])
            parent[path[-1]] = new_ref(ImageUse(obj, field, parent[path[-1]]))
    return docs


def dump(docs: list[dict[str, Any]], header: str) -> bytes:
    """One deterministic YAML stream: *header* comment lines, then the documents in order."""
    import yaml

    body = "".join(
        "---\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)
        for doc in docs
    )
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return (comment + body).encode("utf-8")


def describe(records: Iterable[WorkloadRecord]) -> list[str]:
    """Lines for people who approve a bundle: each workload, its objects, and every image it runs.

    ``inspect`` and ``sign`` show these; they come from the signed manifest only.
    """
    lines: list[str] = []
    for w in records:
        lines.append(f"  {w.name}: {', '.join(w.objects)}")
        for i in w.images:
            lines.append(f"      {i.object} {i.field}: {i.ref} -> {i.digest}")
    return lines


def resolve(ref: str, images: Iterable[tuple[str, str, Any]]) -> Any | None:
    """The bundle image a workload's reference names, or None.

    *images* holds (reference as written in the spec, reference after
    substitution, image record).  A reference names an image when it is
    written the same way as the spec writes it, or names the same registry,
    repository and tag, or pins the digest the bundle carries.  Nothing else
    matches: a bare ``busybox`` is ``docker.io/library/busybox:latest``, as a
    node would read it.
    """
    from airgap.exceptions import InputError
    from airgap.reference import parse_reference

    images = list(images)
    for written, resolved, record in images:
        if ref in (written, resolved):
            return record
    try:
        parsed = parse_reference(ref)
    except InputError:
        return None
    for _, _, record in images:
        if (record.registry, record.repository) != (parsed.registry, parsed.repository):
            continue
        if parsed.digest is not None:
            if parsed.digest in (record.digest, record.source_index) and parsed.tag in (None, record.tag):
                return record
        elif parsed.tag == record.tag:
            return record
    return None
