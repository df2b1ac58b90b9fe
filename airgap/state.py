"""Rollback state on the isolated side: per bundle name, and per destination.

Rules (docs/architecture.md, trust model):

* per name: a lower version is rejected; an equal version is accepted again
  only with the identical manifest digest (a re-import).  Versions compare by
  semantic versioning 2.0.0 precedence; build metadata does not count, so
  ``1.0.0+a`` and ``1.0.0+b`` are the *same* version and must carry the same
  content;
* per destination, across names: every tag (``repository:tag``), every
  ``files/`` path and the ``files/current`` switch remembers the bundle that set
  it (name, version, build time, manifest digest).  A bundle built earlier than
  that one may not move it to other content, unless it is the same name moving
  forward.

``state.json`` is a cache of the audit log (see :mod:`airgap.anchored`): it is
stamped with the sequence number and head of the audit entry it corresponds to
and names the trusted policy by version and digest.  It is small JSON, parsed
strictly, replaced atomically, and guarded by an flock on a separate lock file
(``os.replace`` swaps the inode, so a lock on the state file itself would not
exclude a writer that opened the new one).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path
from typing import Any

from airgap._internal import digest as _digest
from airgap._internal import timefmt
from airgap._internal.fsutil import atomic_write, open_nofollow
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap.exceptions import FormatError, InputError, InvalidValueError, RollbackError

__all__ = [
    "CURRENT", "FORMAT", "LOCK_FILE", "STATE_FILE", "Accepted", "PolicyRef", "SemVer", "Setter", "State", "StateStore",
    "check_version", "destinations",
]

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
_TYPE = "airgap-state"
_MAX_STATE = 16 * 1024 * 1024
# The regular expression published with semver 2.0.0 (numbered groups).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True, eq=False)
class SemVer:
    """A semantic version; ``==``/``<`` follow precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Parse *text*; raise InvalidValueError (a ValueError) if it is not semver 2.0.0."""
        m = _SEMVER.fullmatch(text) if isinstance(text, str) else None
        if not m or len(text) > 256:
            raise InvalidValueError(f"{text!r} is not a semantic version (semver 2.0.0)")
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        build = tuple(m.group(5).split(".")) if m.group(5) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, build)

    def _key(self) -> tuple:
        # semver §11: a version without pre-release ranks above any pre-release
        # of it; numeric identifiers rank below alphanumeric ones and compare as
        # numbers; a longer identifier list wins when all before are equal.
        if not self.prerelease:
            pre: tuple = (1,)
        else:
            pre = (0, tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in self.prerelease))
        return (self.major, self.minor, self.patch, pre)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: SemVer) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as *a* has lower, equal or higher semver precedence than *b*."""
    va, vb = SemVer.parse(a), SemVer.parse(b)
    return (va > vb) - (va < vb)




@dataclass(frozen=True)
class Accepted:
    """What was last accepted for one bundle name."""

    name: str
    version: str
    manifest_digest: str
    created: str
    time: str


@dataclass(frozen=True)
class Setter:
    """The bundle that set one destination, and the content it set it to."""

    name: str
    version: str
    created: str
    manifest_digest: str
    content: str  # image digest, file sha256, or the files version directory

    def describe(self) -> str:
        return f"{self.name} {self.version} (built {self.created}, manifest {self.manifest_digest})"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "created": self.created,
                "manifest_digest": self.manifest_digest, "content": self.content}


@dataclass(frozen=True)
class PolicyRef:
    """The trusted policy as the state names it: version and sha256 of its signed part."""

    version: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256}

    @classmethod
    def of(cls, policy) -> PolicyRef:
        import hashlib

        return cls(policy.version, hashlib.sha256(policy.signed_bytes()).hexdigest())

    @classmethod
    def parse(cls, obj: Any, where: str) -> PolicyRef:
        if (not isinstance(obj, dict) or set(obj) != {"version", "sha256"} or type(obj["version"]) is not int
                or obj["version"] < 1 or not isinstance(obj["sha256"], str) or not _digest.is_hex(obj["sha256"])):
            raise FormatError(where, "policy must be {version: integer >= 1, sha256: 64 lower-case hex}")
        return cls(obj["version"], obj["sha256"])


def destinations(manifest) -> dict[str, Setter]:
    """Every destination *manifest* sets on import: ``tag REPO:TAG``, ``file files/...``, ``files/current``."""
    def setter(content: str) -> Setter:
        return Setter(manifest.name, manifest.version, manifest.created, manifest.digest, content)

    out: dict[str, Setter] = {}
    for image in manifest.images:
        if image.tag:
            out[f"tag {image.destination}:{image.tag}"] = setter(image.digest)
    files = [m for m in manifest.members if m.path.startswith("files/")]
    for m in files:
        out[f"file {m.path}"] = setter("sha256:" + m.sha256)
    if files:
        out[CURRENT] = setter(f"{manifest.name}-{manifest.version}-{manifest.digest.split(':')[1][:12]}")
    return out


CURRENT = "files/current"
@dataclass
class State:
    """The content of ``state.json``: the stamp, the trusted policy, and the rollback records."""

    audit: tuple[int, str]
    policy: PolicyRef
    bundles: dict[str, Accepted] = field(default_factory=dict)
    destinations: dict[str, Setter] = field(default_factory=dict)

    def check(self, manifest) -> None:
        """Raise RollbackError if accepting *manifest* would go backwards, by name or at any destination."""
        check_version(self.bundles, manifest.name, manifest.version, manifest.digest)
        for dest, new in destinations(manifest).items():
            old = self.destinations.get(dest)
            if old is None or old.content == new.content or old.manifest_digest == new.manifest_digest:
                continue
            if old.name == new.name and SemVer.parse(new.version) > SemVer.parse(old.version):
                continue  # the same bundle name moving forward
            if timefmt.to_datetime(new.created) < timefmt.to_datetime(old.created):
                raise RollbackError(
                    f"{dest}",
                    f"was set by {old.describe()}; {new.name} {new.version} was built earlier "
                    f"({new.created}) and would move it back to {new.content}. Import a bundle built after "
                    f"{old.created}, or a newer version of {old.name}",
                )

    def accept(self, manifest, *, time: str | None = None) -> State:
        """The state after accepting *manifest* (checked first); the stamp is the caller's to set."""
        self.check(manifest)
        bundles = dict(self.bundles)
        old = bundles.get(manifest.name)
        if old is None or old.manifest_digest != manifest.digest:
            bundles[manifest.name] = Accepted(manifest.name, manifest.version, manifest.digest, manifest.created,
                                              time or timefmt.now())
        dests = dict(self.destinations)
        for dest, new in destinations(manifest).items():
            prev = dests.get(dest)
            if prev is None or prev.content != new.content or timefmt.to_datetime(new.created) >= timefmt.to_datetime(prev.created):
                dests[dest] = new
        return State(self.audit, self.policy, bundles, dests)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "_type": _TYPE,
            "version": FORMAT,
            "audit": {"seq": self.audit[0], "head": self.audit[1]},
            "policy": self.policy.to_dict(),
            "bundles": {
                a.name: {"version": a.version, "manifest_digest": a.manifest_digest, "created": a.created,
                         "time": a.time}
                for a in self.bundles.values()
            },
            "destinations": {k: v.to_dict() for k, v in self.destinations.items()},
        }
        return canonical_bytes(doc) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str) -> State:
        obj = loads_strict(data, artifact, max_size=_MAX_STATE)
        if isinstance(obj, dict) and obj.get("_type") == _TYPE and obj.get("version") == 1:
            raise FormatError(artifact, "written by an airgap without anchored state (format 1, no audit stamp)")
        fields = {"_type", "version", "audit", "policy", "bundles", "destinations"}
        if not isinstance(obj, dict) or set(obj) != fields:
            raise FormatError(artifact, f"expected exactly {', '.join(sorted(fields))}")
        if obj["_type"] != _TYPE or obj["version"] != FORMAT:
            raise FormatError(artifact, f"not an {_TYPE} format {FORMAT} file")
        stamp = obj["audit"]
        if (not isinstance(stamp, dict) or set(stamp) != {"seq", "head"} or type(stamp["seq"]) is not int
                or stamp["seq"] < 1 or not isinstance(stamp["head"], str) or not _digest.is_hex(stamp["head"])):
            raise FormatError(artifact, "audit must be {seq: integer >= 1, head: 64 lower-case hex}")
        policy = PolicyRef.parse(obj["policy"], artifact)
        if not isinstance(obj["bundles"], dict) or not isinstance(obj["destinations"], dict):
            raise FormatError(artifact, "bundles and destinations must be objects")
        bundles = {name: _accepted(name, rec, f"{artifact}: bundles.{name}") for name, rec in obj["bundles"].items()}
        dests = {dest: _setter(rec, f"{artifact}: destinations.{dest}") for dest, rec in obj["destinations"].items()}
        return cls((stamp["seq"], stamp["head"]), policy, bundles, dests)


FORMAT = 2


def _strings(rec: Any, keys: set[str], where: str) -> dict[str, str]:
    if not isinstance(rec, dict) or set(rec) != keys:
        raise FormatError(where, f"expected exactly {', '.join(sorted(keys))}")
    if not all(isinstance(v, str) for v in rec.values()):
        raise FormatError(where, "fields must be strings")
    try:
        SemVer.parse(rec["version"])
        timefmt.to_datetime(rec["created"])
    except ValueError as exc:
        raise FormatError(where, str(exc)) from None
    if not _digest.is_digest(rec["manifest_digest"]):
        raise FormatError(where, "manifest_digest is not sha256:<64 lower-case hex>")
    return rec


def _accepted(name: str, rec: Any, where: str) -> Accepted:
    r = _strings(rec, {"version", "manifest_digest", "created", "time"}, where)
    return Accepted(name, r["version"], r["manifest_digest"], r["created"], r["time"])


def _setter(rec: Any, where: str) -> Setter:
    r = _strings(rec, {"name", "version", "created", "manifest_digest", "content"}, where)
    return Setter(r["name"], r["version"], r["created"], r["manifest_digest"], r["content"])


def check_version(records: dict[str, Accepted], name: str, version: str, manifest_digest: str) -> None:
    """Raise RollbackError if accepting (*name*, *version*, *digest*) would go backwards for that name."""
    artifact = f"bundle {name} {version}"
    try:
        new = SemVer.parse(version)
    except ValueError as exc:
        raise FormatError(artifact, str(exc)) from None
    if not isinstance(manifest_digest, str) or not _digest.is_digest(manifest_digest):
        raise FormatError(artifact, f"manifest digest {manifest_digest!r} is not sha256:<64 lower-case hex>")
    old = records.get(name)
    if old is None:
        return
    accepted = SemVer.parse(old.version)
    if new < accepted:
        raise RollbackError(artifact, f"older than accepted version {old.version}")
    if new == accepted and manifest_digest != old.manifest_digest:
        raise RollbackError(
            artifact,
            f"version {old.version} was already accepted with different content {old.manifest_digest}",
        )


class StateStore:
    """``state.json`` (+ ``state.lock``) in *state_dir*: read, written atomically, locked."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def load(self) -> State | None:
        """The state, or None if there is no ``state.json``; FormatError if it does not parse."""
        try:
            fd = open_nofollow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FormatError(str(self.path), f"cannot be read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(_MAX_STATE + 1)
        return State.from_bytes(data, str(self.path))

    def write(self, state: State) -> None:
        atomic_write(self.path, state.to_bytes(), 0o640, root=self.dir)

    @contextmanager
    def lock(self, *, shared: bool) -> Iterator[None]:
        """Readers share, the one writer excludes; a reader never creates the directory."""
        if shared and not self.dir.exists():
            yield
            return
        if not shared:
            self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_nofollow(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise InputError(f"{self.dir / LOCK_FILE}: cannot open state lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
