"""The toolkit's own wheels: built reproducibly, carried in the bundle, installed only
when a toolkit release lists them (see :mod:`airgap.toolkit`).

**Reproducible.**  :func:`build_toolkit_wheel` builds airgap's wheel from a
source tree or a git ref in a fresh temporary directory (never from a tree
with a stale ``build/``), with ``SOURCE_DATE_EPOCH`` from the commit time,
the build backend pinned by ``scripts/wheel-build-constraints.txt``, and then
normalises the zip: entries in a fixed order (``RECORD`` last), one timestamp,
fixed permissions, fixed compression.  Two builds of the same commit are byte
for byte the same, whatever the directory or the umask, so anyone holding the
tag can rebuild a release's wheel and compare its sha256 with the statement
(``scripts/build-wheel.sh``).

**Carried.**  :func:`wheelhouse` is what ``build`` carries for ``wheels:
true``: ``AIRGAP_WHEELHOUSE`` (a toolkit release directory: the wheels and
their signed ``toolkit-release.json``), or else a cache built here by the
same :func:`build_toolkit_wheel` from the running source tree plus the exact
versions of the runtime dependencies installed here.  Such a development
wheelhouse has no release statement, so isolated hosts will not install it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from airgap import __version__
from airgap._internal import fsutil
from airgap._internal.text import plural
from airgap.exceptions import AirgapError, InputError, OperationError

__all__ = [
    "CONSTRAINTS",
    "ENV",
    "RELEASE_FILE",
    "Wheelhouse",
    "build_toolkit_wheel",
    "commit_of",
    "download_dependencies",
    "main",
    "normalise_wheel",
    "wheelhouse",
]

ENV = "AIRGAP_WHEELHOUSE"
RELEASE_FILE = "toolkit-release.json"
CONSTRAINTS = "scripts/wheel-build-constraints.txt"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# The time of a build that has no commit to take it from (zip cannot store earlier).
_ZIP_EPOCH = 315532800
# What the wheel is built from; everything else in a checkout is not part of it.
_SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "COPYING", "NOTICE", "setup.cfg", "MANIFEST.in")
_SOURCE_DIRS = ("airgap",)


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    wheels: tuple[Path, ...]
    release: Path | None  # the signed toolkit release statement, when the directory has one


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _source_paths(root: Path) -> list[Path]:
    """The files the wheel is built from, sorted (no caches, no build leftovers)."""
    out = [root / name for name in _SOURCE_FILES if (root / name).is_file()]
    for d in _SOURCE_DIRS:
        out += [p for p in (root / d).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo"))]
    constraints = root / CONSTRAINTS
    if constraints.is_file():
        out.append(constraints)
    return sorted(out)


def _source_key(root: Path) -> str:
    h = hashlib.sha256()
    for p in _source_paths(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- reproducible build


def _git(source: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True)
    if proc.returncode:
        raise InputError(f"{source}: git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout.strip()


def commit_of(source: str | os.PathLike, ref: str) -> tuple[str, int]:
    """(full commit id, commit time) of *ref* in the checkout *source*."""
    commit = _git(Path(source), "rev-parse", "--verify", f"{ref}^{{commit}}")
    return commit, int(_git(Path(source), "log", "-1", "--format=%ct", commit))


def _export(source: Path, ref: str | None, tree: Path) -> None:
    tree.mkdir()
    if ref is None:
        for p in _source_paths(source):
            dest = tree / p.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
        return
    archive = subprocess.run(["git", "-C", str(source), "archive", "--format=tar", ref], capture_output=True)
    if archive.returncode:
        raise InputError(f"{source}: git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    unpack = subprocess.run(["tar", "-x", "--no-same-owner", "--no-same-permissions", "-C", str(tree)],
                            input=archive.stdout, capture_output=True)
    if unpack.returncode:
        raise OperationError(f"unpacking git archive {ref}: {unpack.stderr.decode(errors='replace').strip()}")


def _normalise_tree(tree: Path, epoch: int) -> None:
    for p in sorted(tree.rglob("*"), reverse=True):
        if p.is_symlink():
            continue
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.utime(p, (epoch, epoch), follow_symlinks=False)


def normalise_wheel(src: Path, dest: Path, epoch: int) -> None:
    """Rewrite a wheel with the same contents in a fixed form: sorted entries (dist-info
    last, RECORD last of all), every entry dated *epoch*, mode 0644, deflated."""
    # Zip stores local times in two-second steps: say so rather than let the library round.
    date = time.gmtime(max(epoch, _ZIP_EPOCH) // 2 * 2)[:6]
    with zipfile.ZipFile(src) as zin:
        names = [i.filename for i in zin.infolist() if not i.is_dir()]

        def order(name: str) -> tuple[int, str]:
            top = name.split("/", 1)[0]
            rank = 2 if name.endswith(".dist-info/RECORD") else 1 if top.endswith(".dist-info") else 0
            return rank, name

        with fsutil.atomic_writer(dest) as f, zipfile.ZipFile(f, "w") as zout:
            for name in sorted(names, key=order):
                info = zipfile.ZipInfo(name, date_time=date)
                info.external_attr = 0o100644 << 16
                info.create_system = 3
                info.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(info, zin.read(name), compresslevel=9)


def build_toolkit_wheel(source: str | os.PathLike, out_dir: str | os.PathLike, *, ref: str | None = None,
                        epoch: int | None = None) -> Path:
    """Build airgap's wheel from *source* at git *ref* (None: the files of the working tree).

    The time is *epoch*, else the commit time of *ref*, else ``SOURCE_DATE_EPOCH``,
    else 1980-01-01.  Returns the wheel written into *out_dir*.
    """
    source = Path(source).resolve()
    if not (source / "pyproject.toml").is_file():
        raise InputError(f"{source}: not an airgap source tree (no pyproject.toml)")
    if epoch is None:
        if ref is not None:
            epoch = commit_of(source, ref)[1]
        else:
            epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or _ZIP_EPOCH)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="airgap-wheel-") as tmp:
        tree, dist = Path(tmp) / "src", Path(tmp) / "dist"
        _export(source, ref, tree)
        _normalise_tree(tree, epoch)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist)]
        if (tree / CONSTRAINTS).is_file():
            argv += ["--build-constraint", str(tree / CONSTRAINTS)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C.UTF-8"}
        proc = subprocess.run([*argv, str(tree)], capture_output=True, text=True, env=env, cwd=tmp,
                              preexec_fn=lambda: os.umask(0o022))
        if proc.returncode:
            raise OperationError(f"building the airgap wheel failed: {proc.stderr.strip()[-800:]}")
        built = sorted(dist.glob("*.whl"))
        if len(built) != 1:
            raise OperationError(f"building the airgap wheel gave {plural(len(built), 'wheel')}, expected 1")
        dest = out / built[0].name
        normalise_wheel(built[0], dest, epoch)
    return dest


# --------------------------------------------------------------------------- dependencies


def _closure(dist_name: str) -> dict[str, str]:
    """The installed versions of *dist_name*'s runtime dependencies, transitively."""
    seen: dict[str, str] = {}
    todo = [dist_name]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if ";" in req and "extra ==" in req.split(";", 1)[1]:
                continue
            if ";" in req:
                marker = req.split(";", 1)[1]
                try:
                    from packaging.markers import Marker

                    if not Marker(marker).evaluate():
                        continue
                except Exception:  # noqa: BLE001 - no packaging: keep the requirement
                    pass
            m = _REQ_NAME.match(req)
            if not m:
                continue
            dep = m.group(1)
            key = dep.lower().replace("_", "-")
            if key in seen:
                continue
            try:
                seen[key] = metadata.version(dep)
            except metadata.PackageNotFoundError:
                continue
            todo.append(dep)
    return seen


def download_dependencies(out_dir: str | os.PathLike) -> None:
    """The exact installed versions of airgap's runtime dependencies, as binary wheels."""
    pins = [f"{name}=={version}" for name, version in sorted(_closure("airgap").items())]
    if not pins:
        return
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
            "--dest", str(out_dir), *pins]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if proc.returncode:
        raise OperationError(f"downloading the toolkit's dependencies failed: {proc.stderr.strip()[-800:]}")


# --------------------------------------------------------------------------- what build carries


def wheelhouse(spec=None) -> Wheelhouse:
    """The wheels to carry (sorted) and their release statement, building the cache when needed."""
    env = os.environ.get(ENV)
    if env:
        d = Path(env)
        wheels = tuple(sorted(d.glob("*.whl")))
        if not wheels:
            raise InputError(f"{ENV}={d}: no wheels there")
        release = d / RELEASE_FILE
        return Wheelhouse(d, wheels, release if release.exists() else None)
    root = _source_root()
    if root is None:
        raise InputError(f"spec asks for wheels but airgap is not running from its source tree; set {ENV}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "airgap" / f"wheelhouse-{__version__}-{_source_key(root)}"
    done = cache / ".complete"
    if not done.exists():
        cache.mkdir(parents=True, exist_ok=True)
        build_toolkit_wheel(root, cache)
        download_dependencies(cache)
        fsutil.atomic_write(done, b"ok\n")
    return Wheelhouse(cache, tuple(sorted(cache.glob("*.whl"))), None)


# --------------------------------------------------------------------------- scripts/build-wheel.sh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/build-wheel.sh",
        description="Build airgap's wheel reproducibly from a git ref (a release tag): the same ref gives the "
                    "same bytes on any machine with the pinned build backend. Prints the wheel's sha256, to "
                    "compare with a toolkit release ('airgap toolkit verify RELEASE --wheels DIR').")
    parser.add_argument("ref", nargs="?", default="HEAD", help="tag or commit to build (default HEAD)")
    parser.add_argument("-o", "--output", required=True, help="directory for the wheel(s)")
    parser.add_argument("--source", default=str(_source_root() or "."), help="the git checkout (default: this one)")
    parser.add_argument("--with-dependencies", action="store_true",
                        help="also download the installed versions of the runtime dependencies: a release's wheelhouse")
    args = parser.parse_args(argv)
    try:
        commit, epoch = commit_of(args.source, args.ref)
        wheel = build_toolkit_wheel(args.source, args.output, ref=commit, epoch=epoch)
        if args.with_dependencies:
            download_dependencies(args.output)
    except AirgapError as exc:
        print(f"build-wheel: {exc}", file=sys.stderr)
        return exc.exit_code
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    print(f"{wheel}\n  ref {args.ref} = commit {commit}, SOURCE_DATE_EPOCH={epoch}\n  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
