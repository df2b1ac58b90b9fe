"""Haven checks that nodes and the inventory can prove: each with a passing and a failing instance.

The node checks read real files below a root (a directory made per test); the
LSM check also reads this machine's own /sys, which has neither SELinux nor
AppArmor: the lab's expected failure.  One run through Ansible proves the
module and its module_utils load the way check.yml will load them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("airgap_haven", REPO / "playbooks/module_utils/airgap_haven.py")
haven = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(haven)

ENCLAVE = haven.Enclave(["10.42.10.0/24"], ["pilot.geheim.internal"], ["registry.pilot.geheim.internal:5000"])


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


# --------------------------------------------------------------------------- inventory


def test_nodes():
    ok = haven.check_nodes(["cp1", "cp2", "cp3"], ["w1", "w2", "w3", "w4"])
    assert ok["status"] == "PASS" and ok["summary"] == "3 control-plane, 4 worker hosts"
    lab = haven.check_nodes(["registry-1"], ["node-1", "node-2"])
    assert lab["status"] == "FAIL"
    assert "1 control-plane host(s), at least 3" in lab["summary"] and "2 worker host(s)" in lab["summary"]


def test_zones():
    ok = haven.check_zones({"cp1": "ede-1", "cp2": "ede-2", "w1": "ede-1"})
    assert ok["status"] == "PASS" and "zone ede-2: cp2" in ok["evidence"]
    one = haven.check_zones({"cp1": "ede-1", "w1": "ede-1"})
    assert one["status"] == "FAIL" and "all hosts in ede-1" in one["summary"]
    unset = haven.check_zones({"cp1": "ede-1", "cp2": "ede-2", "w1": ""})
    assert unset["status"] == "FAIL" and "w1: no zone label" in unset["evidence"]


# --------------------------------------------------------------------------- node


@pytest.mark.parametrize("evidence, status, summary", [
    ({"lsm": "capability,selinux", "selinux_enforce": "1"}, "PASS", "SELinux enforcing"),
    ({"lsm": "lockdown,capability,yama,apparmor", "apparmor_enabled": "Y"}, "PASS", "AppArmor enabled"),
    ({"lsm": "capability,selinux", "selinux_enforce": "0"}, "FAIL", "not enforcing"),
    ({"lsm": "lockdown,capability,yama", "apparmor_enabled": "N"}, "FAIL", "neither"),
])
def test_lsm(evidence, status, summary):
    r = haven.check_lsm(evidence)
    assert r["status"] == status and summary in r["summary"]


def test_lsm_of_this_machine_is_the_labs_expected_failure():
    r = haven.check_lsm(haven.collect_lsm("/"))
    assert r["status"] == "FAIL", r  # no LSM on this VM: the lab inventory declares it
    assert any("apparmor" in e for e in r["evidence"])


def test_lsm_from_files(tmp_path):
    write(tmp_path, "sys/kernel/security/lsm", "lockdown,capability,apparmor\n")
    write(tmp_path, "sys/module/apparmor/parameters/enabled", "Y\n")
    assert haven.check_lsm(haven.collect_lsm(str(tmp_path)))["status"] == "PASS"


def test_addresses():
    ok = haven.check_addresses([("ansible_host", "10.42.10.21"), ("eth0 global", "10.42.10.21")], ENCLAVE)
    assert ok["status"] == "PASS"
    public = haven.check_addresses([("ansible_host", "10.42.10.21"), ("eth1 global", "145.97.0.1")], ENCLAVE)
    assert public["status"] == "FAIL" and any("145.97.0.1 is a public address" in e for e in public["evidence"])
    outside = haven.check_addresses([("ansible_host", "10.99.0.1")], ENCLAVE)
    assert outside["status"] == "FAIL" and "outside 10.42.10.0/24" in outside["evidence"][0]
    assert haven.check_addresses([("ansible_host", "8.8.8.8")], ENCLAVE)["status"] == "FAIL"


def _runtime_root(root: Path, hosts_toml: str) -> None:
    write(root, "/etc/containers/registries.conf", """\
        unqualified-search-registries = []
        [[registry]]
        prefix = "docker.io"
        location = "registry.pilot.geheim.internal:5000/docker.io"
        """)
    write(root, "/etc/containerd/certs.d/docker.io/hosts.toml", hosts_toml)


SERVER_ONLY = """\
    server = "https://registry.pilot.geheim.internal:5000/v2/docker.io"
    override_path = true
    ca = "/etc/containerd/certs.d/registry.pilot.geheim.internal_5000_/ca.crt"
    """

SERVER_SHAPED = SERVER_ONLY + """\

    [host."https://registry.pilot.geheim.internal:5000/v2/docker.io"]
      capabilities = ["pull", "resolve"]
      override_path = true
    """

KUBESPRAY_SHAPED = """\
    [host."https://registry.pilot.geheim.internal:5000"]
      capabilities = ["pull", "resolve"]
    """


def test_mirrors_pass_when_every_endpoint_is_internal(tmp_path):
    _runtime_root(tmp_path, SERVER_SHAPED)
    r = haven.check_mirrors(haven.collect_registries(str(tmp_path)), ENCLAVE)
    assert r["status"] == "PASS", r
    assert any("/etc/containerd/certs.d/docker.io/hosts.toml" in e for e in r["evidence"])


def test_mirrors_fail_on_a_hosts_toml_without_server(tmp_path):
    _runtime_root(tmp_path, KUBESPRAY_SHAPED)
    r = haven.check_mirrors(haven.collect_registries(str(tmp_path)), ENCLAVE)
    assert r["status"] == "FAIL"
    assert any("no server line: containerd falls back to the upstream registry-1.docker.io" in e for e in r["evidence"])


def test_mirrors_fail_on_a_hosts_toml_containerd_1_6_rejects(tmp_path):
    _runtime_root(tmp_path, SERVER_ONLY)
    r = haven.check_mirrors(haven.collect_registries(str(tmp_path)), ENCLAVE)
    assert r["status"] == "FAIL" and any("invalid host tree" in e for e in r["evidence"])


def test_mirrors_fail_on_a_public_mirror(tmp_path):
    _runtime_root(tmp_path, SERVER_SHAPED)
    write(tmp_path, "/etc/containers/registries.conf.d/50-mirror.conf", """\
        [[registry]]
        prefix = "quay.io"
        location = "quay.io"
        [[registry.mirror]]
        location = "mirror.gcr.io"
        """)
    r = haven.check_mirrors(haven.collect_registries(str(tmp_path)), ENCLAVE)
    assert r["status"] == "FAIL" and any("mirror.gcr.io" in e for e in r["evidence"])
    assert haven.check_mirrors([], ENCLAVE)["status"] == "FAIL"


def test_time(tmp_path):
    write(tmp_path, "/etc/chrony/chrony.conf", "server ntp1.pilot.geheim.internal iburst\nserver 10.42.10.4\n")
    ok = haven.check_time(haven.collect_time_sources(str(tmp_path)), ENCLAVE)
    assert ok["status"] == "PASS" and "/etc/chrony/chrony.conf:1" in ok["evidence"][0]
    write(tmp_path, "/etc/chrony/sources.d/extra.sources", "pool 2.debian.pool.ntp.org iburst\n")
    bad = haven.check_time(haven.collect_time_sources(str(tmp_path)), ENCLAVE)
    assert bad["status"] == "FAIL" and "2.debian.pool.ntp.org" in bad["evidence"][0]


def test_time_timesyncd_without_fallback_reaches_debian_pool(tmp_path):
    write(tmp_path, "/etc/systemd/timesyncd.conf", "[Time]\nNTP=10.42.10.4\n")
    bad = haven.check_time(haven.collect_time_sources(str(tmp_path)), ENCLAVE)
    assert bad["status"] == "FAIL" and "FallbackNTP= is not set" in bad["evidence"][0]
    write(tmp_path, "/etc/systemd/timesyncd.conf.d/airgap.conf", "[Time]\nFallbackNTP=\n")
    assert haven.check_time(haven.collect_time_sources(str(tmp_path)), ENCLAVE)["status"] == "PASS"
    assert haven.check_time([], ENCLAVE)["status"] == "FAIL"


def test_logs(tmp_path):
    write(tmp_path, "/etc/rsyslog.d/90-ship.conf", "*.* @@logs.pilot.geheim.internal:6514\n")
    ok = haven.check_logs(haven.collect_log_targets(str(tmp_path)), ENCLAVE)
    assert ok["status"] == "PASS", ok
    write(tmp_path, "/etc/rsyslog.d/91-cloud.conf",
          'action(type="omfwd" target="logs.example-cloud.com" port="514" protocol="tcp")\n')
    bad = haven.check_logs(haven.collect_log_targets(str(tmp_path)), ENCLAVE)
    assert bad["status"] == "FAIL" and "logs.example-cloud.com" in bad["evidence"][0]
    assert haven.check_logs([], ENCLAVE)["status"] == "FAIL"


def test_logs_journal_upload(tmp_path):
    write(tmp_path, "/etc/systemd/journal-upload.conf", "[Upload]\nURL=https://10.42.10.9:19532\n")
    assert haven.check_logs(haven.collect_log_targets(str(tmp_path)), ENCLAVE)["status"] == "PASS"


def test_cluster_checks_say_what_to_run_there():
    rs = haven.cluster_checks()
    assert {r["check"] for r in rs} >= {"version", "rbac", "conformance", "storage", "metrics", "certificates"}
    assert all(r["status"] == "NEEDS-CLUSTER" and r["evidence"][0].startswith("run on the cluster: ") for r in rs)
    assert "sonobuoy" in next(r for r in rs if r["check"] == "conformance")["evidence"][0]


def test_expected_failures_are_marked_not_hidden():
    rs = [haven.check_lsm({}), haven.check_nodes(["a", "b", "c"], ["d", "e", "f"])]
    haven.mark_expected(rs, {"lsm": "this VM has no LSM", "nodes": "the lab has one control-plane host"})
    assert rs[0]["status"] == "FAIL" and rs[0]["expected"] == "this VM has no LSM"
    assert rs[1]["status"] == "PASS" and "but it passes" in rs[1]["evidence"][-1]


def test_the_ansible_module_runs_the_checks(tmp_path):
    _runtime_root(tmp_path, KUBESPRAY_SHAPED)
    write(tmp_path, "/etc/chrony/chrony.conf", "server 10.42.10.4\n")
    args = json.dumps({"checks": ["lsm", "mirrors", "time", "logs", "cluster", "nodes"], "root": str(tmp_path),
                       "allowed_ranges": ["10.42.10.0/24"], "internal_domains": ["pilot.geheim.internal"],
                       "control_plane": ["a", "b", "c"], "workers": ["d", "e", "f"],
                       "expected_failures": {"lsm": "no LSM on this VM"}})
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "localhost", "-m", "airgap_haven", "-a", args, "-o"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.split("=>", 1)[1])
    status = {r["check"]: r["status"] for r in out["results"]}
    assert status["mirrors"] == "FAIL" and status["time"] == "PASS" and status["logs"] == "FAIL"
    assert status["nodes"] == "PASS" and status["conformance"] == "NEEDS-CLUSTER"
    lsm = next(r for r in out["results"] if r["check"] == "lsm")
    assert lsm["status"] == "FAIL" and lsm["expected"] == "no LSM on this VM"
