"""Verifying a bundle on the receiving side: fail closed, name the artifact.

Order matters only for speed, never for the decision: every check must pass.
Cheap checks (archive structure, manifest, signatures, target, expiry,
rollback, member list, OCI documents) run first so a bad bundle is refused in
milliseconds; then every member is hashed, in parallel on all cores, each byte
read once.  The clock is read once, by the caller, and passed in as ``now``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airgap import oci, sbom
from airgap._internal.progress import ByteProgress
from airgap._internal.text import plural
from airgap.bundle import Bundle, stream
from airgap.exceptions import (
    AirgapError,
    ArchiveError,
    ExpiredError,
    FormatError,
    IntegrityError,
    RejectedError,
    TargetError,
    UsageError,
)
from airgap.manifest import BundleManifest

ALLOWED_TOP = ("oci-layout", "index.json")


@dataclass
class Check:
    name: str
    status: str  # "pass" | "fail" | "skipped" | "overridden"
    detail: str = ""
    artifact: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"check": self.name, "status": self.status, "detail": self.detail}
        if self.artifact:
            d["artifact"] = self.artifact
        return d


CHECK_NAMES = (
    "archive",
    "manifest",
    "trust-policy",
    "signatures",
    "target",
    "expiry",
    "rollback",
    "members",
    "oci-layout",
    "content",
)


@dataclass
class Override:
    """An officer's explicit decision to accept an expired bundle or policy."""

    reason: str
    signing_key: Any  # airgap.keys.SigningKey of an officer in the policy

    def __post_init__(self) -> None:
        # Checked before anything is read: a blank reason is no written decision.
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise UsageError("--reason must give the officer's reason for the override in words; it is written to "
                             "the audit log (--reason \"renewal delayed, see ticket 123\")")

    @property
    def keyid(self) -> str:
        return self.signing_key.public_key.keyid


@dataclass
class VerifyReport:
    bundle: str
    checks: list[Check] = field(default_factory=list)
    manifest: BundleManifest | None = None
    signatures: Any = None  # trust.SignatureReport
    policy_version: int | None = None
    policy: Any = None  # the trust.TrustPolicy the bundle was checked against
    overrides: list[dict[str, str]] = field(default_factory=list)
    accepted: bool = False
    error: AirgapError | None = None
    bytes_hashed: int = 0
    hashed_paths: set[str] = field(default_factory=set)
    media: str | None = None  # for a bundle given as media parts: how its part index was checked

    def set(self, name: str, status: str, detail: str = "", artifact: str | None = None) -> None:
        for c in self.checks:
            if c.name == name:
                c.status, c.detail, c.artifact = status, detail, artifact
                return
        self.checks.append(Check(name, status, detail, artifact))

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle": self.bundle,
            "result": "accepted" if self.accepted else "rejected",
            "error": self.error.to_dict() if self.error else None,
            "name": m.name if m else None,
            "version": m.version if m else None,
            "target": m.target if m else None,
            "manifest_digest": m.digest if m else None,
            "policy_version": self.policy_version,
            "signatures": self.signatures.to_dict() if self.signatures is not None and hasattr(self.signatures, "to_dict") else None,
            "overrides": self.overrides,
            "media": self.media,
            "checks": [c.to_dict() for c in self.checks],
        }


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def verify(
    path: str | os.PathLike,
    *,
    trust_path: str | os.PathLike,
    state_dir: str | os.PathLike | None = None,
    now: datetime | None = None,
    override: Override | None = None,
    progress: bool = False,
    workers: int | None = None,
    require_base: Any = None,
    hash_content: bool = True,
) -> VerifyReport:
    """Verify a bundle.  Returns an accepted report or raises; ``exc.report`` holds the checks.

    ``require_base`` is a callable ``(digest, size) -> bool`` telling whether a blob a
    differential bundle leaves out is present on this side (import passes the registry).
    """
    now = now or datetime.now(timezone.utc)
    report = VerifyReport(bundle=os.fspath(path), checks=[Check(n, "skipped") for n in CHECK_NAMES])
    current = "archive"
    try:
        with Bundle.open(path) as bundle:
            report.set("archive", "pass", f"{plural(len(bundle.members), 'member')}, strict ustar"
                       + (f" (read from {plural(len(bundle.source.index.parts), 'media part')})" if hasattr(bundle.source, "index_path") else ""))
            current = "manifest"
            manifest = bundle.manifest()
            report.manifest = manifest
            report.set("manifest", "pass", f"{manifest.name} {manifest.version}, {plural(len(manifest.images), 'image')}, "
                                           f"{plural(len(manifest.members), 'member')}")

            current = "trust-policy"
            policy = _load_policy(trust_path, state_dir, now, override, report)
            report.policy_version = policy.version
            report.policy = policy
            _check_part_index(bundle, policy, report)

            current = "signatures"
            envelope = bundle.envelope()
            from airgap import dsse, trust

            if envelope.payload_type != dsse.PAYLOAD_TYPE:
                raise FormatError("signatures.json", f"payloadType {envelope.payload_type!r} is not {dsse.PAYLOAD_TYPE!r}")
            if envelope.payload != bundle.manifest_bytes:
                raise IntegrityError("signatures.json", "the signed payload is not the bundle's manifest.json")
            sigs = trust.evaluate(policy, envelope.payload_type, envelope.payload, envelope.signatures, artifact="signatures.json")
            report.signatures = sigs
            sigs.raise_for_status()
            report.set("signatures", "pass", sigs.summary())

            current = "target"
            if manifest.target != policy.target:
                raise TargetError(f"bundle {manifest.name} {manifest.version}", f"built for target {manifest.target!r}, this enclave is {policy.target!r}")
            report.set("target", "pass", manifest.target)

            current = "expiry"
            expires = parse_time(manifest.expires)
            if now >= expires:
                err = ExpiredError(f"bundle {manifest.name} {manifest.version}", f"expired at {manifest.expires}")
                if override is None:
                    raise err
                _check_override(policy, override, err)
                report.overrides.append({"what": "bundle-expiry", "reason": override.reason, "keyid": override.keyid, "error": str(err)})
                report.set("expiry", "overridden", f"{err} (override by officer {override.keyid[:12]}: {override.reason})")
            else:
                report.set("expiry", "pass", f"expires {manifest.expires}")

            current = "rollback"
            if state_dir is not None:
                from airgap.state import StateStore

                StateStore(state_dir).check(manifest.name, manifest.version, manifest.digest)
                report.set("rollback", "pass", "newer than, or identical to, what was accepted")
            else:
                report.set("rollback", "skipped", "no --state given")

            current = "members"
            _check_members(bundle, manifest)
            report.set("members", "pass", f"{plural(len(manifest.members), 'member')} "
                                          f"{'matches' if len(manifest.members) == 1 else 'match'} the manifest")

            current = "oci-layout"
            hashed = _check_layout(bundle, manifest, require_base)
            hashed |= sbom.check_documents(manifest, lambda path, cap: _read_verified(bundle, manifest, path, cap))
            report.set("oci-layout", "pass", f"{plural(len(manifest.images), 'image')}, every referenced blob present")

            current = "content"
            report.hashed_paths = hashed
            if not hash_content:
                # The caller (import) decides whether the content is needed at all;
                # the report is not accepted until check_content() has run or the
                # caller has recorded why no byte of the content will be used.
                report.set("content", "deferred", "not hashed yet")
                return report
            report.bytes_hashed = _hash_members(bundle, manifest, hashed, progress, workers)
            report.set("content", "pass", f"{plural(report.bytes_hashed, 'byte')} hashed, every sha256 matches")
    except AirgapError as exc:
        report.set(current, "fail", getattr(exc, "reason", str(exc)), getattr(exc, "artifact", None))
        report.error = exc
        exc.report = report  # type: ignore[attr-defined]
        raise
    report.accepted = True
    return report


def _load_policy(trust_path, state_dir, now, override, report):
    from airgap import trust

    expiry_override = None
    if override is not None:
        expiry_override = trust.ExpiryOverride(officer=override.keyid, reason=override.reason)
    if state_dir is not None:
        policy = trust.TrustStore(state_dir).load_policy(trust_path, now, expiry_override=expiry_override)
    else:
        policy = trust.TrustPolicy.load(trust_path, now=now, expiry_override=expiry_override)
    used = getattr(policy, "expiry_override_used", None)
    if used is not None:
        # The policy is expired but otherwise fully verified (signatures, chain,
        # rollback); an officer who holds a key in that very policy may accept it.
        err = ExpiredError(str(trust_path), f"expired at {policy.expires_str}")
        _check_override(policy, override, err)
        report.overrides.append({"what": "policy-expiry", "reason": override.reason, "keyid": override.keyid, "error": str(err)})
        report.set("trust-policy", "overridden", f"{err} (override by officer {override.keyid[:12]}: {override.reason})")
        return policy
    report.set("trust-policy", "pass", f"version {policy.version}, target {policy.target}, expires {policy.expires_str}")
    return policy


def check_content(path: str | os.PathLike, report: VerifyReport, *, progress: bool = False, workers: int | None = None) -> VerifyReport:
    """Finish a verification started with ``hash_content=False``."""
    assert report.manifest is not None and not report.accepted
    try:
        with Bundle.open(path) as bundle:
            if bundle.manifest_bytes != report.manifest.to_bytes():
                raise IntegrityError("manifest.json", "changed since it was verified")
            report.bytes_hashed = _hash_members(bundle, report.manifest, report.hashed_paths, progress, workers)
    except AirgapError as exc:
        report.set("content", "fail", getattr(exc, "reason", str(exc)), getattr(exc, "artifact", None))
        report.error = exc
        exc.report = report  # type: ignore[attr-defined]
        raise
    report.set("content", "pass", f"{plural(report.bytes_hashed, 'byte')} hashed, every sha256 matches")
    report.accepted = True
    return report


def check_structure(path: str | os.PathLike) -> tuple[BundleManifest, bytes]:
    """The checks that need no trust policy: archive dialect, manifest, member list, OCI layout.

    Build runs them on its output before renaming it into place.  Returns the
    parsed manifest and the raw signatures member.
    """
    with Bundle.open(path) as bundle:
        manifest = bundle.manifest()
        _check_members(bundle, manifest)
        _check_layout(bundle, manifest, None)
        return manifest, bundle.signatures_bytes


def _check_part_index(bundle: Bundle, policy, report: VerifyReport) -> None:
    """A signed part index must be signed by a key of the policy (any role, not revoked).

    The parts' sizes and hashes were already checked against the index before
    the archive was read; the signature says who cut the media.  An unsigned
    index is allowed (the bundle's own signatures cover every byte that is used)
    and reported as such.
    """
    from airgap import split

    index_path = getattr(bundle.source, "index_path", None)
    if index_path is None:
        return
    sig = Path(str(index_path) + split.SIGNATURE_SUFFIX)
    if not sig.exists():
        report.media = f"{plural(len(bundle.source.index.parts), 'part')}, index unsigned"
        return
    keys = [k for keyid, k in policy.keys.items() if keyid not in policy.revoked]
    key = split.verify_index_signature(index_path, keys)
    report.media = f"{plural(len(bundle.source.index.parts), 'part')}, index signed by {key.label}"


def _check_override(policy, override: Override, err: RejectedError) -> None:
    if not override.reason.strip():
        raise err
    if not policy.has_role_key("officer", override.signing_key.public_key):
        raise type(err)(err.artifact, f"{err.reason}; the override key {override.keyid[:12]} is not an officer key in the trust policy")


def _check_members(bundle: Bundle, manifest: BundleManifest) -> None:
    actual = bundle.content_members
    listed = {m.path: m for m in manifest.members}
    present = {m.name for m in actual}
    for m in actual:
        if m.name not in listed:
            raise ArchiveError(m.name, "member is not listed in the manifest")
    for m in manifest.members:
        if m.path not in present:
            raise ArchiveError(m.path, "listed in the manifest but absent from the archive")
    for i, (a, want) in enumerate(zip(actual, manifest.members)):
        if a.name != want.path:
            raise ArchiveError(a.name, f"member out of order (position {i + 1}, manifest expects {want.path!r})")
        if a.size != want.size:
            raise IntegrityError(a.name, f"size {a.size} but the manifest says {want.size}")
        if a.mode != want.mode:
            raise IntegrityError(a.name, f"mode {oct(a.mode)} but the manifest says {oct(want.mode)}")
        if a.name in ALLOWED_TOP or a.name.startswith("files/"):
            continue
        if a.name.startswith("blobs/sha256/"):
            oci.check_digest("sha256:" + a.name.rsplit("/", 1)[1], a.name, "blob file name")
            if a.name.count("/") != 2:
                raise ArchiveError(a.name, "unexpected path under blobs/")
            continue
        if a.name.startswith("sbom/"):
            sbom.check_member_name(a.name, manifest)
            continue
        raise ArchiveError(a.name, "not part of the bundle format (expected oci-layout, index.json, blobs/sha256/*, files/*, sbom/sha256/*.cdx.json)")
    for name in ALLOWED_TOP:
        if name not in listed:
            raise ArchiveError(name, "missing from the bundle")


def _read_verified(bundle: Bundle, manifest: BundleManifest, path: str, cap: int) -> bytes:
    member = bundle.member(path)
    record = manifest.member(path)
    if member is None or record is None:
        raise ArchiveError(path, "absent from the bundle")
    data = bundle.read(member, cap)
    got = hashlib.sha256(data).hexdigest()
    if got != record.sha256:
        raise IntegrityError(path, f"sha256 mismatch (manifest {record.sha256[:16]}…, content {got[:16]}…)")
    return data


def _check_layout(bundle: Bundle, manifest: BundleManifest, require_base) -> set[str]:
    """Check index.json and every image document; return the paths already hashed."""
    hashed = {"oci-layout", "index.json"}
    oci.check_layout_file(_read_verified(bundle, manifest, "oci-layout", 4096))
    index = oci.parse_layout_index(_read_verified(bundle, manifest, "index.json", oci.MAX_INDEX_BYTES))
    by_ref: dict[str, oci.Descriptor] = {}
    for i, d in enumerate(index):
        name = (d.annotations or {}).get(oci.REF_NAME)
        if not name:
            raise FormatError("index.json", f"manifests[{i}] has no {oci.REF_NAME} annotation")
        if name in by_ref:
            raise FormatError("index.json", f"reference {name!r} appears twice")
        by_ref[name] = d
    records = {r.layout_ref: r for r in manifest.images}
    if set(by_ref) != set(records):
        extra = sorted(set(by_ref) - set(records))
        missing = sorted(set(records) - set(by_ref))
        raise FormatError("index.json", f"images differ from the manifest (extra: {extra}, missing: {missing})")
    external = dict(manifest.external_blobs)
    referenced: set[str] = set()
    blob_members = {m.path for m in manifest.members if m.path.startswith("blobs/")}

    def need_blob(desc: oci.Descriptor, artifact: str) -> None:
        path = oci.blob_path(desc.digest)
        referenced.add(path)
        record = manifest.member(path)
        if record is not None:
            if record.size != desc.size:
                raise IntegrityError(artifact, f"descriptor size {desc.size} but blob {desc.digest} has {plural(record.size, 'byte')}")
            return
        if desc.digest in external:
            if external[desc.digest] != desc.size:
                raise IntegrityError(artifact, f"descriptor size {desc.size} disagrees with the base blob's {external[desc.digest]}")
            if require_base is not None and not require_base(desc.digest, desc.size):
                from airgap.exceptions import BaseMissingError

                raise BaseMissingError(artifact, f"blob {desc.digest} is in the bundle's base but not on this side ({manifest.base.description if manifest.base else 'no base'})")
            return
        raise ArchiveError(artifact, f"references blob {desc.digest}, which the bundle does not carry")

    for ref, rec in records.items():
        d = by_ref[ref]
        artifact = f"image {rec.ref}"
        if (d.digest, d.media_type, d.size) != (rec.digest, rec.media_type, rec.size):
            raise FormatError("index.json", f"entry for {ref!r} ({d.digest}) differs from the manifest's ({rec.digest})")
        path = oci.blob_path(d.digest)
        if manifest.member(path) is None:
            raise ArchiveError(artifact, f"manifest blob {d.digest} absent")
        referenced.add(path)
        doc = oci.parse_document(_read_verified(bundle, manifest, path, oci.MAX_MANIFEST_BYTES), f"{artifact} ({d.digest})", d.media_type)
        hashed.add(path)
        if isinstance(doc, oci.ImageIndex):
            for i, child in enumerate(doc.manifests):
                cpath = oci.blob_path(child.digest)
                referenced.add(cpath)
                if manifest.member(cpath) is None:
                    raise ArchiveError(artifact, f"index entry manifests[{i}] ({child.digest}) is absent")
                member = manifest.member(cpath)
                if member.size != child.size:
                    raise IntegrityError(artifact, f"manifests[{i}] size {child.size} but blob has {plural(member.size, 'byte')}")
                cdoc = oci.parse_document(_read_verified(bundle, manifest, cpath, oci.MAX_MANIFEST_BYTES), f"{artifact} ({child.digest})", child.media_type)
                hashed.add(cpath)
                if not isinstance(cdoc, oci.ImageManifest):
                    raise FormatError(artifact, "nested image indexes are not supported")
                for b in cdoc.blobs():
                    need_blob(b, f"{artifact} ({child.digest})")
                _check_config(bundle, manifest, cdoc.config, f"{artifact} ({child.digest}) config", hashed)
        else:
            for b in doc.blobs():
                need_blob(b, artifact)
            _check_config(bundle, manifest, doc.config, f"{artifact} config", hashed)
    unreferenced = sorted(blob_members - referenced)
    if unreferenced:
        raise ArchiveError(unreferenced[0], "blob is not referenced by any image")
    return hashed


def _check_config(bundle: Bundle, manifest: BundleManifest, desc: oci.Descriptor, artifact: str, hashed: set[str]) -> None:
    """A carried config is parsed as strictly as the manifests (Go reads it); one left at a differential base is not ours to read."""
    path = oci.blob_path(desc.digest)
    if path in hashed or manifest.member(path) is None:
        return
    oci.check_config(_read_verified(bundle, manifest, path, oci.MAX_CONFIG_BYTES), f"{artifact} ({desc.digest})")
    hashed.add(path)


def _hash_members(bundle: Bundle, manifest: BundleManifest, done: set[str], progress: bool, workers: int | None) -> int:
    todo = [(m, manifest.member(m.name)) for m in bundle.content_members if m.name not in done]
    todo.sort(key=lambda pair: -pair[0].size)  # largest first balances the cores
    total = sum(m.size for m, _ in todo)
    workers = workers or max(2, os.cpu_count() or 2)
    failure: list[IntegrityError] = []

    with ByteProgress(total=total, desc="verifying", enabled=progress) as bar:

        def one(pair) -> None:
            member, record = pair
            if failure:
                return
            h = hashlib.sha256()
            for chunk in stream(bundle.source, member.data_offset, member.size, artifact=member.name):
                h.update(chunk)
                bar.update(len(chunk))
            got = h.hexdigest()
            if got != record.sha256:
                failure.append(IntegrityError(member.name, f"sha256 mismatch (manifest {record.sha256[:16]}…, content {got[:16]}…)"))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, todo))
    if failure:
        # Report the earliest member in archive order, so the message is stable.
        order = {m.name: i for i, m in enumerate(bundle.members)}
        raise min(failure, key=lambda e: order[e.artifact])
    # Padding between members is outside every hash; tarfmt.scan refused any that is not zero.
    return total


def rollback_record(report: VerifyReport, state_dir: str | os.PathLike) -> None:
    """Record an accepted bundle, and the policy it was accepted under, in the state.

    Called by ``verify --record`` and by import, only after success.
    """
    from airgap import trust
    from airgap.state import StateStore

    assert report.accepted and report.manifest is not None
    m = report.manifest
    StateStore(state_dir).record(m.name, m.version, m.digest)
    if report.policy is not None:
        trust.TrustStore(state_dir).record(report.policy)
