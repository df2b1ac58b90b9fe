"""CycloneDX 1.5 JSON: writing one document per image, and reading it back strictly.

Deterministic: the same image gives the same bytes.  There is no timestamp,
and the serial number is a UUIDv5 of the document's own content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from airgap import __version__
from airgap._internal.jsonutil import loads_strict
from airgap.exceptions import FormatError

__all__ = [
    "Component",
    "ImageSbom",
    "MAX_SBOM_BYTES",
    "SCHEMA_URL",
    "SPEC_VERSION",
    "document",
    "read",
]

SPEC_VERSION = "1.5"
SCHEMA_URL = "http://cyclonedx.org/schema/bom-1.5.schema.json"
MAX_SBOM_BYTES = 64 * 1024 * 1024  # build refuses to write, and verify to read, more than this
_SERIAL_NAMESPACE = "6f0b8a44-6c1b-5a3e-9a55-a1e5b0a1d9c2"


@dataclass
class Component:
    purl: str
    name: str
    version: str
    platforms: set[str] = field(default_factory=set)
    locations: set[str] = field(default_factory=set)

    @property
    def type(self) -> str:
        return self.purl[4:].split("/", 1)[0]

    @property
    def arch(self) -> str | None:
        _, _, query = self.purl.partition("?")
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key == "arch":
                return unquote(value)
        return None


@dataclass
class ImageSbom:
    """What one SBOM says: the image, its packages, whether the list is known to be incomplete."""

    image_digest: str
    name: str
    components: list[Component]
    incomplete: bool
    notes: list[str]
    platforms: list[str]


def _props(name: str, values: Iterable[str]) -> list[dict[str, str]]:
    return [{"name": name, "value": v} for v in sorted(values)]


def document(sbom: ImageSbom, *, image_purl: str, reference: str) -> bytes:
    comps: list[dict[str, Any]] = []
    for c in sorted(sbom.components, key=lambda c: (c.type, c.name, c.version, c.purl)):
        comp: dict[str, Any] = {
            "type": "library",
            "bom-ref": c.purl,
            "name": c.name,
            "version": c.version,
            "purl": c.purl,
            "evidence": {"occurrences": [{"location": loc} for loc in sorted(c.locations)]},
        }
        if c.platforms:
            comp["properties"] = _props("airgap:platform", c.platforms)
        comps.append(comp)
    doc: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "airgap", "version": __version__}]},
            "component": {
                "type": "container",
                "bom-ref": image_purl,
                "name": sbom.name,
                "version": sbom.image_digest,
                "purl": image_purl,
                "properties": _props("airgap:reference", [reference]) + _props("airgap:platform", sbom.platforms),
            },
        },
        "components": comps,
        # "unknown": the package databases are listed in full, but files put into an
        # image without a package manager are not; "incomplete": a database was not read.
        "compositions": [{"aggregate": "incomplete" if sbom.incomplete else "unknown", "assemblies": [image_purl]}],
    }
    if sbom.notes:
        doc["metadata"]["properties"] = _props("airgap:note", sbom.notes)
    body = json.dumps(doc, sort_keys=True).encode()
    import uuid  # start-up: only writing an SBOM needs it (uuid imports platform); verify only reads

    doc["serialNumber"] = f"urn:uuid:{uuid.uuid5(uuid.UUID(_SERIAL_NAMESPACE), hashlib.sha256(body).hexdigest())}"
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True).encode() + b"\n"


def _need(cond: bool, artifact: str, what: str) -> None:
    if not cond:
        raise FormatError(artifact, f"not an airgap CycloneDX {SPEC_VERSION} SBOM: {what}")


def _values(obj: dict[str, Any], name: str, artifact: str, where: str) -> list[str]:
    """The values of *obj*'s properties called *name*.  Each must be a string: inspect,
    diff and sign sort and join them, so anything else would fail there, not here."""
    props = obj.get("properties", [])
    _need(isinstance(props, list) and all(isinstance(p, dict) for p in props), artifact, f"{where}.properties")
    values = [p.get("value") for p in props if p.get("name") == name]
    _need(all(isinstance(v, str) for v in values), artifact, f"{where}.properties: an {name} without a string value")
    return values


def read(data: bytes, artifact: str) -> ImageSbom:
    """Parse an SBOM member strictly enough to trust what inspect, diff and sign show from it."""
    doc = loads_strict(data, artifact, max_size=MAX_SBOM_BYTES)
    _need(isinstance(doc, dict), artifact, "not a JSON object")
    _need(doc.get("bomFormat") == "CycloneDX" and doc.get("specVersion") == SPEC_VERSION, artifact,
          f"bomFormat/specVersion are {doc.get('bomFormat')!r}/{doc.get('specVersion')!r}")
    meta = doc.get("metadata")
    _need(isinstance(meta, dict) and isinstance(meta.get("component"), dict), artifact, "no metadata.component")
    image = meta["component"]
    _need(isinstance(image.get("version"), str) and isinstance(image.get("name"), str), artifact,
          "metadata.component has no name and version (the image digest)")
    comps = doc.get("components", [])
    _need(isinstance(comps, list), artifact, "components is not a list")
    out = []
    for i, c in enumerate(comps):
        _need(isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("name", "version", "purl"))
              and c["purl"].startswith("pkg:"), artifact, f"components[{i}] lacks name, version or purl")
        evidence = c.get("evidence") or {}
        _need(isinstance(evidence, dict), artifact, f"components[{i}].evidence is not an object")
        occ = evidence.get("occurrences", [])
        _need(isinstance(occ, list) and all(isinstance(o, dict) and isinstance(o.get("location"), str) for o in occ),
              artifact, f"components[{i}].evidence.occurrences: each needs a location string")
        out.append(Component(c["purl"], c["name"], c["version"],
                             set(_values(c, "airgap:platform", artifact, f"components[{i}]")),
                             {o["location"] for o in occ}))
    notes = _values(meta, "airgap:note", artifact, "metadata")
    platforms = _values(image, "airgap:platform", artifact, "metadata.component")
    comp = doc.get("compositions") or [{}]
    incomplete = isinstance(comp, list) and any(isinstance(x, dict) and x.get("aggregate") == "incomplete" for x in comp)
    return ImageSbom(image["version"], image["name"], out, incomplete, notes, platforms)
