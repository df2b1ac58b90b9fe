"""The officer's record of the bundles they signed: what the next review compares with.

``airgap sign --trust T`` keeps the signed envelope (the manifest with every
signature on it) of each bundle it signs in a history directory, by default
``review-history/`` next to the trust policy (``--history DIR`` elsewhere).
Layout: ``<history>/<target>/<bundle name>/<version>_<manifest sha256, 16 hex>.json``.

A record is only as good as its signatures: :meth:`History.previous` takes the
highest version not above the bundle under review (other than the bundle
itself) whose manifest a threshold of builder **and** officer keys of the
current policy signed; a record that does not parse or no longer meets the
policy (a revoked key, say) is passed over and named in the review's notes.
So a file slipped into the directory cannot stand in for an approved bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path

from airgap import sbom
from airgap._internal.fsutil import atomic_write, read_capped
from airgap.caps import MAX_SIGNATURES_BYTES
from airgap.dsse import PAYLOAD_TYPE, Envelope
from airgap.exceptions import AirgapError, FormatError, InputError
from airgap.manifest import BundleManifest
from airgap.state import compare_versions
from airgap.trust import TrustPolicy, evaluate

__all__ = ["DEFAULT_DIRNAME", "History", "Previous", "default_dir", "from_bundle"]

DEFAULT_DIRNAME = "review-history"


def default_dir(trust_path: str | os.PathLike) -> Path:
    """``review-history/`` in the directory of the trust policy file."""
    return Path(trust_path).resolve().parent / DEFAULT_DIRNAME


@dataclass
class Previous:
    """The bundle a review compares with, where it came from, and what its signatures say."""

    manifest: BundleManifest
    source: str  # "history record PATH" or "PATH (--against)"
    signatures: str | None = None  # "builder 1 of 1, officer 1 of 1" under the policy, or None without one
    problem: str | None = None  # why its signatures do not meet the policy (only for --against)
    sboms: dict = field(default_factory=dict)  # image digest -> sbom.ImageSbom, as its manifest pins them
    sbom_problem: str | None = None  # why its SBOMs could not be read (packages are then not compared)


def _judge(envelope: Envelope, policy: TrustPolicy | None, artifact: str) -> tuple[str | None, str | None]:
    if policy is None:
        return None, None
    report = evaluate(policy, envelope.payload_type, envelope.payload, envelope.signatures, artifact=artifact,
                      strict=False)
    problems = report.problems()
    return report.summary(), (problems[0] if problems else None)


def _manifest_of(envelope: Envelope, artifact: str) -> BundleManifest:
    if envelope.payload_type != PAYLOAD_TYPE:
        raise FormatError(artifact, f"payloadType {envelope.payload_type!r} is not a bundle manifest")
    return BundleManifest.from_bytes(envelope.payload, artifact)


def from_bundle(path: str | os.PathLike, policy: TrustPolicy | None) -> Previous:
    """``--against PREVIOUS``: the manifest of another bundle (file or media parts), judged by *policy*."""
    from airgap.bundle import Bundle

    with Bundle.open(path) as bundle:
        envelope = bundle.envelope()
        manifest = bundle.manifest()
        sboms = sbom.read_bundle(bundle, manifest)
    if envelope.payload != manifest.to_bytes():
        raise InputError(f"{path}: its signatures are not over its manifest; it cannot serve as the previous bundle")
    summary, problem = _judge(envelope, policy, os.fspath(path))
    return Previous(manifest, f"{path} (--against)", summary, problem, sboms)


class MemberBytes:
    """Members given as bytes, for readers that take a bundle (``member``/``read``): the
    SBOMs kept in the history, checked against their manifest like a bundle's."""

    def __init__(self, members: dict[str, bytes]):
        self._members = members

    def member(self, name: str) -> str | None:
        return name if name in self._members else None

    def read(self, member: str, cap: int) -> bytes:
        data = self._members[member]
        if len(data) > cap:
            raise FormatError(member, f"{len(data)} bytes exceeds the cap of {cap}")
        return data


@dataclass
class History:
    """The records under one history directory, for one target enclave."""

    directory: Path
    target: str
    skipped: list[str] = field(default_factory=list)  # records passed over, and why

    def _dir(self, name: str) -> Path:
        return self.directory / self.target / name

    def record(self, envelope: Envelope, sboms: dict[str, bytes] | None = None) -> Path:
        """Keep the signed envelope of a bundle just signed, and its SBOM members (for the next
        review's package changes) next to it; atomic, the same bundle overwrites itself."""
        manifest = _manifest_of(envelope, "signatures.json")
        d = self._dir(manifest.name)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{manifest.version}_{manifest.digest.split(':')[1][:16]}.json"
        if sboms:
            kept = _sbom_dir(path)
            kept.mkdir(exist_ok=True)
            for member, data in sboms.items():
                atomic_write(kept / member.rsplit("/", 1)[1], data)
        atomic_write(path, envelope.to_bytes())
        return path

    def previous(self, manifest: BundleManifest, policy: TrustPolicy) -> Previous | None:
        """The latest approved bundle of the same name at or below *manifest*'s version, or None."""
        candidates = []
        d = self._dir(manifest.name)
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                data = read_capped(path, MAX_SIGNATURES_BYTES, "a review record")
                envelope = Envelope.from_bytes(data, str(path))
                old = _manifest_of(envelope, str(path))
            except (AirgapError, OSError) as exc:
                self.skipped.append(f"{path}: {exc}")
                continue
            if old.digest == manifest.digest or (old.name, old.target) != (manifest.name, manifest.target):
                continue
            if compare_versions(old.version, manifest.version) > 0:
                self.skipped.append(f"{path}: {old.name} {old.version} was signed already, a later version than "
                                    f"{manifest.version}: the isolated side refuses older versions")
                continue
            summary, problem = _judge(envelope, policy, str(path))
            if problem:
                self.skipped.append(f"{path}: not accepted by the current policy ({problem})")
                continue
            candidates.append((old, path, summary))
        if not candidates:
            return None
        # Highest version; of two builds of one version, the one signed last.
        best = max(candidates, key=lambda c: (_version_key(c[0].version), c[1].stat().st_mtime_ns))
        previous = Previous(best[0], f"history record {best[1]}", best[2])
        try:
            previous.sboms = sbom.read_bundle(MemberBytes(_read_sboms(best[0], _sbom_dir(best[1]))), best[0])
        except (AirgapError, OSError) as exc:
            previous.sbom_problem = f"its SBOMs in {_sbom_dir(best[1])} cannot be used: {exc}"
        return previous


def _sbom_dir(record: Path) -> Path:
    return record.with_name(record.name[: -len(".json")] + ".sbom")


def _read_sboms(manifest: BundleManifest, directory: Path) -> dict[str, bytes]:
    """The kept SBOM members the manifest lists (missing ones are left to the reader to name)."""
    out = {}
    for record in manifest.members:
        if record.path.startswith(sbom.PREFIX):
            f = directory / record.path.rsplit("/", 1)[1]
            if f.is_file() and not f.is_symlink():
                out[record.path] = f.read_bytes()
    return out


_version_key = cmp_to_key(compare_versions)
