"""What the isolated side already holds: the input of a differential build.

An inventory lists, per repository of the internal registry, the tags and the
manifests it serves and every blob those manifests reference.  It is exported
on the isolated side (``airgap inventory``), carried back across the gap, and
given to ``airgap build --since``.  A bundle manifest that was imported (kept
in ``STATE/bundles/<name>/manifest.json``) serves the same purpose.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import oci
from airgap._internal import timefmt
from airgap._internal.fsutil import atomic_write, read_capped
from airgap._internal.jsonutil import loads_strict, pretty_bytes
from airgap.exceptions import FormatError, InputError, NotFoundError

__all__ = [
    "Inventory",
    "MAX_INVENTORY_BYTES",
    "collect",
    "write",
]

_TYPE = "airgap-inventory"
MAX_INVENTORY_BYTES = 64 * 1024 * 1024


@dataclass
class Inventory:
    kind: str  # "inventory" | "bundle"
    digest: str
    description: str
    blobs: dict[str, int]  # digest -> size

    def blob_digests(self) -> set[str]:
        return set(self.blobs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Inventory:
        p = Path(path)
        hint = "give what 'airgap inventory' wrote, or a bundle's manifest.json"
        data = read_capped(p, MAX_INVENTORY_BYTES, "an inventory",
                           too_large=lambda m: InputError(f"{m}; {hint}"))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            doc = loads_strict(data, str(p), max_size=MAX_INVENTORY_BYTES)
        except FormatError as exc:
            raise InputError(f"{p}: not an inventory ({exc.reason}); {hint}") from None
        if isinstance(doc, dict) and doc.get("_type") == _TYPE:
            blobs = {}
            for i, b in enumerate(doc.get("blobs", [])):
                d = oci.check_digest(b.get("digest") if isinstance(b, dict) else None, str(p), f"blobs[{i}].digest")
                size = b.get("size")
                if type(size) is not int or size < 0:
                    raise FormatError(str(p), f"blobs[{i}].size is not a non-negative integer")
                blobs[d] = size
            return cls("inventory", digest, f"inventory of {doc.get('registry')} at {doc.get('created')}", blobs)
        if isinstance(doc, dict) and doc.get("_type") == "airgap-bundle-manifest":
            from airgap.manifest import BundleManifest

            m = BundleManifest.from_bytes(data, str(p))
            blobs = {"sha256:" + x.path.rsplit("/", 1)[1]: x.size for x in m.members if x.path.startswith("blobs/sha256/")}
            blobs.update(dict(m.external_blobs))
            return cls("bundle", m.digest, f"bundle {m.name} {m.version}", blobs)
        raise InputError(f"{p}: neither an airgap inventory nor a bundle manifest; {hint}")


def collect(client, *, now: datetime | None = None, repositories: list[str] | None = None) -> dict[str, Any]:
    """Walk the registry's catalog and describe everything it serves."""
    now = now or datetime.now(UTC)
    repos: dict[str, Any] = {}
    blobs: dict[str, int] = {}
    for repo in sorted(repositories or client.catalog()):
        tags: dict[str, str] = {}
        manifests: set[str] = set()
        for tag in sorted(client.list_tags(repo)):
            m = client.get_manifest(repo, tag)
            tags[tag] = m.digest
            _walk(client, repo, m.data, m.media_type, m.digest, manifests, blobs)
        repos[repo] = {"tags": tags, "manifests": sorted(manifests)}
    return {
        "_type": _TYPE,
        "registry": client.registry,
        "created": timefmt.format_time(now),
        "repositories": repos,
        "blobs": [{"digest": d, "size": blobs[d]} for d in sorted(blobs)],
    }


def _walk(client, repo: str, data: bytes, media_type: str, digest: str, manifests: set[str], blobs: dict[str, int]) -> None:
    manifests.add(digest)
    doc = oci.parse_document(data, f"{client.registry}/{repo}@{digest}", media_type)
    if isinstance(doc, oci.ImageIndex):
        for d in doc.manifests:
            if d.digest in manifests:
                continue
            try:
                # Checked against the index's descriptor (size, digest, media type) like any fetch.
                child = client.get_manifest(repo, d.digest, (d.media_type,), size=d.size)
            except NotFoundError:
                continue  # a platform not imported is simply not held; wrong content is an error
            _walk(client, repo, child.data, child.media_type, child.digest, manifests, blobs)
    else:
        for b in doc.blobs():
            blobs[b.digest] = b.size


def write(doc: dict[str, Any], path: str | os.PathLike, *, force: bool = False) -> str:
    """Write atomically (over an existing file only with *force*); return the inventory's digest."""
    data = pretty_bytes(doc)
    atomic_write(path, data, overwrite=force)
    return "sha256:" + hashlib.sha256(data).hexdigest()
