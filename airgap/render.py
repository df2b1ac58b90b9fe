"""``airgap manifests render``: a verified bundle's workloads, written for the internal registry.

The bundle is verified first (signatures, policy, target, expiry, rollback
with ``--state``, member list, OCI layout); then each workload file is read
from the bundle and hashed against the signed manifest as it is read (no other
member is needed, so no other is hashed).  Every object and image reference
found must be exactly what the manifest records, each reference is replaced by
``REGISTRY/<internal repository>@<digest>`` of the bundle image it was
resolved to at build, and each workload is written as one YAML stream,
``DIR/<workload>.yaml``: deterministic (same bundle and registry, same bytes),
each file complete or absent.  Those files are what ``podman kube play`` runs
on a lab node and what a Haven cluster applies with its own tooling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from airgap import __version__, workloads
from airgap._internal import fsutil
from airgap._internal.fsutil import atomic_write
from airgap.exceptions import FormatError, InputError, IntegrityError
from airgap.manifest import BundleManifest

__all__ = ["AUDIT_ACTION", "RenderResult", "render", "render_bundle", "check_registry"]

AUDIT_ACTION = "manifests-render"  # the verb, as an audit action (a lower-case word)


@dataclass
class RenderResult:
    output: Path
    bundle: str
    manifest_digest: str
    registry: str
    files: list[str] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)  # one per reference: workload, object, field, from, to

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "bundle": self.bundle, "manifest_digest": self.manifest_digest,
                "registry": self.registry, "files": self.files, "images": self.images}

    def to_text(self) -> str:
        lines = [f"rendered {len(self.files)} workloads of {self.bundle} for {self.registry} into {self.output}:"]
        for f in self.files:
            lines.append(f"  {f}")
            lines += [f"      {i['object']}: {i['from']} -> {i['to']}" for i in self.images if i["file"] == f]
        return "\n".join(lines)


def check_registry(registry: str) -> str:
    """*registry* if it is a plain ``host[:port]`` (InputError otherwise)."""
    from airgap.reference import parse_reference

    try:
        ok = parse_reference(f"{registry}/x").registry == registry
    except InputError:
        ok = False
    if not ok:
        raise InputError(f"--registry {registry!r}: not a registry host[:port] such as registry.pilot.internal:5000")
    return registry


def check_output(out: Path, force: bool) -> None:
    """A new directory, or with *force* an existing one whose workload files are replaced."""
    fsutil.check_output(out, force=force, directory=True)


def render(manifest: BundleManifest, read: Callable[[str], bytes], registry: str, out: Path,
           *, bundle_label: str) -> RenderResult:
    """Write every workload of a verified *manifest*; ``read(member)`` returns a member's checked bytes."""
    from airgap.importer import internal_repository

    if not manifest.workloads:
        raise InputError(f"{bundle_label} carries no workloads (no workloads: in its spec); nothing to render")
    images = {(i.layout_ref, i.digest): i for i in manifest.images}
    result = RenderResult(out, bundle_label, manifest.digest, registry)
    rendered: list[tuple[str, bytes]] = []
    for w in manifest.workloads:
        docs: list[dict] = []
        found_objects: list[str] = []
        found_uses: list[workloads.ImageUse] = []
        seen: set[str] = set()
        for path in w.files:
            file_docs = workloads.parse(read(path), path)
            objects, uses = workloads.scan(file_docs, path, seen)
            docs += file_docs
            found_objects += objects
            found_uses += uses
        recorded = {i.use(): i for i in w.images}
        if found_objects != list(w.objects) or sorted(map(_key, found_uses)) != sorted(map(_key, recorded)):
            raise IntegrityError(f"workload {w.name}", "its files hold other objects or image references than the "
                                 "signed manifest records; refusing to render what was not approved")
        name = f"{w.name}.yaml"

        def new_ref(use: workloads.ImageUse, w=w, recorded=recorded, name=name) -> str:
            entry = recorded[use]
            image = images.get((entry.image, entry.digest))
            if image is None:  # the manifest's own check makes this unreachable; fail closed regardless
                raise FormatError(f"workload {w.name}", f"{use.object} runs {entry.image}@{entry.digest}, which the bundle "
                                                        "does not carry")
            target = f"{registry}/{internal_repository(image)}@{image.digest}"
            result.images.append({"file": name, "workload": w.name, "object": use.object, "field": use.field,
                                  "from": use.ref, "to": target})
            return target

        workloads.rewrite(docs, w.name, new_ref)
        header = (f"Rendered by airgap {__version__} from {manifest.name} {manifest.version} "
                  f"(manifest {manifest.digest}) for {registry}.\n"
                  "Every image is the bundle's, by digest, in the internal registry; do not edit: render again.")
        rendered.append((name, workloads.dump(docs, header)))
    out.mkdir(parents=True, exist_ok=True)
    for name, data in rendered:
        atomic_write(out / name, data, mode=0o644)
        result.files.append(name)
    return result


def _key(use: workloads.ImageUse) -> tuple[str, str, str]:
    return use.object, use.field, use.ref


def render_bundle(bundle: str | os.PathLike, *, trust_path: str | os.PathLike, registry: str,
                  out: str | os.PathLike, state_dir: str | os.PathLike | None = None, now: datetime | None = None,
                  force: bool = False) -> RenderResult:
    """Verify *bundle*, then :func:`render` its workloads (every workload byte hashed against the manifest).

    With *state_dir* the acceptance (what was written) or the refusal is
    written to ``STATE/audit.log``, as ``extract`` audits.
    """
    from airgap.auditing import AuditTrail
    from airgap.receive import accepted_object, verified_audited

    out = Path(out)
    check_registry(registry)
    check_output(out, force)  # before the bundle is read: nothing examined, nothing audited
    trail = AuditTrail.of(state_dir)
    # The workload files come from the object verify returned (the bundle it
    # opened), each hashed against the verified manifest as it is read.
    with verified_audited(bundle, trail, AUDIT_ACTION, trust_path=trust_path, now=now,
                          hash_content=False) as verified:
        manifest = verified.manifest
        obj = accepted_object(bundle, manifest, output=os.fspath(out), registry=registry)

        def read(path: str) -> bytes:
            if manifest.member(path) is None:
                raise IntegrityError(path, "not in the verified bundle")
            return verified.read(path, workloads.MAX_WORKLOAD_BYTES)

        with trail.refusals(AUDIT_ACTION, obj):
            result = render(manifest, read, registry, out, bundle_label=f"{manifest.name} {manifest.version}")
            verified.content_used("the workloads' files hashed as they were read")
        trail.accepted(AUDIT_ACTION, obj, detail={"files": result.files, "images": len(result.images)})
        return result
