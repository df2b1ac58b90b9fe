"""Small helpers shared by the end-to-end tests: run the real ``airgap`` command,
write specs, extract bundles."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PASSPHRASE = "test"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def airgap(*args: str | os.PathLike, env: dict | None = None, input: str | None = None) -> Result:
    """Run ``airgap`` in-process, as a user would type it (fast: no interpreter start)."""
    from airgap.cli import main

    old = dict(os.environ)
    os.environ["AIRGAP_PASSPHRASE"] = PASSPHRASE
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(old)
    return Result(code, out.getvalue(), err.getvalue())


def airgap_proc(*args: str | os.PathLike, env: dict | None = None, timeout: float = 300, **kw) -> Result:
    """Run ``airgap`` as a separate process (for kill tests and real exit codes)."""
    full_env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "airgap", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, **kw
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write_spec(directory: Path, *, name="geheim-pilot", version="1.0.0", target="geheim-pilot", expires="180d",
               images=(), files=None, extra: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "apiVersion": "airgap/v1",
        "kind": "Bundle",
        "metadata": {"name": name, "version": version, "target": target, "expires": expires},
        "images": [img if isinstance(img, dict) else {"ref": img} for img in images],
    }
    if files is None:
        cfg = directory / "configs"
        cfg.mkdir(exist_ok=True)
        (cfg / "pilot.conf").write_text("registry=internal\n")
        (cfg / "sub").mkdir(exist_ok=True)
        (cfg / "sub" / "run.sh").write_text("#!/bin/sh\necho run\n")
        os.chmod(cfg / "sub" / "run.sh", 0o755)
        files = [{"src": "configs/", "dest": "configs/"}]
    if files:
        spec["files"] = files
    spec.update(extra or {})
    path = directory / "bundle.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def extract(bundle: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle) as tf:
        tf.extractall(dest, filter="data")
    return dest


def tar_members(bundle: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(bundle) as tf:
        return tf.getmembers()


def audited(state: Path) -> list[tuple[str, str, dict, dict]]:
    """``STATE/audit.log`` as (action, result, object, detail), after ``airgap audit verify --state`` says INTACT."""
    r = airgap("audit", "verify", "--state", state)
    assert r.code == 0 and "INTACT" in r.out, r.out + r.err
    entries = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    return [(e["action"], e["result"], e["object"], e["detail"]) for e in entries]


def module_utils(name: str):
    """``ansible.module_utils.<name>`` from playbooks/module_utils: the directory ansible.cfg
    names, added to the package path the way Ansible ships the project's module_utils."""
    import importlib

    import ansible.module_utils

    utils = str(Path(__file__).resolve().parent.parent / "playbooks" / "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    return importlib.import_module(f"ansible.module_utils.{name}")
