"""Toolkit releases: the only wheels that may install airgap on an isolated host.

The toolkit that verifies a bundle must not come unchecked from the bundle it
verifies, or the builder chooses the program that judges the builder.  So the
wheels carried in a bundle (``files/wheels/``) are installed only when a
**toolkit release** lists them: a DSSE-signed statement (payloadType
:data:`PAYLOAD_TYPE`) naming every wheel of the toolkit and its dependencies
(file name, size, sha256), the toolkit's version and the source commit it was
built from, signed by a threshold of the trust policy's ``toolkit`` role.
The builder carries the statement next to the wheels
(:data:`RELEASE_MEMBER`), so the manifest pins it and builder and officer
signatures cover it too; its authority comes from the toolkit role only.

Layers, as in python-tuf: :class:`ToolkitRelease` is the payload (no
signatures, no I/O); :class:`ReleaseStatement` is the signed envelope around
it; :func:`coverage` judges a bundle's wheels from bytes and a policy, without
I/O; :func:`installable` is what the rollout calls with a verified bundle.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from airgap import keyroles
from airgap._internal import schema
from airgap._internal.fsutil import atomic_write, read_capped
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.text import plural
from airgap.dsse import Envelope
from airgap.exceptions import FormatError, InputError, IntegrityError, RejectedError, SignatureError
from airgap.trust import SignatureReport, TrustPolicy, evaluate

if TYPE_CHECKING:
    from airgap.manifest import MemberRecord

__all__ = [
    "PAYLOAD_TYPE",
    "RELEASE_FILE",
    "RELEASE_MEMBER",
    "Coverage",
    "ReleaseStatement",
    "ToolkitRefused",
    "ToolkitRelease",
    "WheelRecord",
    "check_wheels",
    "check_wheels_dir",
    "coverage",
    "installable",
    "make_release",
    "scan_wheels",
]

PAYLOAD_TYPE = "application/vnd.airgap.toolkit-release+json"
RELEASE_FILE = "toolkit-release.json"
WHEELS_PREFIX = "files/wheels/"
RELEASE_MEMBER = WHEELS_PREFIX + RELEASE_FILE
MAX_RELEASE_BYTES = 1024 * 1024
ROLE = "toolkit"
PACKAGE = "airgap"
_TYPE = "airgap-toolkit-release"
_CHUNK = 1024 * 1024


class ToolkitRefused(RejectedError):
    """The wheels of a bundle may not be installed: ``problems`` names each wheel and the
    statement that is missing or insufficient."""

    def __init__(self, artifact: str, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(artifact, "; ".join(self.problems))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": self.problems}


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    text = resources.files("airgap").joinpath("schemas/toolkit-release.schema.json").read_text("utf-8")
    return jsonschema.Draft202012Validator(json.loads(text))


def wheel_project(file: str) -> tuple[str, str]:
    """(normalised project name, version) from a wheel file name (PEP 427/491)."""
    parts = file[: -len(".whl")].split("-")
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True)
class WheelRecord:
    file: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ToolkitRelease:
    """What the toolkit role approves: these exact wheels install airgap *version*."""

    version: str
    commit: str
    wheels: tuple[WheelRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": _TYPE,
            "format": 1,
            "name": PACKAGE,
            "version": self.version,
            "source": {"commit": self.commit},
            "wheels": [w.to_dict() for w in self.wheels],
        }

    def to_bytes(self) -> bytes:
        """The signed payload: canonical JSON, the only form :meth:`from_bytes` accepts."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def create(cls, version: str, commit: str, wheels: Iterable[WheelRecord], artifact: str = RELEASE_FILE) -> ToolkitRelease:
        """A release, checked exactly as a received one is."""
        release = cls(version, commit, tuple(sorted(wheels, key=lambda w: w.file)))
        return cls.from_bytes(release.to_bytes(), artifact)

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str = RELEASE_FILE) -> ToolkitRelease:
        doc = loads_strict(data, artifact, max_size=MAX_RELEASE_BYTES)
        errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            raise FormatError(artifact, f"not a toolkit release: {schema.describe(jsonschema.exceptions.best_match(errors))}")
        if canonical_bytes(doc) != data:
            raise FormatError(artifact, "toolkit release is not in canonical JSON form")
        wheels = tuple(WheelRecord(w["file"], w["size"], w["sha256"]) for w in doc["wheels"])
        files = [w.file for w in wheels]
        if files != sorted(set(files)):
            raise FormatError(artifact, "wheels must be sorted by file name and listed once each")
        projects = [wheel_project(f)[0] for f in files]
        dupes = sorted({p for p in projects if projects.count(p) > 1})
        if dupes:
            raise FormatError(artifact, f"more than one wheel of {', '.join(dupes)}: pip would choose, not the release")
        own = [f for f in files if wheel_project(f) == (PACKAGE, doc["version"])]
        if not own:
            raise FormatError(artifact, f"lists no {PACKAGE} {doc['version']} wheel (a release of the toolkit "
                                        "carries the toolkit's own wheel)")
        return cls(doc["version"], doc["source"]["commit"], wheels)

    def wheel(self, file: str) -> WheelRecord | None:
        return next((w for w in self.wheels if w.file == file), None)

    @property
    def short(self) -> str:
        return f"{PACKAGE} {self.version} (commit {self.commit[:12]}, {plural(len(self.wheels), 'wheel')})"


# --------------------------------------------------------------------------- the signed statement


@dataclass
class ReleaseStatement:
    """A toolkit release in its DSSE envelope (the file ``toolkit-release.json``)."""

    release: ToolkitRelease
    envelope: Envelope
    artifact: str = RELEASE_FILE

    @classmethod
    def unsigned(cls, release: ToolkitRelease, artifact: str = RELEASE_FILE) -> ReleaseStatement:
        return cls(release, Envelope(release.to_bytes(), PAYLOAD_TYPE), artifact)

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str = RELEASE_FILE) -> ReleaseStatement:
        """Parse strictly; the payload type is checked before the payload is read."""
        envelope = Envelope.from_bytes(data, artifact, max_size=MAX_RELEASE_BYTES)
        if envelope.payload_type != PAYLOAD_TYPE:
            raise FormatError(artifact, f"payloadType {envelope.payload_type!r} is not a toolkit release "
                                        f"({PAYLOAD_TYPE!r})")
        return cls(ToolkitRelease.from_bytes(envelope.payload, artifact), envelope, artifact)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ReleaseStatement:
        return cls.from_bytes(read_capped(path, MAX_RELEASE_BYTES, "a toolkit release statement"), os.fspath(path))

    def to_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def write(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        atomic_write(Path(path), self.to_bytes(), overwrite=overwrite)

    def report(self, policy: TrustPolicy) -> SignatureReport:
        """The strict evaluation of the signatures against the policy's toolkit role."""
        if not policy.has_role(ROLE):
            raise SignatureError(self.artifact, f"the trust policy ({policy.artifact}, version {policy.version}) has "
                                                "no toolkit role, so it accepts no toolkit release")
        env = self.envelope
        return evaluate(policy, env.payload_type, env.payload, env.signatures, roles=(ROLE,), artifact=self.artifact)

    def verify(self, policy: TrustPolicy) -> SignatureReport:
        """Raise :class:`SignatureError` unless a threshold of toolkit keys, and nobody else, signed."""
        report = self.report(policy)
        report.raise_for_status()
        return report

    def sign(self, policy: TrustPolicy, signer: keyroles.Signer) -> None:
        """Add one toolkit key's signature (toolkit keys sign one at a time, like root keys)."""
        keyroles.require_role(policy, signer, ROLE)
        keyroles.require_new_signature(signer, self.envelope.signatures, self.envelope.pae(), self.artifact)
        self.envelope.add_signature(signer.key, artifact=self.artifact)

    def status(self, policy: TrustPolicy) -> str:
        """``toolkit 1 of 2 (toolkit-1)`` plus the first problem, for people."""
        try:
            report = self.report(policy)
        except SignatureError as exc:
            return exc.reason
        role = report.roles[ROLE]
        who = ", ".join(k.label for k in role.keys)
        problems = report.problems()
        # A missing threshold is said by the count already; other problems are not.
        extra = f"; {problems[0]}" if problems and role.satisfied else ""
        return f"toolkit {len(role.keys)} of {role.threshold}" + (f" ({who})" if who else "") + extra


# --------------------------------------------------------------------------- wheel directories


def scan_wheels(directory: str | os.PathLike) -> list[tuple[Path, WheelRecord]]:
    """Every ``*.whl`` in *directory*, hashed while read; links and odd files are refused."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory of wheels")
    out = []
    for path in sorted(d.iterdir()):
        if not path.name.endswith(".whl"):
            continue
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file (links are not followed)")
        size, sha = _hash(path)
        out.append((path, WheelRecord(path.name, size, sha)))
    if not out:
        raise InputError(f"{d}: no wheels (*.whl) there")
    return out


def _hash(path: Path) -> tuple[int, str]:
    import hashlib

    h = hashlib.sha256()
    size = 0
    with open(path, "rb", opener=lambda p, fl: os.open(p, fl | os.O_NOFOLLOW)) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def make_release(wheels_dir: str | os.PathLike, version: str, commit: str) -> ToolkitRelease:
    """The release of every wheel in *wheels_dir*; it must hold the ``airgap`` *version* wheel."""
    records = [r for _, r in scan_wheels(wheels_dir)]
    try:
        return ToolkitRelease.create(version, commit, records, artifact=os.fspath(wheels_dir))
    except FormatError as exc:
        raise InputError(f"{exc.artifact}: {exc.reason}") from None


def check_wheels_dir(release: ToolkitRelease, directory: str | os.PathLike) -> list[str]:
    """Problems of a wheel directory against *release* (empty: every wheel listed, every listed wheel there)."""
    return check_wheels(release, {r.file: r for _, r in scan_wheels(directory)}, directory)


def check_wheels(release: ToolkitRelease, found: dict[str, WheelRecord], where: str | os.PathLike) -> list[str]:
    """Problems of a set of wheels (file name -> record) against *release*."""
    problems = []
    for file, rec in found.items():
        want = release.wheel(file)
        if want is None:
            problems.append(f"{file}: not listed in the toolkit release")
        elif (want.size, want.sha256) != (rec.size, rec.sha256):
            problems.append(f"{file}: sha256 {rec.sha256[:16]}… ({plural(rec.size, 'byte')}), the release lists "
                            f"{want.sha256[:16]}… ({plural(want.size, 'byte')})")
    problems += [f"{w.file}: listed in the release but not in {where}" for w in release.wheels if w.file not in found]
    return problems


# --------------------------------------------------------------------------- a bundle's wheels


@dataclass
class Coverage:
    """Which of a bundle's wheels a valid toolkit release lists (see :func:`coverage`)."""

    release: ToolkitRelease | None
    statement_problem: str | None  # why the statement does not count, if it does not
    signers: str = ""  # "toolkit 1 of 1 (toolkit-1)" for a statement that counts
    covered: list[str] = field(default_factory=list)  # member paths of covered wheels
    uncovered: dict[str, str] = field(default_factory=dict)  # member path -> why not
    missing: list[str] = field(default_factory=list)  # wheels the release lists, the bundle lacks

    @property
    def wheels(self) -> list[str]:
        return sorted([*self.covered, *self.uncovered])

    @property
    def ok(self) -> bool:
        return bool(self.covered) and not self.uncovered and not self.missing and self.statement_problem is None

    def problems(self) -> list[str]:
        """The statement's problem first, then one line per wheel that may not be installed."""
        out = [self.statement_problem] if self.statement_problem else []
        out += [f"{path}: {why}" for path, why in sorted(self.uncovered.items())]
        out += [f"{RELEASE_MEMBER}: lists {f}, which the bundle does not carry" for f in self.missing]
        if not self.wheels:
            out.append(f"the bundle carries no wheels under {WHEELS_PREFIX}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release.to_dict() if self.release else None,
            "statement_problem": self.statement_problem,
            "signers": self.signers,
            "covered": self.covered,
            "uncovered": self.uncovered,
            "missing": self.missing,
            "ok": self.ok,
        }


def is_bundle_wheel(path: str) -> bool:
    """Whether member *path* is a wheel the toolkit installs (``files/wheels/*.whl``, not nested)."""
    return path.startswith(WHEELS_PREFIX) and path.endswith(".whl") and "/" not in path[len(WHEELS_PREFIX):]


def bundle_wheels(manifest) -> list:
    """The manifest's records of the wheels a bundle carries (``files/wheels/*.whl``)."""
    return [m for m in manifest.members if is_bundle_wheel(m.path)]


def coverage(manifest, policy: TrustPolicy | None, statement: bytes | None) -> Coverage:
    """Judge a bundle's wheels from its manifest, the policy and the statement's bytes (no I/O).

    The manifest's digests stand for the wheels' bytes: whoever acts on the
    answer reads the wheels from a verified bundle, which checks them.
    """
    release, problem, signers = None, None, ""
    if statement is None:
        problem = f"the bundle carries no toolkit release statement ({RELEASE_MEMBER})"
    else:
        try:
            parsed = ReleaseStatement.from_bytes(statement, RELEASE_MEMBER)
            release = parsed.release
            if policy is None:
                problem = "the toolkit release statement was not checked (no trust policy given)"
            else:
                report = parsed.report(policy)
                problems = report.problems()
                if problems:
                    problem = f"{RELEASE_MEMBER}: {problems[0]}"
                else:
                    signers = parsed.status(policy)
        except (FormatError, SignatureError) as exc:
            problem = f"{exc.artifact}: {exc.reason}"
    result = Coverage(release, problem, signers)
    for record in bundle_wheels(manifest):
        file = record.path[len(WHEELS_PREFIX):]
        listed = release.wheel(file) if release is not None else None
        if release is None:
            result.uncovered[record.path] = "no valid toolkit release lists it"
        elif listed is None:
            result.uncovered[record.path] = f"not listed in toolkit release {release.version}"
        elif (listed.size, listed.sha256) != (record.size, record.sha256):
            result.uncovered[record.path] = (f"sha256 {record.sha256[:16]}… is not the {listed.sha256[:16]}… that "
                                             f"toolkit release {release.version} lists for this file")
        elif problem is not None:
            result.uncovered[record.path] = f"listed in toolkit release {release.version}, whose statement does not count"
        else:
            result.covered.append(record.path)
    if release is not None and problem is None:
        carried = {r.path[len(WHEELS_PREFIX):] for r in bundle_wheels(manifest)}
        result.missing = [w.file for w in release.wheels if w.file not in carried]
    return result


def installable(verified) -> Coverage:
    """The wheels of a verified bundle that may be installed, or :class:`ToolkitRefused`.

    *verified* is the object ``verify()`` returned (its ``manifest``,
    ``policy`` and ``read(name, cap)``, which hashes what it reads against the
    manifest).  Every wheel must be listed, with its digest, by a toolkit
    release the policy's toolkit role signed; otherwise the refusal names each
    wheel and what is missing or insufficient about the statement.
    """
    manifest = verified.manifest
    statement = verified.read(RELEASE_MEMBER, MAX_RELEASE_BYTES) if manifest.member(RELEASE_MEMBER) else None
    result = coverage(manifest, verified.policy, statement)
    if not result.ok:
        raise ToolkitRefused(f"bundle {manifest.name} {manifest.version}", result.problems())
    return result


def read_member_checked(bundle, manifest, name: str, cap: int) -> bytes | None:
    """A small member's bytes from an opened (not yet verified) bundle, checked against the manifest.

    For the review before signing: the statement shown must be the one the
    manifest pins.  None when the manifest does not list *name*.
    """
    record = manifest.member(name)
    if record is None:
        return None
    return read_record_checked(bundle, record, cap)


def read_record_checked(bundle, record: MemberRecord, cap: int) -> bytes:
    """The bytes of the member the manifest's *record* lists, checked against the record."""
    import hashlib

    name = record.path
    member = bundle.member(name)
    if member is None:
        raise IntegrityError(name, "listed in the manifest but absent from the archive")
    data = bundle.read(member, cap)
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise IntegrityError(name, "sha256 does not match the manifest")
    return data
