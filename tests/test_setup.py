"""The README's set-up makes its commands work as written: `airgap ...` on the PATH of a
fresh login shell (nothing inherited from the shell that ran set-up)."""

from __future__ import annotations

import os
import subprocess

from airgap import __version__
from tests.helpers import REPO


def _login_shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["env", "-i", "bash", "-lc", command], capture_output=True, text=True, timeout=60)


def test_setup_puts_airgap_on_the_path_of_a_fresh_login_shell():
    assert os.geteuid() == 0, "the README's set-up runs as root"
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    venv_airgap = REPO / ".venv" / "bin" / "airgap"
    assert f"setup: airgap is on PATH: /usr/local/bin/airgap -> {venv_airgap}" in r.stdout
    sh = _login_shell('airgap --version && readlink -f "$(command -v airgap)"')
    assert sh.returncode == 0, sh.stderr
    version, resolved = sh.stdout.splitlines()[-2:]
    assert version == f"airgap {__version__}"
    assert os.path.realpath(resolved) == os.path.realpath(venv_airgap)


def test_setup_without_root_prints_the_path_line_instead(tmp_path):
    """Not root (an `id` that says uid 1000 first on PATH): nothing is linked, and the one
    line for ~/.profile is printed."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "id").write_text('#!/bin/sh\n[ "$1" = -u ] && echo 1000 || exec /usr/bin/id "$@"\n')
    (shim / "id").chmod(0o755)
    before = os.readlink("/usr/local/bin/airgap")
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert "not root, so nothing was linked" in r.stdout
    assert f'export PATH="{REPO}/.venv/bin:$PATH"' in r.stdout
    assert os.readlink("/usr/local/bin/airgap") == before
