"""Haven checks that nodes and the inventory can prove: each with a passing and a failing instance.

The node checks read real files below a root (a directory made per test); the
LSM check also reads this machine's own /sys, which has neither SELinux nor
AppArmor: the lab's expected failure.  One run through Ansible proves the
module and its module_utils load the way check.yml loads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers import module_utils

REPO = Path(__file__).resolve().parent.parent
common = module_utils("airgap_check_common")
runtime = module_utils("airgap_check_runtime")
haven = module_utils("airgap_haven")
report = module_utils("airgap_check_report")

INTERNAL = "registry.pilot.geheim.internal:5000"
LABELS = common.Labels([{"pattern": "debian.pool.ntp.org", "provider": "NTP pool", "jurisdiction": "external"}])
ENCLAVE = common.Enclave({"ranges": ["10.42.10.0/24"], "domains": ["pilot.geheim.internal"],
                          "services": {"ntp": ["10.42.10.4", "ntp1.pilot.geheim.internal"], "registry": [INTERNAL]}},
                         LABELS)


def tree(root: Path, files: dict[str, str]) -> common.Files:
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return common.Files(str(root))


def reasons(result) -> list[str]:
    return [f"{f['source']}:{f['line']} {f['value']} {f['reason']}" for f in result["findings"]]


# --------------------------------------------------------------------------- inventory


def test_nodes():
    ok = haven.check_nodes(["cp1", "cp2", "cp3"], ["w1", "w2", "w3", "w4"])
    assert ok["status"] == "PASS" and ok["summary"] == "3 control-plane, 4 worker hosts" and ok["section"] == "Haven"
    lab = haven.check_nodes([], ["node-1", "node-2"])
    assert lab["status"] == "FAIL"
    assert [f["value"] for f in lab["findings"]] == ["0 control-plane host(s)", "2 worker host(s)"]


def test_zones():
    ok = haven.check_zones({"cp1": "ede-1", "cp2": "ede-2", "w1": "ede-1"})
    assert ok["status"] == "PASS" and "zone ede-2: cp2" in ok["evidence"]
    one = haven.check_zones({"cp1": "ede-1", "w1": "ede-1"})
    assert one["status"] == "FAIL" and "one zone" in one["findings"][0]["reason"]
    unset = haven.check_zones({"cp1": "ede-1", "cp2": "ede-2", "w1": ""})
    assert unset["status"] == "FAIL" and unset["findings"][0]["value"] == "w1"


# --------------------------------------------------------------------------- node


@pytest.mark.parametrize("evidence, status, text", [
    ({"lsm": "capability,selinux", "selinux_enforce": "1"}, "PASS", "SELinux enforcing"),
    ({"lsm": "lockdown,capability,yama,apparmor", "apparmor_enabled": "Y"}, "PASS", "AppArmor enabled"),
    ({"lsm": "capability,selinux", "selinux_enforce": "0"}, "FAIL", "not enforcing"),
    ({"lsm": "lockdown,capability,yama", "apparmor_enabled": "N"}, "FAIL", "neither"),
])
def test_lsm(evidence, status, text):
    r = haven.check_lsm(evidence)
    assert r["status"] == status and text in (r["summary"] + " ".join(reasons(r)))


def test_lsm_of_this_machine_is_the_labs_expected_failure():
    r = haven.check_lsm(haven.collect_lsm(common.Files("/")))
    assert r["status"] == "FAIL", r  # no LSM on this VM: the lab inventory declares it
    assert r["findings"][0]["reason"] == "neither SELinux nor AppArmor is active"


def test_lsm_from_files(tmp_path):
    files = tree(tmp_path, {"/sys/kernel/security/lsm": "lockdown,capability,apparmor\n",
                            "/sys/module/apparmor/parameters/enabled": "Y\n"})
    assert haven.check_lsm(haven.collect_lsm(files))["status"] == "PASS"


def test_addresses():
    ok = haven.check_addresses([("ansible_host", "10.42.10.21"), ("ip address show eth0", "10.42.10.21")], ENCLAVE)
    assert ok["status"] == "PASS"
    public = haven.check_addresses([("ansible_host", "10.42.10.21"), ("ip address show eth1", "145.97.0.1")], ENCLAVE)
    assert public["status"] == "FAIL" and reasons(public) == ["ip address show eth1:None 145.97.0.1 a public address"]
    outside = haven.check_addresses([("ansible_host", "10.99.0.1")], ENCLAVE)
    assert outside["status"] == "FAIL" and "outside the enclave's ranges" in outside["findings"][0]["reason"]


SERVER_ONLY = f"""\
    server = "https://{INTERNAL}/v2/docker.io"
    override_path = true
    """
SERVER_SHAPED = SERVER_ONLY + f"""\

    [host."https://{INTERNAL}/v2/docker.io"]
      capabilities = ["pull", "resolve"]
      override_path = true
    """
KUBESPRAY_SHAPED = f"""\
    [host."https://{INTERNAL}"]
      capabilities = ["pull", "resolve"]
    """


def _mirrors(tmp_path, hosts_toml):
    files = tree(tmp_path, {"/etc/containers/registries.conf": f"""\
        unqualified-search-registries = []
        [[registry]]
        prefix = "docker.io"
        location = "{INTERNAL}/docker.io"
        """, "/etc/containerd/certs.d/docker.io/hosts.toml": hosts_toml})
    return haven.check_mirrors(files, runtime.Internal([INTERNAL]), LABELS)


def test_mirrors_pass_when_the_internal_registry_is_server_and_host(tmp_path):
    r = _mirrors(tmp_path, SERVER_SHAPED)
    assert r["status"] == "PASS", r
    assert any("/etc/containerd/certs.d/docker.io/hosts.toml" in e for e in r["evidence"])


def test_mirrors_fail_on_kubesprays_shape(tmp_path):
    r = _mirrors(tmp_path, KUBESPRAY_SHAPED)
    assert r["status"] == "FAIL" and "falls back to docker.io" in " ".join(reasons(r))


def test_mirrors_fail_on_a_server_only_file_containerd_1_6_drops(tmp_path):
    r = _mirrors(tmp_path, SERVER_ONLY)
    assert r["status"] == "FAIL" and "containerd 1.6 rejects" in " ".join(reasons(r))


def test_time(tmp_path):
    files = tree(tmp_path, {"/etc/chrony/chrony.conf": "server ntp1.pilot.geheim.internal iburst\nserver 10.42.10.4\n"})
    ok = haven.check_time(haven.collect_time_sources(files), ENCLAVE)
    assert ok["status"] == "PASS" and ok["evidence"][0].startswith("/etc/chrony/chrony.conf:1")
    tree(tmp_path, {"/etc/chrony/sources.d/extra.sources": "pool 2.debian.pool.ntp.org iburst\n"})
    bad = haven.check_time(haven.collect_time_sources(files), ENCLAVE)
    assert bad["status"] == "FAIL" and bad["findings"][0]["value"] == "2.debian.pool.ntp.org"
    assert bad["findings"][0]["label"] == "external service: NTP pool"


def test_time_timesyncd_without_fallback_reaches_debian_pool(tmp_path):
    files = tree(tmp_path, {"/etc/systemd/timesyncd.conf": "[Time]\nNTP=10.42.10.4\n"})
    bad = haven.check_time(haven.collect_time_sources(files), ENCLAVE)
    assert bad["status"] == "FAIL" and "FallbackNTP= is not set" in bad["findings"][0]["reason"]
    tree(tmp_path, {"/etc/systemd/timesyncd.conf.d/airgap.conf": "[Time]\nFallbackNTP=\n"})
    assert haven.check_time(haven.collect_time_sources(files), ENCLAVE)["status"] == "PASS"
    assert haven.check_time([], ENCLAVE)["findings"][0]["reason"] == "no time source is configured"


def test_logs(tmp_path):
    files = tree(tmp_path, {"/etc/rsyslog.d/90-ship.conf": "*.* @@logs.pilot.geheim.internal:6514\n"})
    assert haven.check_logs(haven.collect_log_targets(files), ENCLAVE)["status"] == "PASS"
    tree(tmp_path, {"/etc/rsyslog.d/91-cloud.conf": 'action(type="omfwd" target="logs.example-cloud.com" port="514")\n'})
    bad = haven.check_logs(haven.collect_log_targets(files), ENCLAVE)
    assert bad["status"] == "FAIL" and bad["findings"][0]["value"] == "logs.example-cloud.com"
    assert haven.check_logs([], ENCLAVE)["status"] == "FAIL"


def test_logs_journal_upload(tmp_path):
    files = tree(tmp_path, {"/etc/systemd/journal-upload.conf": "[Upload]\nURL=https://10.42.10.9:19532\n"})
    assert haven.check_logs(haven.collect_log_targets(files), ENCLAVE)["status"] == "PASS"


def test_cluster_checks_say_what_to_run_there():
    rs = haven.cluster_checks()
    assert {r["check"] for r in rs} >= {"haven_version", "haven_rbac", "haven_conformance", "haven_storage",
                                        "haven_metrics", "haven_certificates"}
    assert all(r["status"] == "NEEDS-CLUSTER" and r["evidence"][0].startswith("run on the cluster: ") for r in rs)
    assert "sonobuoy" in next(r for r in rs if r["check"] == "haven_conformance")["summary"]


def test_expected_failures_are_marked_not_hidden():
    rs = [haven.check_lsm({}), haven.check_nodes(["a", "b", "c"], ["d", "e", "f"])]
    haven.mark_expected(rs, {"haven_lsm": "this VM has no LSM", "haven_nodes": "the lab has no control plane"})
    assert rs[0]["status"] == "FAIL" and rs[0]["expected"] == "this VM has no LSM"
    assert rs[1]["status"] == "PASS" and "but it passes" in rs[1]["evidence"][-1]


def test_report_shows_expected_failures_and_needs_cluster_without_failing_the_verdict():
    results = [dict(r, host="node-1") for r in haven.mark_expected([haven.check_lsm({})], {"haven_lsm": "no LSM here"})]
    results += [dict(r, host="controller") for r in haven.cluster_checks()]
    doc = report.build(results, {})
    assert doc["verdict"] == "PASS" and doc["failures"] == []
    assert [(f["host"], f["check"], f["expected"]) for f in doc["expected_failures"]] == [
        ("node-1", "haven_lsm", "no LSM here")]
    md = report.markdown(doc)
    assert "## Expected failures on this site (1)" in md and "FAIL (expected)" in md and "NEEDS-CLUSTER" in md
    assert "| **Haven** |" in md
    bad = report.build([dict(haven.check_lsm({}), host="node-1")], {})
    assert bad["verdict"] == "FAIL" and bad["failures"][0]["check"] == "haven_lsm"


def test_the_ansible_module_runs_the_checks(tmp_path):
    tree(tmp_path, {"/etc/containerd/certs.d/docker.io/hosts.toml": KUBESPRAY_SHAPED,
                    "/etc/chrony/chrony.conf": "server 10.42.10.4\n"})
    args = json.dumps({"checks": ["node", "inventory", "cluster"], "root": str(tmp_path),
                       "enclave": {"ranges": ["10.42.10.0/24"], "services": {"ntp": ["10.42.10.4"]}},
                       "internal_registries": [INTERNAL], "control_plane": ["a", "b", "c"], "workers": ["d", "e", "f"],
                       "zones": {"a": "z1", "d": "z2"}, "expected_failures": {"haven_lsm": "no LSM on this VM"}})
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "localhost", "-m", "airgap_haven", "-a", args, "-o"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.split("=>", 1)[1])
    status = {r["check"]: r["status"] for r in out["results"]}
    assert status["haven_mirrors"] == "FAIL" and status["haven_time"] == "PASS" and status["haven_logs"] == "FAIL"
    assert status["haven_nodes"] == "PASS" and status["haven_zones"] == "PASS"
    assert status["haven_conformance"] == "NEEDS-CLUSTER"
    lsm = next(r for r in out["results"] if r["check"] == "haven_lsm")
    assert lsm["status"] == "FAIL" and lsm["expected"] == "no LSM on this VM"
    # This machine's own interfaces are not inside 10.42.10.0/24 (or it has none): a FAIL too.
    assert status["haven_addresses"] == "FAIL"
    assert out["failed_checks"] == 3  # mirrors, logs, addresses; the expected LSM failure is not counted
