"""The toolkit's own wheels, carried in the bundle so the isolated side can install
airgap with ``pip install --no-index`` and never reach a package index.

The wheelhouse holds airgap itself (built from this source tree) and the exact
versions of its runtime dependencies installed here, so what runs on the
isolated side is what was tested on the connected side.  It is cached under a
key that covers the source tree, so two builds of the same spec carry the same
bytes; ``AIRGAP_WHEELHOUSE`` points at a prepared directory instead (for
builders that have no package index either).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from airgap import __version__
from airgap.exceptions import InputError, OperationError

ENV = "AIRGAP_WHEELHOUSE"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Zip entries get this time, so the airgap wheel is byte-identical on every build.
_WHEEL_EPOCH = "315532800"


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _source_key(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted([root / "pyproject.toml", *(root / "airgap").rglob("*")]):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


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


def wheelhouse(spec=None) -> list[Path]:
    """Paths of every wheel to carry (sorted), building the cache when needed."""
    env = os.environ.get(ENV)
    if env:
        d = Path(env)
        wheels = sorted(d.glob("*.whl"))
        if not wheels:
            raise InputError(f"{ENV}={d}: no wheels there")
        return wheels
    root = _source_root()
    if root is None:
        raise InputError(f"spec asks for wheels but airgap is not running from its source tree; set {ENV}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "airgap" / f"wheelhouse-{__version__}-{_source_key(root)}"
    done = cache / ".complete"
    if not done.exists():
        _populate(cache, root)
        done.write_text("ok\n")
    return sorted(cache.glob("*.whl"))


def _populate(cache: Path, root: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": _WHEEL_EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    steps = [pip + ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(cache), str(root)]]
    pins = [f"{name}=={version}" for name, version in sorted(_closure("airgap").items())]
    if pins:
        steps.append(pip + ["download", "--no-deps", "--only-binary=:all:", "--quiet", "--dest", str(cache), *pins])
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise OperationError(f"preparing the wheelhouse failed: {' '.join(argv[2:4])}: {proc.stderr.strip()[-800:]}")
