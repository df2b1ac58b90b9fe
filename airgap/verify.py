"""Verifying a bundle on the receiving side: fail closed, name the artifact.

Order matters only for cost, never for the decision: every check must pass.
Trust first: the trust policy, then the envelope's signatures over the raw
manifest bytes (two reads: the first and the last member), so an unsigned or
untrusted bundle is refused before its manifest is parsed or its members are
walked.  Then the cheap checks (archive structure, manifest schema, target,
expiry, rollback, member list, OCI documents); then every member is hashed, in
parallel on all cores, each byte read once.  The clock is read once, by the
caller, and passed in as ``now``.

``verify()`` returns a :class:`~airgap.verified.VerifiedBundle`: the bundle as
opened here, which import, extract, join and ``verify --record`` use instead of
the path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airgap import caps, dsse, media, oci, sbom, trust
from airgap._internal.text import plural
from airgap._internal.timefmt import parse_time
from airgap.bundle import _close, ends_of, open_source, read_ends, scan_members
from airgap.exceptions import (
    AirgapError,
    ArchiveError,
    ExpiredError,
    FormatError,
    IntegrityError,
    TargetError,
)
from airgap.manifest import MANIFEST_MEMBER, SIGNATURES_MEMBER, BundleManifest
from airgap.trust import Overridden, Override, SignatureReport, TrustPolicy
from airgap.verified import ImagePlan, VerifiedBundle, explain

if TYPE_CHECKING:
    from airgap import anchored

__all__ = ["CHECK_NAMES", "Check", "Override", "VerifyReport", "check_structure", "verify"]

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
class VerifyReport:
    bundle: str
    checks: list[Check] = field(default_factory=list)
    manifest: BundleManifest | None = None
    signatures: Any = None  # trust.SignatureReport
    policy_version: int | None = None
    policy: Any = None  # the trust.TrustPolicy the bundle was checked against
    overrides: list[dict[str, Any]] = field(default_factory=list)  # signed, once the bundle passed its checks
    overridden: list[Overridden] = field(default_factory=list)
    accepted: bool = False
    error: AirgapError | None = None
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
) -> VerifiedBundle:
    """Verify a bundle; return the :class:`VerifiedBundle` everything after it uses, or raise.

    ``exc.report`` holds the checks of a refusal.  The result holds the bundle
    open: close it (or use ``with``).  With ``hash_content=False`` the content
    is not hashed yet and the report is not accepted: the caller either calls
    ``check_content()``, or says why no content byte will be used
    (``skip_content``), or consumes members through ``stream()`` (hashed as
    read) and then ``content_used()``.

    Trust before cost: the envelope's signatures are checked over the raw
    manifest bytes before the manifest is parsed against its schema and before
    any member other than the first and the last is looked at, so an untrusted
    bundle costs two reads whatever it holds.

    ``require_base`` is a callable ``(digest, size) -> bool`` telling whether a blob a
    differential bundle leaves out is present on this side.
    """
    now = now or datetime.now(UTC)
    label = os.fspath(path)
    run = _Run(VerifyReport(bundle=label, checks=[Check(n, "skipped") for n in CHECK_NAMES]))
    source = None
    try:
        source = open_source(path)
        members, ends, accepted = _trusted_ends(run, source, label, trust_path, state_dir, now, override)
        policy = run.report.policy
        manifest = _check_manifest(run, ends, policy, state_dir, now, override)
        run.start("members")
        _check_members(members[1:-1], manifest)
        run.report.set("members", "pass", f"{plural(len(manifest.members), 'member')} "
                                          f"{'matches' if len(manifest.members) == 1 else 'match'} the manifest")
        run.start("oci-layout")
        reader = _DocumentReader(source, members, manifest)
        images = _check_layout(reader, manifest, require_base)
        sbom.check_documents(manifest, reader.read)
        run.report.set("oci-layout", "pass", f"{plural(len(manifest.images), 'image')}, every referenced blob present")
        # The officer's key signs each override only now, bound to the bundle it admits.
        run.report.overrides = [o.signed(manifest.digest) for o in run.report.overridden]
        verified = VerifiedBundle(source=source, members=members, manifest_bytes=ends.manifest_bytes,
                                  signatures_bytes=ends.signatures_bytes, manifest=manifest, policy=policy,
                                  report=run.report, images=images, hashed=reader.hashed, accepted_policy=accepted)
        source = None  # owned by the verified bundle from here on
    except AirgapError as exc:
        raise run.fail(explain(source, exc) if source is not None else exc) from None
    finally:
        if source is not None:
            _close(source)
    if not hash_content:
        run.report.set("content", "deferred", "not hashed yet")
        return verified
    try:
        verified.check_content(progress=progress, workers=workers)
    except BaseException:
        verified.close()
        raise
    return verified


class _Run:
    """The report of one verification and the check now running (named when it fails)."""

    def __init__(self, report: VerifyReport):
        self.report, self.current = report, "archive"
        # the state directory, checked against its audit log
        self.anchored: anchored.Anchored | None = None

    def start(self, name: str) -> None:
        self.current = name

    def fail(self, exc: AirgapError) -> AirgapError:
        self.report.set(self.current, "fail", getattr(exc, "reason", str(exc)), getattr(exc, "artifact", None))
        self.report.error = exc
        exc.report = self.report  # type: ignore[attr-defined]
        return exc


def _trusted_ends(run: _Run, source: Any, label: str, trust_path: Any, state_dir: Any, now: datetime,
                  override: Override | None) -> tuple[list[Any], Any, trust.AcceptedPolicy | None]:
    """The policy (left in the report), then the signatures over the raw manifest bytes, then the archive walk."""
    report = run.report
    members = None
    ends = read_ends(source, label)
    if ends is None:  # not the expected shape: the full walk says precisely why
        members = scan_members(source, label)
        ends = ends_of(source, members)
    report.set("archive", "pass", "manifest.json first, signatures.json last")
    run.start("trust-policy")
    policy, accepted = _load_policy(run, trust_path, state_dir, now, override)
    report.policy_version = policy.version
    report.policy = policy
    _check_part_index(source, policy, report)
    run.start("signatures")
    report.signatures = _check_signatures(policy, ends)
    report.set("signatures", "pass", report.signatures.summary())
    run.start("archive")
    if members is None:
        members = scan_members(source, label)
        if (members[0], members[-1]) != (ends.manifest, ends.signatures):
            raise ArchiveError(label, "the first or last member is not where the archive's end says it is")
    parts = getattr(source, "index", None)
    report.set("archive", "pass", f"{plural(len(members), 'member')}, strict ustar"
               + (f" (read from {plural(len(parts.parts), 'media part')})" if parts is not None else ""))
    return members, ends, accepted


def _check_manifest(run: _Run, ends, policy, state_dir, now: datetime, override) -> BundleManifest:
    """Parse the (already signature-checked) manifest; target, expiry and rollback."""
    report = run.report
    run.start("manifest")
    manifest = BundleManifest.from_bytes(ends.manifest_bytes, MANIFEST_MEMBER)
    report.manifest = manifest
    report.set("manifest", "pass", f"{manifest.name} {manifest.version}, {plural(len(manifest.images), 'image')}, "
                                   f"{plural(len(manifest.members), 'member')}")
    run.start("target")
    if manifest.target != policy.target:
        raise TargetError(f"bundle {manifest.name} {manifest.version}", f"built for target {manifest.target!r}, this enclave is {policy.target!r}")
    if policy.bundles is not None and manifest.name not in policy.bundles:
        raise TargetError(f"bundle {manifest.name} {manifest.version}",
                          f"the trust policy ({policy.artifact}, version {policy.version}) accepts only the bundles "
                          f"{', '.join(policy.bundles)} for {policy.target}, not {manifest.name!r}; a root "
                          "threshold must add the name to the policy's bundles (airgap trust rotate --bundle)")
    report.set("target", "pass", manifest.target + (f", bundle name {manifest.name} listed by the policy"
                                                    if policy.bundles is not None else ""))
    run.start("expiry")
    _check_expiry(manifest, policy, now, override, report)
    run.start("rollback")
    if run.anchored is not None:
        run.anchored.check_bundle(manifest)
        report.set("rollback", "pass", "newer than, or identical to, what was accepted, by name and at every "
                                       f"destination (state at audit entry {run.anchored.committed} of {run.anchored.count})")
    else:
        report.set("rollback", "skipped", "no --state given")
    return manifest


def _check_signatures(policy: TrustPolicy, ends: Any) -> SignatureReport:
    """A threshold of builder and officer keys signed exactly these manifest bytes (nothing parsed yet)."""
    envelope = dsse.Envelope.from_bytes(ends.signatures_bytes, SIGNATURES_MEMBER, max_size=caps.MAX_SIGNATURES_BYTES)
    return trust.verify_envelope(policy, envelope, dsse.PAYLOAD_TYPE, ends.manifest_bytes, artifact=SIGNATURES_MEMBER,
                                 payload_name="the bundle's manifest.json")


def _check_expiry(manifest: BundleManifest, policy: TrustPolicy, now: datetime, override: Override | None,
                  report: VerifyReport) -> None:
    expires = parse_time(manifest.expires, MANIFEST_MEMBER)
    if now < expires:
        report.set("expiry", "pass", f"expires {manifest.expires}")
        return
    err = ExpiredError(f"bundle {manifest.name} {manifest.version}", f"expired at {manifest.expires}")
    if override is None:
        raise err
    _overridden(report, "expiry", override.apply("bundle-expiry", err, policy, now=now, expired=manifest.expires,
                                                 subject=manifest.digest))


def _overridden(report: VerifyReport, check: str, overridden: Overridden) -> None:
    report.overridden.append(overridden)
    report.set(check, "overridden", overridden.detail())


def _load_policy(run: _Run, trust_path: Any, state_dir: Any, now: datetime,
                 override: Override | None) -> tuple[TrustPolicy, trust.AcceptedPolicy | None]:
    """The policy to judge by: chained to the state directory's trusted one, or (no state) self-signed."""
    report = run.report
    accepted = None
    if state_dir is not None:
        from airgap import anchored  # start-up: only needed with a state directory

        # The caches must agree with the log before the trusted policy in them means anything.
        run.anchored = anchored.load(state_dir)
        accepted = trust.TrustStore(state_dir).load_policy(trust_path, now, override=override)
        policy, overridden = accepted.policy, accepted.overridden
        run.anchored.check_policy(policy)
    else:
        policy = trust.TrustPolicy.load(trust_path, now=None)  # signatures here, expiry (with the override) next
        overridden = policy.check_expiry(now, override)
    if overridden is not None:
        # Expired but otherwise fully verified (signatures, chain, rollback), and the
        # override's key is an officer key of that very policy.
        _overridden(report, "trust-policy", overridden)
    else:
        report.set("trust-policy", "pass", f"version {policy.version}, target {policy.target}, expires {policy.expires_str}")
    return policy, accepted


def check_structure(path: str | os.PathLike) -> tuple[BundleManifest, bytes]:
    """The checks that need no trust policy: archive dialect, manifest, member list, OCI layout.

    Build runs them on its output before renaming it into place.  Returns the
    parsed manifest and the raw signatures member.
    """
    label = os.fspath(path)
    source = open_source(path)
    try:
        members = scan_members(source, label)
        ends = ends_of(source, members)
        manifest = BundleManifest.from_bytes(ends.manifest_bytes, MANIFEST_MEMBER)
        _check_members(members[1:-1], manifest)
        _check_layout(_DocumentReader(source, members, manifest), manifest, None)
        return manifest, ends.signatures_bytes
    finally:
        _close(source)


def _check_part_index(source: Any, policy: TrustPolicy, report: VerifyReport) -> None:
    """A signed part index must be signed by a key holding a role of the policy (not revoked).

    The parts' sizes were already checked against the index before the archive
    was read; the signature says who cut the media.  An unsigned index is
    allowed (the bundle's own signatures cover every byte that is used) and
    reported as such.
    """
    if getattr(source, "index_path", None) is None:
        return
    parts = plural(len(source.index.parts), "part")
    signed = media.verify_index_signature(source.index_path, source.index_bytes, policy)
    if signed is None:
        report.media = f"{parts}, index unsigned"
        return
    signers = signed.signers()
    report.media = f"{parts}, index signed by {', '.join(k.label for k in signers)}"


def _check_members(actual: list, manifest: BundleManifest) -> None:
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


class _DocumentReader:
    """Reads the small documents verify parses (index.json, image manifests), each hashed, once."""

    def __init__(self, source, members: list, manifest: BundleManifest):
        self.source, self.manifest = source, manifest
        self.by_name = {m.name: m for m in members[1:-1]}
        self.hashed: set[str] = set()

    def read(self, path: str, cap: int) -> bytes:
        member = self.by_name.get(path)
        record = self.manifest.member(path)
        if member is None or record is None:
            raise ArchiveError(path, "absent from the bundle")
        if member.size > cap:
            raise ArchiveError(path, f"{member.size} bytes exceeds the cap of {cap}")
        data = self.source.pread(member.data_offset, member.size)
        if len(data) != member.size:
            raise ArchiveError(path, "short read")
        got = hashlib.sha256(data).hexdigest()
        if got != record.sha256:
            raise IntegrityError(path, f"sha256 mismatch (manifest {record.sha256[:16]}…, content {got[:16]}…)")
        self.hashed.add(path)
        return data


def _layout_index(reader: _DocumentReader, manifest: BundleManifest) -> dict[str, oci.Descriptor]:
    """oci-layout and index.json: one entry per image of the manifest, by its layout reference."""
    oci.check_layout_file(reader.read("oci-layout", 4096))
    index = oci.parse_layout_index(reader.read("index.json", oci.MAX_INDEX_BYTES))
    by_ref: dict[str, oci.Descriptor] = {}
    for i, d in enumerate(index):
        name = (d.annotations or {}).get(oci.REF_NAME)
        if not name:
            raise FormatError("index.json", f"manifests[{i}] has no {oci.REF_NAME} annotation")
        if name in by_ref:
            raise FormatError("index.json", f"reference {name!r} appears twice")
        by_ref[name] = d
    records = {r.layout_ref for r in manifest.images}
    if set(by_ref) != records:
        extra = sorted(set(by_ref) - records)
        missing = sorted(records - set(by_ref))
        raise FormatError("index.json", f"images differ from the manifest (extra: {extra}, missing: {missing})")
    return by_ref


def _check_layout(reader: _DocumentReader, manifest: BundleManifest, require_base) -> list[ImagePlan]:
    """Check index.json and every image document; return each image's verified documents and blobs."""
    by_ref = _layout_index(reader, manifest)
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

    plans: list[ImagePlan] = []
    for rec in manifest.images:
        d = by_ref[rec.layout_ref]
        artifact = f"image {rec.ref}"
        if (d.digest, d.media_type, d.size) != (rec.digest, rec.media_type, rec.size):
            raise FormatError("index.json", f"entry for {rec.layout_ref!r} ({d.digest}) differs from the manifest's ({rec.digest})")
        path = oci.blob_path(d.digest)
        if manifest.member(path) is None:
            raise ArchiveError(artifact, f"manifest blob {d.digest} absent")
        referenced.add(path)
        top = reader.read(path, oci.MAX_MANIFEST_BYTES)
        doc = oci.parse_document(top, f"{artifact} ({d.digest})", d.media_type)
        plan = ImagePlan(rec, rec.destination)
        if isinstance(doc, oci.ImageIndex):
            for i, child in enumerate(doc.manifests):
                cpath = oci.blob_path(child.digest)
                referenced.add(cpath)
                member = manifest.member(cpath)
                if member is None:
                    raise ArchiveError(artifact, f"index entry manifests[{i}] ({child.digest}) is absent")
                if member.size != child.size:
                    raise IntegrityError(artifact, f"manifests[{i}] size {child.size} but blob has {plural(member.size, 'byte')}")
                data = reader.read(cpath, oci.MAX_MANIFEST_BYTES)
                cdoc = oci.parse_document(data, f"{artifact} ({child.digest})", child.media_type)
                if not isinstance(cdoc, oci.ImageManifest):
                    raise FormatError(artifact, "nested image indexes are not supported")
                plan.children.append(child)
                for b in cdoc.blobs():
                    need_blob(b, f"{artifact} ({child.digest})")
                    plan.blobs.append(b)
                _check_config(reader, manifest, cdoc.config, f"{artifact} ({child.digest}) config")
        else:
            for b in doc.blobs():
                need_blob(b, artifact)
                plan.blobs.append(b)
            _check_config(reader, manifest, doc.config, f"{artifact} config")
        plans.append(plan)
    unreferenced = sorted(blob_members - referenced)
    if unreferenced:
        raise ArchiveError(unreferenced[0], "blob is not referenced by any image")
    for m in manifest.members:
        if m.path in blob_members and m.sha256 != m.path.rsplit("/", 1)[1]:
            # Import pushes a blob under its name: the name must be the hash that is checked.
            raise IntegrityError(m.path, f"the manifest gives it sha256 {m.sha256[:16]}…, not the digest it is named by")
    return plans


def _check_config(reader: _DocumentReader, manifest: BundleManifest, desc: oci.Descriptor, artifact: str) -> None:
    """A carried config is parsed as strictly as the manifests (Go reads it); one left at a differential base is not ours to read."""
    path = oci.blob_path(desc.digest)
    if path in reader.hashed or manifest.member(path) is None:
        return
    oci.check_config(reader.read(path, oci.MAX_CONFIG_BYTES), f"{artifact} ({desc.digest})")

