"""Static checks of the Ansible rollout: ansible-lint's production profile,
syntax checks of site.yml and check.yml against both inventories, the rendered
registry unit judged by systemd-analyze, and the project's own modules' pure
logic (sovereignty matching, registries.conf rewriting)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import module_utils

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INVENTORIES = ["geheim-pilot", "lab"]
PLAYBOOKS = ["site.yml", "check.yml"]


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: scripts/setup.sh installs it")
    return found


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@pytest.mark.slow
def test_ansible_lint_production_profile_is_clean(tmp_path):
    lint = _tool("ansible-lint")
    proc = subprocess.run(
        [lint, "--profile", "production", "--offline", "--nocolor"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(tmp_path, inventory, playbook):
    proc = subprocess.run(
        [
            _tool("ansible-playbook"),
            "-i",
            str(ROOT / "inventories" / inventory),
            str(ROOT / "playbooks" / playbook),
            "--syntax-check",
            "-e",
            "bundle_path=/nonexistent/bundle.tar",
            "-e",
            "trust_path=/nonexistent/trust.json",
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("stage", sorted(p.name for p in (ROOT / "playbooks" / "stages").glob("*.yml")))
def test_each_stage_syntax_checks_alone(tmp_path, stage):
    proc = subprocess.run(
        [_tool("ansible-playbook"), "-i", str(ROOT / "inventories" / "geheim-pilot"),
         str(ROOT / "playbooks" / "stages" / stage), "--syntax-check"],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _render_registry_templates(tmp_path: Path, extra: dict) -> Path:
    """Render the registry role's templates with Ansible's own engine, on localhost."""
    out = tmp_path / "rendered"
    out.mkdir()
    roles = ROOT / "playbooks" / "roles"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Render the registry templates
              hosts: localhost
              connection: local
              gather_facts: false
              vars_files:
                - {roles}/airgap/defaults/main.yml
                - {roles}/registry/defaults/main.yml
              tasks:
                - name: Render each endpoint's unit and configuration
                  ansible.builtin.template:
                    src: {roles}/registry/templates/{{{{ item.1 }}}}.j2
                    dest: {out}/{{{{ item.0.name }}}}-{{{{ item.1 }}}}
                    mode: "0644"
                  loop: "{{{{ registry__instances | product(['airgap-registry.service', 'config.yml']) | list }}}}"
                  vars:
                    registry__instance: "{{{{ item.0 }}}}"
            """
        )
    )
    extra = dict(extra, ansible_python_interpreter=sys.executable)
    proc = subprocess.run(
        [_tool("ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_registry_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.fail("systemd-analyze is not installed (Debian package systemd; scripts/setup.sh installs it)")
    if not Path("/usr/bin/docker-registry").exists():
        pytest.fail("docker-registry is not installed (ExecStart must exist for verify; scripts/setup.sh installs it)")
    out = _render_registry_templates(
        tmp_path, {"airgap__registry_address": "10.42.10.11", "airgap__registry_name": "registry.pilot.geheim.internal"}
    )
    for name, config in (("airgap-registry", "config.yml"), ("airgap-registry-push", "config-push.yml")):
        unit = out / f"{name}.service"
        (out / f"{name}-airgap-registry.service").rename(unit)
        text = unit.read_text()
        assert f"ExecStart=/usr/bin/docker-registry serve /etc/airgap/registry/{config}" in text
        assert "User=docker-registry" in text
        proc = subprocess.run(
            [analyze, "verify", "--man=no", str(unit)],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if unit.name in ln]
        assert not problems, problems


def test_registry_endpoints_pull_read_only_push_writable_no_cache(tmp_path):
    import yaml

    out = _render_registry_templates(
        tmp_path, {"airgap__registry_address": "10.42.10.11", "airgap__registry_name": "registry.pilot.geheim.internal"}
    )
    pull = yaml.safe_load((out / "airgap-registry-config.yml").read_text())
    push = yaml.safe_load((out / "airgap-registry-push-config.yml").read_text())
    assert pull["http"]["addr"] == "10.42.10.11:5000" and push["http"]["addr"] == "10.42.10.11:5001"
    # The pull endpoint refuses every write; only the push endpoint knows the push account.
    assert pull["storage"]["maintenance"]["readonly"]["enabled"] is True
    assert push["storage"]["maintenance"]["readonly"]["enabled"] is False
    assert pull["auth"]["htpasswd"]["path"] == "/etc/airgap/registry/htpasswd-pull"
    assert push["auth"]["htpasswd"]["path"] == "/etc/airgap/registry/htpasswd-push"
    for config in (pull, push):
        assert config["http"]["tls"]["certificate"].startswith("/etc/airgap/pki/server-")
        assert config["http"]["tls"]["minimumtls"] == "tls1.2"
        assert config["storage"]["delete"]["enabled"] is False
        # No blob cache: a HEAD must see the disk (check.yml asks for every blob).
        assert "cache" not in config["storage"]
        assert "proxy" not in config and "notifications" not in config


# --- the project's own modules: pure logic (the check module's in test_check_module.py)


def _load_module(name: str):
    """A module of playbooks/library, importing its module_utils the way Ansible ships them."""
    module_utils("airgap_check_common")  # puts the project's module_utils where Ansible ships them
    path = ROOT / "playbooks" / "library" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"airgap_test_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_htpasswd_module_hashes_with_bcrypt():
    htp = _load_module("airgap_htpasswd")
    try:
        digest = htp.bcrypt_hash("s3cret", 4)
    except (OSError, ValueError, AttributeError) as exc:
        pytest.fail(f"no bcrypt in this libcrypt, so the registry role cannot write its htpasswd: {exc}")
    assert digest.startswith("$2b$04$")
    assert htp.bcrypt_hash("s3cret", 0, digest) == digest
    assert htp.bcrypt_hash("other", 0, digest) != digest
