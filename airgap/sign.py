"""Countersigning a bundle: show what is signed, then add one signature in place.

The signed payload is the manifest, which never changes; only the signature
envelope at the end of the archive is rewritten (see :mod:`airgap.bundle`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from airgap import sbom
from airgap.bundle import Bundle, replace_signatures
from airgap.exceptions import IntegrityError
from airgap.inspect import human_size
from airgap.manifest import SIGNATURES_MEMBER, BundleManifest


@dataclass
class SignPlan:
    path: Path
    manifest: BundleManifest
    envelope: object
    key: object
    sboms: dict = field(default_factory=dict)  # image digest -> sbom.ImageSbom

    @property
    def signature_count(self) -> int:
        return len(self.envelope.signatures)

    def describe(self) -> str:
        m = self.manifest
        blob_bytes = sum(x.size for x in m.members if x.path.startswith("blobs/"))
        files = [x for x in m.members if x.path.startswith("files/")]
        lines = [
            f"You are signing the manifest of {m.name} {m.version} for target {m.target}",
            f"  manifest {m.digest}",
            f"  created {m.created}, expires {m.expires}, spec sha256:{m.spec_sha256[:16]}…",
            f"  {len(m.images)} images ({human_size(blob_bytes)} of blobs), {len(files)} files",
        ]
        for i in m.images:
            lines.append(f"    {i.ref} -> {i.digest}")
            lines.append(f"      {sbom.count_text(self.sboms.get(i.digest))}")
        lines.append(f"  existing signatures: {len(self.envelope.signatures)}; signing key {self.key.public_key.label}")
        lines.append("  Signing vouches for these digests; it does not check the content (run 'airgap verify').")
        return "\n".join(lines)

    def commit(self) -> None:
        self.envelope.add_signature(self.key, artifact=SIGNATURES_MEMBER)
        replace_signatures(self.path, self.envelope.to_bytes())


def prepare(path: str | os.PathLike, key) -> SignPlan:
    with Bundle.open(path) as bundle:
        manifest = bundle.manifest()
        envelope = bundle.envelope()
        if envelope.payload != bundle.manifest_bytes:
            raise IntegrityError(SIGNATURES_MEMBER, "the signed payload is not the bundle's manifest.json; refusing to sign")
        sboms = sbom.read_bundle(bundle, manifest)
    return SignPlan(Path(path), manifest, envelope, key, sboms)
