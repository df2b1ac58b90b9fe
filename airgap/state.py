"""Rollback state on the isolated side: the highest accepted version per bundle name.

Rules (docs/architecture.md, trust model): a lower version is rejected; an equal version is
accepted again only with the identical manifest digest (a re-import).  Versions
compare by semantic versioning 2.0.0 precedence; build metadata does not count,
so ``1.0.0+a`` and ``1.0.0+b`` are the *same* version and must carry the same
content.

The state file is small JSON, parsed strictly, replaced atomically, and guarded
by an flock on a separate lock file (``os.replace`` swaps the inode, so a lock
on the state file itself would not exclude a writer that opened the new one).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import total_ordering
from pathlib import Path
from typing import Any

from airgap._internal.fsutil import atomic_write, open_nofollow
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap.exceptions import FormatError, InputError, RollbackError

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
_TYPE = "airgap-state"
_MAX_STATE = 16 * 1024 * 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
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
        """Parse *text*; raise ValueError if it is not semver 2.0.0."""
        m = _SEMVER.fullmatch(text) if isinstance(text, str) else None
        if not m or len(text) > 256:
            raise ValueError(f"{text!r} is not a semantic version (semver 2.0.0)")
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
    time: str


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StateStore:
    """Rollback state kept in *state_dir* (``state.json`` + ``state.lock``)."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    # -- public -------------------------------------------------------------

    def get(self, bundle_name: str) -> Accepted | None:
        """The accepted record for *bundle_name*, or None if it was never accepted."""
        with self._lock(shared=True):
            return self._load().get(bundle_name)

    def all(self) -> list[Accepted]:
        """Every accepted record, sorted by name."""
        with self._lock(shared=True):
            return sorted(self._load().values(), key=lambda a: a.name)

    def check(self, name: str, version: str, manifest_digest: str) -> None:
        """Raise RollbackError if accepting (*name*, *version*, *digest*) would go backwards."""
        with self._lock(shared=True):
            self._check(self._load(), name, version, manifest_digest)

    def record(self, name: str, version: str, manifest_digest: str, *, time: str | None = None) -> Accepted:
        """Record an accepted bundle atomically; refuses anything :meth:`check` refuses."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock(shared=False):
            records = self._load()
            self._check(records, name, version, manifest_digest)
            old = records.get(name)
            if old is not None and old.manifest_digest == manifest_digest and SemVer.parse(old.version) == SemVer.parse(version):
                return old  # a re-import changes nothing, not even the time
            new = Accepted(name, version, manifest_digest, time or _now())
            records[name] = new
            self._store(records)
            return new

    # -- internals ----------------------------------------------------------

    @staticmethod
    def _check(records: dict[str, Accepted], name: str, version: str, manifest_digest: str) -> None:
        artifact = f"bundle {name} {version}"
        try:
            new = SemVer.parse(version)
        except ValueError as exc:
            raise FormatError(artifact, str(exc)) from None
        if not isinstance(manifest_digest, str) or not _DIGEST.fullmatch(manifest_digest):
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

    @contextmanager
    def _lock(self, *, shared: bool) -> Iterator[None]:
        if shared and not self.dir.exists():
            yield  # nothing recorded yet, and a reader must not create directories
            return
        try:
            fd = open_nofollow(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise InputError(f"{self.dir / LOCK_FILE}: cannot open state lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, Accepted]:
        artifact = str(self.path)
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(_MAX_STATE + 1)
        except FileNotFoundError:
            return {}
        obj = loads_strict(data, artifact, max_size=_MAX_STATE)
        if not isinstance(obj, dict) or set(obj) != {"_type", "version", "bundles"}:
            raise FormatError(artifact, "expected exactly _type, version and bundles")
        if obj["_type"] != _TYPE or obj["version"] != 1:
            raise FormatError(artifact, f"not an {_TYPE} version 1 file")
        if not isinstance(obj["bundles"], dict):
            raise FormatError(artifact, "bundles must be an object")
        records: dict[str, Accepted] = {}
        for name, rec in obj["bundles"].items():
            where = f"{artifact}: bundles.{name}"
            if not isinstance(rec, dict) or set(rec) != {"version", "manifest_digest", "time"}:
                raise FormatError(where, "expected exactly version, manifest_digest and time")
            if not all(isinstance(v, str) for v in rec.values()):
                raise FormatError(where, "fields must be strings")
            try:
                SemVer.parse(rec["version"])
            except ValueError as exc:
                raise FormatError(where, str(exc)) from None
            if not _DIGEST.fullmatch(rec["manifest_digest"]):
                raise FormatError(where, "manifest_digest is not sha256:<64 lower-case hex>")
            records[name] = Accepted(name, rec["version"], rec["manifest_digest"], rec["time"])
        return records

    def _store(self, records: dict[str, Accepted]) -> None:
        doc: dict[str, Any] = {
            "_type": _TYPE,
            "version": 1,
            "bundles": {
                a.name: {"version": a.version, "manifest_digest": a.manifest_digest, "time": a.time}
                for a in records.values()
            },
        }
        atomic_write(self.path, canonical_bytes(doc) + b"\n", 0o640, root=self.dir)
