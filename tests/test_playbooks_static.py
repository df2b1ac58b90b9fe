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
                - name: Render
                  ansible.builtin.template:
                    src: {roles}/registry/templates/{{{{ item }}}}.j2
                    dest: {out}/{{{{ item }}}}
                    mode: "0644"
                  loop: [airgap-registry.service, config.yml]
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
    unit = out / "airgap-registry.service"
    text = unit.read_text()
    assert "ExecStart=/usr/bin/docker-registry serve /etc/airgap/registry/config.yml" in text
    assert "User=docker-registry" in text
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "airgap-registry.service" in ln]
    assert not problems, problems


def test_registry_config_has_tls_auth_and_the_address(tmp_path):
    yaml = pytest.importorskip("yaml")
    out = _render_registry_templates(
        tmp_path, {"airgap__registry_address": "10.42.10.11", "airgap__registry_name": "registry.pilot.geheim.internal"}
    )
    config = yaml.safe_load((out / "config.yml").read_text())
    assert config["http"]["addr"] == "10.42.10.11:5000"
    assert config["http"]["tls"]["certificate"].startswith("/etc/airgap/pki/server-")
    assert config["http"]["tls"]["minimumtls"] == "tls1.2"
    assert config["auth"]["htpasswd"]["path"] == "/etc/airgap/registry/htpasswd"
    assert config["storage"]["delete"]["enabled"] is False
    assert "proxy" not in config and "notifications" not in config


# --- the project's own modules: pure logic ---------------------------------------


def _load_module(name: str):
    pytest.importorskip("ansible")
    path = ROOT / "playbooks" / "library" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"airgap_test_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_policy_matching_follows_the_policy_syntax():
    check = _load_module("airgap_check")
    policy = check.Policy(
        [
            {"pattern": "*.amazonaws.com", "provider": "AWS", "jurisdiction": "US"},
            {"pattern": "gcr.io", "provider": "Google", "jurisdiction": "US"},
            {"pattern": "8.8.8.0/24", "provider": "Google", "jurisdiction": "US"},
            {"pattern": "deb.debian.org", "provider": "Debian", "jurisdiction": "external"},
        ]
    )
    assert policy.match("https://s3.eu-west-1.amazonaws.com/bucket")
    assert not policy.match("amazonaws.com.evil")
    assert policy.match("gcr.io/distroless/static:nonroot")
    assert not policy.match("gcr.io.internal")
    assert policy.match("8.8.8.8")
    assert not policy.match("10.42.10.2")
    hits = policy.match("http://deb.debian.org/debian")
    assert hits and not check.failing(hits, ["US"]) and check.failing(hits, ["*"])


def test_the_packaged_policy_loads_in_the_controller_format():
    check = _load_module("airgap_check")
    policy_file = ROOT / "airgap" / "data" / "sovereignty.yaml"
    patterns, evidence = check.load_policy(str(policy_file), [])
    assert patterns, evidence
    assert all({"pattern", "provider", "category", "jurisdiction"} <= set(p) for p in patterns)
    assert check.Policy(patterns).match("mcr.microsoft.com")


def test_runtime_config_check_accepts_rewrites_and_refuses_fallbacks(tmp_path):
    check = _load_module("airgap_check")
    etc = tmp_path / "etc" / "containers"
    (etc / "registries.conf.d").mkdir(parents=True)
    internal = "127.0.10.1:5000"
    (etc / "registries.conf").write_text(
        textwrap.dedent(
            f"""\
            unqualified-search-registries = []
            [[registry]]
            prefix = "{internal}"
            location = "{internal}"
            [[registry]]
            prefix = "docker.io"
            location = "{internal}/docker.io"
            [[registry]]
            prefix = "*.gcr.io"
            blocked = true
            """
        )
    )
    (etc / "registries.conf.d" / "shortnames.conf").write_text('[aliases]\n"busybox" = "docker.io/library/busybox"\n')
    res = check.check_runtime_config(str(tmp_path), {internal})
    assert res["status"] == "PASS", res

    # A mirror with the upstream as fallback, a search registry, an alias to
    # an unmapped registry: each is named.
    (etc / "registries.conf").write_text(
        textwrap.dedent(
            f"""\
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            location = "quay.io"
            [[registry.mirror]]
            location = "{internal}/quay.io"
            """
        )
    )
    (etc / "registries.conf.d" / "shortnames.conf").write_text('[aliases]\n"x" = "ghcr.io/a/x"\n')
    res = check.check_runtime_config(str(tmp_path), {internal})
    assert res["status"] == "FAIL"
    text = "\n".join(res["evidence"])
    assert "quay.io" in text and "unqualified-search-registries" in text and "ghcr.io/a/x" in text


def test_rendered_registries_conf_passes_the_check(tmp_path):
    """The runtime role's template, rendered, satisfies the check's runtime_config."""
    jinja2 = pytest.importorskip("jinja2")
    yaml = pytest.importorskip("yaml")
    check = _load_module("airgap_check")
    role = ROOT / "playbooks" / "roles" / "runtime"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(role / "templates")), keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    internal = "127.0.10.1:5000"
    text = env.get_template("registries.conf.j2").render(
        ansible_managed="test",
        runtime__internal_registry=internal,
        runtime__upstream_registries=defaults["runtime__upstream_registries"],
        runtime__extra_upstream_registries=[],
        runtime__unqualified_search_registries=[],
        runtime__short_name_mode="enforcing",
    )
    etc = tmp_path / "etc" / "containers"
    etc.mkdir(parents=True)
    (etc / "registries.conf").write_text(text)
    res = check.check_runtime_config(str(tmp_path), {internal})
    assert res["status"] == "PASS", res
    rules = check.registry_rules(str(tmp_path))[0]
    assert check.rewrite("docker.io/library/busybox@sha256:" + "a" * 64, rules)[0].startswith(
        internal + "/docker.io/library/busybox@"
    )
    assert check.rewrite("europe-docker.pkg.dev/x/y", rules)[1] is True  # blocked


def test_htpasswd_module_hashes_with_bcrypt():
    htp = _load_module("airgap_htpasswd")
    try:
        digest = htp.bcrypt_hash("s3cret", 4)
    except (OSError, ValueError, AttributeError) as exc:
        pytest.fail(f"no bcrypt in this libcrypt, so the registry role cannot write its htpasswd: {exc}")
    assert digest.startswith("$2b$04$")
    assert htp.bcrypt_hash("s3cret", 0, digest) == digest
    assert htp.bcrypt_hash("other", 0, digest) != digest
