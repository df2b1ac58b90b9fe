"""The install set: the released wheels the rollout copies to an isolated host, and nothing else.

``airgap toolkit wheels SOURCE --trust T -o DIR`` runs on the controller, with
the controller's own toolkit.  SOURCE is a bundle (verified, then judged by
:func:`airgap.toolkit.installable`) or a toolkit release directory (its
statement verified and its wheels checked: the first install on a fresh
site).  Only when every wheel is covered does it write, into DIR:

* the wheels, each hashed as it is written and compared with the release;
* ``toolkit-release.json``, the statement that covers them;
* ``requirements.txt``: one ``name==version --hash=sha256:…`` line per wheel,
  so ``pip install --no-index --require-hashes -r requirements.txt`` on the
  host checks every digest again as it installs.

Otherwise it writes nothing and refuses (exit 1), naming each wheel and what
is missing about the statement; the rollout then keeps the installed toolkit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from airgap import toolkit
from airgap._internal.fsutil import atomic_write, atomic_writer, fsync_dir
from airgap._internal.text import plural
from airgap.exceptions import InputError, IntegrityError, OperationError
from airgap.toolkit import RELEASE_FILE, ReleaseStatement, ToolkitRefused, ToolkitRelease, WheelRecord

__all__ = ["AUDIT_ACTION", "InstallSet", "REQUIREMENTS", "from_bundle", "from_release_dir", "requirements"]

AUDIT_ACTION = "toolkit-wheels"  # the verb, as an audit action (a lower-case word)

REQUIREMENTS = "requirements.txt"
_CHUNK = 1024 * 1024


@dataclass
class InstallSet:
    """What was written: the release, its wheels, where, and from what source."""

    output: Path
    release: ToolkitRelease
    source: str
    signers: str
    wheels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"output": str(self.output), "source": self.source, "version": self.release.version,
                "commit": self.release.commit, "signers": self.signers, "wheels": self.wheels,
                "requirements": str(self.output / REQUIREMENTS)}


def requirements(release: ToolkitRelease) -> bytes:
    """pip's hash-checking requirements for exactly the release's wheels."""
    lines = []
    for w in release.wheels:
        name, version = toolkit.wheel_project(w.file)
        lines.append(f"{name}=={version} --hash=sha256:{w.sha256}\n")
    return "".join(lines).encode()


def _write(out: Path, release: ToolkitRelease, statement: bytes, chunks: Callable[[WheelRecord], Iterable[bytes]],
           source: str, signers: str) -> InstallSet:
    """Write the set into a new directory next to *out*, each wheel hashed as written, and
    put it in place only when all of it is right: *out* holds the whole set or what it held."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out}: exists and is not a directory")
    work = parent / f".{out.name}.{os.getpid()}.new"
    old = parent / f".{out.name}.{os.getpid()}.old"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    try:
        result = InstallSet(out, release, source, signers)
        for w in release.wheels:
            _write_wheel(work / w.file, w, chunks(w), source)
            result.wheels.append(w.file)
        atomic_write(work / RELEASE_FILE, statement)
        atomic_write(work / REQUIREMENTS, requirements(release))
        if out.exists():
            os.replace(out, old)
        os.replace(work, out)
        fsync_dir(parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return result


def _write_wheel(path: Path, w: WheelRecord, chunks: Iterable[bytes], source: str) -> None:
    h, size = hashlib.sha256(), 0
    # The check is inside the block: a wheel that differs never gets its name.
    with atomic_writer(path, 0o644, overwrite=False) as f:
        for chunk in chunks:
            h.update(chunk)
            size += len(chunk)
            f.write(chunk)
        if (size, h.hexdigest()) != (w.size, w.sha256):
            raise IntegrityError(w.file, f"read {plural(size, 'byte')} with sha256 {h.hexdigest()[:16]}…, the release lists "
                                         f"{plural(w.size, 'byte')} with {w.sha256[:16]}…; nothing written from {source}")


def from_release_dir(directory: str | os.PathLike, policy, out: str | os.PathLike) -> InstallSet:
    """A toolkit release directory (wheels + ``toolkit-release.json``), for a site with no toolkit yet."""
    d = Path(directory)
    statement = ReleaseStatement.from_file(d / RELEASE_FILE)
    statement.verify(policy)
    problems = toolkit.check_wheels_dir(statement.release, d)
    if problems:
        raise ToolkitRefused(str(d), problems)

    def chunks(w: WheelRecord) -> Iterator[bytes]:
        with open(d / w.file, "rb", opener=lambda p, fl: os.open(p, fl | os.O_NOFOLLOW)) as f:
            while data := f.read(_CHUNK):
                yield data

    return _write(Path(out), statement.release, statement.to_bytes(), chunks, str(d), statement.status(policy))


def from_verified(verified, out: str | os.PathLike) -> InstallSet:
    """The covered wheels of a verified bundle (``manifest``, ``policy``, ``read``, ``stream``)."""
    coverage = toolkit.installable(verified)
    statement = verified.read(toolkit.RELEASE_MEMBER, toolkit.MAX_RELEASE_BYTES)

    def chunks(w: WheelRecord) -> Iterable[bytes]:
        return verified.stream(toolkit.WHEELS_PREFIX + w.file)

    # installable() returns only a coverage that is ok, and ok needs a covered
    # wheel, which coverage() records only against a release.
    assert coverage.release is not None
    m = verified.manifest
    return _write(Path(out), coverage.release, statement, chunks, f"bundle {m.name} {m.version}", coverage.signers)


def from_bundle(path: str | os.PathLike, *, trust_path, state_dir=None, now: datetime, out: str | os.PathLike,
                progress: bool = False) -> InstallSet:
    """Verify the bundle with this toolkit, then write its covered wheels (or refuse).

    The wheels come from the object verify returned (the bundle it opened), each
    hashed against the verified manifest as it is written.  With *state_dir*
    the acceptance (the wheels written) or the refusal (an uncovered wheel
    too) is written to ``STATE/audit.log``, as ``extract`` audits.
    """
    from airgap.auditing import AuditTrail
    from airgap.receive import accepted_object, verified_audited

    trail = AuditTrail.of(state_dir)
    with verified_audited(path, trail, AUDIT_ACTION, trust_path=trust_path, now=now, progress=progress,
                          hash_content=False) as verified:
        obj = accepted_object(path, verified.manifest, output=os.fspath(out))
        with trail.refusals(AUDIT_ACTION, obj):
            try:
                result = from_verified(verified, out)
            except OSError as exc:
                raise OperationError(f"{out}: cannot write: {exc.strerror or exc}") from None
            verified.content_used("the released wheels hashed as they were written")
        trail.accepted(AUDIT_ACTION, obj, detail={"toolkit": result.release.version, "commit": result.release.commit,
                                                  "wheels": result.wheels, "signers": result.signers})
        return result
