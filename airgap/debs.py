"""The nodes' OS packages in the bundle: resolved by apt on the connected side, installed by apt inside.

``packages:`` in a spec names Debian packages.  On the connected side apt
itself decides what they need: ``apt-get`` runs in a private apt root (its own
``apt.conf``, sources list, lists and cache; the builder's ``/etc/apt`` and
``/var/lib/dpkg`` are never read) with a dpkg status that is either empty
(everything down to libc6 is carried) or the target's own base system (only
what it lacks is carried).  ``--print-uris`` gives the closure with the size
and hash apt expects; ``--download-only`` fetches it (apt checks those hashes
against the signed indexes of the sources); every file is hashed again here.

The bundle carries the ``.deb`` files under ``files/packages/`` with a
``Packages`` index and a ``Release`` file made at build from the files
themselves (their control paragraphs as ``dpkg-deb`` reads them, their size
and sha256): the index is a bundle member, pinned and signed like every
other, so the isolated side generates nothing and parses no package.  There,
``airgap extract`` (or import's files directory) gives a flat apt repository
that apt reads through a ``file:`` source as its only source.  It is marked
``[trusted=yes]`` because its trust is the bundle's: the signatures were
checked by ``verify`` and every byte was hashed on the way out; apt then
checks each ``.deb`` against the index's SHA256 once more.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap._internal import fsutil
from airgap._internal.text import plural
from airgap.exceptions import IntegrityError, OperationError, SpecError

__all__ = ["DebRecord", "PackageSet", "ResolvedDeb", "resolve", "private_apt_root", "packages_index", "release_file",
           "write_repository", "EXPORT_ACTION", "INDEX_DIR"]

EXPORT_ACTION = "packages-export"
"""``airgap packages export`` as an audit action (a lower-case word)."""

INDEX_DIR = "packages"
"""The repository's directory inside ``files/``."""
_HASHES = {"SHA512": "sha512", "SHA256": "sha256", "SHA1": "sha1", "MD5Sum": "md5"}


@dataclass(frozen=True)
class DebRecord:
    package: str
    version: str
    architecture: str
    path: str  # member path, files/packages/<file>.deb

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "architecture": self.architecture, "path": self.path}


@dataclass(frozen=True)
class PackageSet:
    """What the signed manifest says about the OS packages a bundle carries."""

    release: str
    architecture: str
    names: tuple[str, ...]  # as the spec asks
    debs: tuple[DebRecord, ...]
    index: tuple[str, ...]  # member paths of Packages and Release

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, "architecture": self.architecture, "names": list(self.names),
                "debs": [d.to_dict() for d in self.debs], "index": list(self.index)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PackageSet:
        return cls(d["release"], d["architecture"], tuple(d["names"]),
                   tuple(DebRecord(x["package"], x["version"], x["architecture"], x["path"]) for x in d["debs"]),
                   tuple(d["index"]))

    def describe(self) -> list[str]:
        """Lines for people who approve a bundle (from the signed manifest only)."""
        lines = [f"  for {self.release}/{self.architecture}, asked for: {', '.join(self.names)}"]
        lines += [f"    {d.package} {d.version} ({d.architecture})" for d in self.debs]
        return lines


@dataclass(frozen=True)
class ResolvedDeb:
    """One .deb of the closure, on the builder's disk, hashed."""

    path: Path
    package: str
    version: str
    architecture: str
    control: str  # the control paragraph as dpkg-deb reads it (no trailing newline)
    size: int
    sha256: str

    @property
    def file_name(self) -> str:
        # The Debian pool's name: the epoch is left out of file names.
        version = self.version.split(":", 1)[1] if ":" in self.version else self.version
        return f"{self.package}_{version}_{self.architecture}.deb"


# --------------------------------------------------------------------------- connected side

APT_CONF = """\
// Written by airgap build: a private apt root; nothing of the builder's apt is read.
Dir "{root}/";
Dir::State::status "{root}/var/lib/dpkg/status";
Dir::Bin::Methods "/usr/lib/apt/methods";
Dir::Bin::dpkg "/usr/bin/dpkg";
Dir::Log "{root}/var/log/apt";
APT::Architecture "{arch}";
APT::Architectures {{ "{arch}"; }};
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Get::AllowUnauthenticated "false";
Acquire::Languages "none";
Debug::NoLocking "true";
"""


def private_apt_root(root: Path, sources: Path, baseline: Path | None, arch: str) -> dict[str, str]:
    """Make *root* an apt root of its own (sources, dpkg status, lists, cache); return the environment that uses it."""
    for d in ("etc/apt/apt.conf.d", "etc/apt/sources.list.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg", "var/log/apt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    name = "sources.list.d/airgap.sources" if sources.name.endswith(".sources") else "sources.list"
    (root / "etc/apt" / name).write_bytes(sources.read_bytes())
    status = baseline.read_bytes() if baseline else b""
    (root / "var/lib/dpkg/status").write_bytes(status)
    (root / "etc/apt/apt.conf").write_text(APT_CONF.format(root=root, arch=arch))
    env = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy") or k in ("PATH", "HOME", "LANG")}
    env.update(APT_CONFIG=str(root / "etc/apt/apt.conf"), DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
    return env


def _apt(argv: list[str], env: dict[str, str], what: str) -> str:
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OperationError(f"packages: {argv[0]} not found; resolving Debian packages needs apt and dpkg on the "
                             "connected side (a Debian or Ubuntu builder)") from None
    if proc.returncode != 0:
        detail = "\n".join(line for line in (proc.stderr or proc.stdout).splitlines() if line.startswith(("E:", "W:")))
        detail = detail or (proc.stderr or proc.stdout).strip()[-1500:]
        if "Unable to locate package" in detail or "has no installation candidate" in detail:
            raise SpecError("packages.names", f"apt cannot resolve them from packages.sources: {detail}")
        raise OperationError(f"packages: {what} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def _parse_uris(text: str) -> list[tuple[str, str, int, str, str]]:
    """(uri, file name, size, hash algorithm, hex) of each ``--print-uris`` line."""
    out = []
    for line in text.splitlines():
        if not line.startswith("'"):
            continue
        uri, _, rest = line[1:].partition("' ")
        parts = rest.split()
        if len(parts) < 3 or ":" not in parts[2]:
            raise OperationError(f"packages: cannot read apt's download line {line!r}")
        algo, _, hexdigest = parts[2].partition(":")
        if algo not in _HASHES:
            raise OperationError(f"packages: apt gives no usable hash for {uri} ({parts[2]})")
        out.append((uri, parts[0], int(parts[1]), _HASHES[algo], hexdigest.lower()))
    return out


def _control(path: Path) -> dict[str, str]:
    """The control paragraph of a .deb as dpkg-deb reads it: {"_text": paragraph, field: value}."""
    try:
        proc = subprocess.run(["dpkg-deb", "--field", str(path)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OperationError("packages: dpkg-deb not found (package dpkg)") from None
    if proc.returncode != 0:
        raise IntegrityError(str(path), f"not a Debian package dpkg-deb can read: {proc.stderr.strip()}")
    text = proc.stdout.rstrip("\n")
    fields = {"_text": text}
    for line in text.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _hash(path: Path, algo: str) -> tuple[int, str, str]:
    """(size, sha256, *algo* hex) of a file, read once."""
    sha, other, size = hashlib.sha256(), hashlib.new(algo), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            other.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), other.hexdigest()


def resolve(names: tuple[str, ...], sources: Path, baseline: Path | None, arch: str, work: Path,
            log: Callable[[str], None] | None = None) -> list[ResolvedDeb]:
    """The dependency closure of *names* as apt computes it, downloaded into *work*; sorted by package."""
    root = work / "apt-root"
    env = private_apt_root(root, sources, baseline, arch)
    if log:
        log(f"resolving packages {' '.join(names)} with apt ({sources.name})")
    _apt(["apt-get", "update", "-qq"], env, "apt-get update")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *names]
    wanted = _parse_uris(_apt([*install, "--print-uris"], env, "resolving"))
    _apt([*install, "--download-only"], env, "downloading")
    archives = root / "var/cache/apt/archives"
    out: list[ResolvedDeb] = []
    for uri, file_name, size, algo, expected in wanted:
        parsed = urllib.parse.urlsplit(uri)
        # apt uses file: sources in place; everything else it downloaded into the archive cache.
        path = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else archives / file_name
        if not path.is_file():
            raise OperationError(f"packages: apt did not fetch {uri} (expected {path})")
        got_size, sha256, got = _hash(path, algo)
        if got_size != size or got != expected:
            raise IntegrityError(uri, f"{plural(got_size, 'byte')}, {algo} {got}; apt's index says {plural(size, 'byte')}, {expected}")
        control = _control(path)
        for key in ("Package", "Version", "Architecture"):
            if not control.get(key):
                raise IntegrityError(uri, f"control file has no {key}")
        out.append(ResolvedDeb(path, control["Package"], control["Version"], control["Architecture"],
                               control["_text"], size, sha256))
    out.sort(key=lambda d: (d.package, d.version, d.architecture))
    seen: dict[str, ResolvedDeb] = {}
    for d in out:
        if d.file_name in seen:
            raise SpecError("packages", f"{d.file_name}: two packages would share this file name")
        seen[d.file_name] = d
    return out


# --------------------------------------------------------------------------- repository index


def packages_index(debs: list[ResolvedDeb]) -> bytes:
    """A flat repository's ``Packages``: each control paragraph plus Filename, Size, SHA256; sorted."""
    stanzas = []
    for d in sorted(debs, key=lambda d: (d.package, d.version, d.architecture)):
        stanzas.append(f"{d.control}\nFilename: ./{d.file_name}\nSize: {d.size}\nSHA256: {d.sha256}\n")
    return "\n".join(stanzas).encode("utf-8")


def release_file(packages: bytes, *, release: str, architecture: str, label: str, date: datetime) -> bytes:
    """The repository's ``Release``: names the index by size and SHA256 (apt checks ``Packages`` against it)."""
    when = date.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    digest = hashlib.sha256(packages).hexdigest()
    text = (
        "Origin: airgap\n"
        f"Label: {label}\n"
        f"Suite: {release}\n"
        f"Codename: {release}\n"
        f"Date: {when}\n"
        f"Architectures: {architecture} all\n"
        "Description: OS packages carried in a signed airgap bundle (use only the files airgap extract wrote)\n"
        "SHA256:\n"
        f" {digest} {len(packages)} Packages\n"
    )
    return text.encode("utf-8")


def write_repository(debs: list[ResolvedDeb], into: Path, *, release: str, architecture: str, label: str,
                     date: datetime) -> tuple[Path, Path]:
    """Write Packages and Release for *debs* into *into*; return their paths (the .deb files stay where they are)."""
    into.mkdir(parents=True, exist_ok=True)
    packages = packages_index(debs)
    (into / "Packages").write_bytes(packages)
    (into / "Release").write_bytes(release_file(packages, release=release, architecture=architecture, label=label,
                                                date=date))
    return into / "Packages", into / "Release"


# --------------------------------------------------------------------------- isolated side


def export(bundle, *, trust_path, out, state_dir=None, now: datetime | None = None, force: bool = False) -> dict[str, Any]:
    """Verify *bundle*, then write its apt repository (``files/packages/``) into *out*.

    Every file is streamed from the bundle and hashed as it is written; it
    appears under its name only complete and matching the signed manifest
    (temporary file, then rename).  Returns what was written.  With
    *state_dir* the acceptance or the refusal is written to ``STATE/audit.log``,
    as ``extract`` audits.
    """
    from airgap._internal.fsutil import check_output
    from airgap.auditing import AuditTrail
    from airgap.receive import accepted_object, verified_audited

    out = check_output(out, force=force, directory=True)  # with force an existing repository is updated
    trail = AuditTrail.of(state_dir)
    # The packages come from the object verify returned (the bundle it opened),
    # each hashed against the verified manifest as it is written.
    with verified_audited(bundle, trail, EXPORT_ACTION, trust_path=trust_path, now=now,
                          hash_content=False) as verified:
        manifest = verified.manifest
        obj = accepted_object(bundle, manifest, output=os.fspath(out))
        with trail.refusals(EXPORT_ACTION, obj):
            written = _export_files(verified, out)
        trail.accepted(EXPORT_ACTION, obj, detail={"written": written, "packages": len(manifest.packages.debs)})
    return {"bundle": f"{manifest.name} {manifest.version}", "manifest_digest": manifest.digest, "output": str(out),
            "written": written, "packages": [d.to_dict() for d in manifest.packages.debs],
            "sources_line": f"deb [trusted=yes] file:{out.absolute()} ./"}


def _export_files(verified, out: Path) -> list[str]:
    """Write the verified bundle's package files into *out*; the names of those written (not already there)."""
    from airgap.exceptions import InputError

    manifest = verified.manifest
    if manifest.packages is None:
        raise InputError(f"{manifest.name} {manifest.version} carries no OS packages (no packages: in its spec)")
    wanted = list(manifest.packages.index) + [d.path for d in manifest.packages.debs]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in wanted:
        record = manifest.member(path)
        if record is None:
            raise IntegrityError(path, "not in the verified bundle")
        target = out / path.rsplit("/", 1)[1]
        if target.is_file() and not target.is_symlink() and target.stat().st_size == record.size \
                and _sha256_file(target) == record.sha256:
            continue  # already there, checked
        with fsutil.atomic_writer(target) as f:
            for chunk in verified.stream(path):  # the last chunk only if the sha256 matched
                f.write(chunk)
        written.append(target.name)
    verified.content_used(f"{plural(len(wanted), 'package file')} hashed as they were written")
    return written


def _sha256_file(path: Path) -> str:
    return _hash(path, "sha256")[1]
