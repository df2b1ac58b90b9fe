"""End to end: the rollout (site.yml) and the proof (check.yml) on a private lab.

One lab and one pair of bundles (1.0.0 and 1.1.0, built by :class:`airgap.demo.Demo`
from the sample images, countersigned, carried as media parts and joined inside
the lab's network namespace) are shared by the whole module.  The tests run in
file order and each leaves the site as the next one expects:

1. site.yml with 1.0.0, then check.yml: every check PASS on every node;
2. site.yml again changes nothing; ``--check`` reports no change either;
3. tampering (four kinds on distinct node/check pairs, judged by one check.yml
   run, then restored) is caught by check.yml, naming the node and the check,
   with a non-zero exit; once restored, every check passes again;
4. 1.1.0 over 1.0.0 moves the workloads to the new digests; 1.0.0 afterwards is
   refused by the bundle stage (rollback).

The lab has its own network namespace name and work directory, so it never
touches a lab brought up by ``airgap lab up`` or by the demo.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from tests.fixtures.lab import _inventory_dir, _require_lab_host

pytestmark = pytest.mark.slow

HOSTS = {"registry-1", "node-1", "node-2"}
CONTAINER_HOSTS = {"node-1", "node-2"}
NODE_CHECKS = {"bundle_version", "registry_digests", "endpoints", "route", "runtime_config", "containers"}
REGISTRY_CHECKS = {"bundle_version", "registry_digests", "endpoints", "route", "audit_chain"}
TIMINGS: dict[str, float] = {}


class Site:
    """The module's lab, its Demo driver and the two joined bundles."""

    def __init__(self, demo, lab, bundles: dict[str, Path], layout: Path):
        self.demo = demo
        self.lab = lab
        self.bundles = bundles
        self.layout = layout

    def site(self, version: str, *extra: str, check: bool = False):
        return self.demo.rollout(self.bundles[version], *extra, check=check, capture=True)

    def check(self) -> dict:
        return self.demo.check(strict=False, capture=True)

    def sh(self, node: str, script: str, *, input=None, check: bool = True):
        return self.lab.exec(node, ["sh", "-c", script], input=input, check=check)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from airgap.demo import Demo
    from airgap.lab import Lab

    _require_lab_host()
    base = tmp_path_factory.mktemp("rollout")
    lab = Lab(base / "lab", name=f"airgap-lab-r{os.getpid()}", inventory=_inventory_dir(base) / "hosts.yml")
    lines: list[str] = []
    demo = Demo(base / "demo", lab=lab, log=lines.append)
    try:
        demo.start_source_registry()
        demo.make_images()
        demo.make_keys()
        demo.make_trust()
        built = {"1.0.0": demo.build("bundle.yaml", "1.0.0"), "1.1.0": demo.build("bundle-1.1.0.yaml", "1.1.0")}
    finally:
        demo.stop()
    media = {v: demo.carry(b) for v, b in built.items()}
    demo.lab_up()
    try:
        bundles = {v: demo.join_inside(m, built[v].name) for v, m in media.items()}
        yield Site(demo, lab, bundles, demo.workdir / "layout")
    finally:
        lab.down()


# ----------------------------------------------------------------------------- helpers

def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def results(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["host"], r["check"]): r for r in report["results"]}


def assert_all_pass(report: dict) -> None:
    res = results(report)
    failed = {k: v["evidence"] for k, v in res.items() if v["status"] != "PASS"}
    assert not failed, f"checks failed: {json.dumps(failed, indent=1)[:4000]}"
    assert report["returncode"] == 0
    assert report["passed"] is True
    assert {h for h, _ in res} == HOSTS
    for host in CONTAINER_HOSTS:
        assert {c for h, c in res if h == host} == NODE_CHECKS, host
    assert {c for h, c in res if h == "registry-1"} == REGISTRY_CHECKS


def assert_fails(report: dict, host: str, check: str, evidence: str) -> None:
    res = results(report)
    assert report["returncode"] != 0, "check.yml must exit non-zero when a check fails"
    assert report["passed"] is False
    got = res[(host, check)]
    assert got["status"] == "FAIL", got
    assert any(evidence in e for e in got["evidence"]), got["evidence"]
    # The fail message of the play names the node and the check.
    assert f"{host} {check}" in report["output"]
    # No other node fails that check for that reason.
    others = [h for (h, c), r in res.items() if c == check and r["status"] == "FAIL" and h != host
              and any(evidence in e for e in r["evidence"])]
    assert not others, f"{check} failed for {evidence!r} on untouched nodes too: {others}"


def running_digests(site: Site, node: str) -> dict[str, str]:
    """name -> image digest of the pilot's running containers on *node*."""
    out = site.sh(node, "podman ps --format json").stdout
    found = {}
    for ctr in json.loads(out or "[]"):
        name = ctr["Names"][0]
        info = json.loads(site.sh(node, f"podman container inspect {name}").stdout)[0]
        found[name] = info["ImageDigest"]
    return found


def manifest_digests(site: Site, version: str) -> dict[str, str]:
    """pilot/<app> -> image digest, from the bundle's signed manifest."""
    with tarfile.open(site.bundles[version]) as tar:
        names = [n for n in tar.getnames() if n.endswith("manifest.json") and "/" not in n.strip("./")]
        manifest = json.load(tar.extractfile(names[0]))
    return {img["ref"].split("/", 1)[1].rsplit(":", 1)[0]: img["digest"] for img in manifest["images"]}


# ----------------------------------------------------------------------------- tests

def test_first_rollout_then_every_check_passes(site):
    t0 = time.monotonic()
    proc = site.site("1.0.0")
    TIMINGS["first"] = time.monotonic() - t0
    print(f"\nsite.yml first run (3-node lab, bundle 1.0.0): {TIMINGS['first']:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert set(recap(proc.stdout)) == HOSTS
    assert_all_pass(site.check())


def test_second_run_and_check_mode_change_nothing(site):
    t0 = time.monotonic()
    proc = site.site("1.0.0")
    TIMINGS["second"] = time.monotonic() - t0
    print(f"\nsite.yml second run: {TIMINGS['second']:.1f} s (first {TIMINGS.get('first', float('nan')):.1f} s)")
    assert proc.returncode == 0, proc.stdout[-5000:]
    counts = recap(proc.stdout)
    assert set(counts) == HOSTS
    assert {h: c["changed"] for h, c in counts.items()} == {h: 0 for h in HOSTS}, proc.stdout[-8000:]

    proc = site.site("1.0.0", "--check")
    assert proc.returncode == 0, proc.stdout[-5000:]
    counts = recap(proc.stdout)
    assert set(counts) == HOSTS
    assert {h: c["changed"] for h, c in counts.items()} == {h: 0 for h in HOSTS}, proc.stdout[-8000:]
    assert all(c["failed"] == 0 for c in counts.values())


@pytest.fixture(scope="module")
def tampered(site):
    """Four kinds of tampering at once, each on its own node and check; one check.yml
    run judges them all (one run instead of four keeps the module fast), then
    every node is restored and check.yml must pass again.

    - node-1: a container from an image not in the bundle (notes 1.1, brought in
      as a local OCI layout, no registry involved);
    - node-2: registries.conf sends docker.io/library to docker.io;
    - node-1: /etc/resolv.conf names Google's resolver 8.8.8.8;
    - registry-1 (staging): one character of an audit line edited.
    """
    conf = "/etc/containers/registries.conf"
    log = "/var/lib/airgap/state/audit.log"
    saved_conf = site.sh("node-2", f"cat {conf}").stdout
    saved_resolv = site.sh("node-1", "cat /etc/resolv.conf", check=False).stdout
    saved_log = site.sh("registry-1", f"cat {log}").stdout
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(site.layout, arcname="intruder")
        site.sh("node-1", "rm -rf /root/intruder && tar -x -C /root", input=buf.getvalue())
        site.sh("node-1", "podman run --detach --name intruder --network host --entrypoint /bin/busybox "
                          "oci:/root/intruder:notes-1.1 sleep 600 >/dev/null")

        site.sh("node-2", f"cat > {conf}",
                input=saved_conf + '\n[[registry]]\nprefix = "docker.io/library"\nlocation = "docker.io/library"\n')

        site.sh("node-1", "rm -f /etc/resolv.conf && cat > /etc/resolv.conf", input="nameserver 8.8.8.8\n")

        lines = saved_log.splitlines(keepends=True)
        assert len(lines) >= 2, saved_log
        # One character of the first entry's action, format kept: the next
        # entry's prev no longer matches.
        action = json.loads(lines[0])["action"]
        edited = lines[0].replace(json.dumps(action), json.dumps(action + "x"), 1)
        assert edited != lines[0]
        site.sh("registry-1", f"cat > {log}", input=edited + "".join(lines[1:]))

        report = site.check()
    finally:
        site.sh("node-1", "podman rm --force --time 0 intruder >/dev/null 2>&1; "
                          "podman image prune --all --force >/dev/null 2>&1; rm -rf /root/intruder", check=False)
        site.sh("node-2", f"cat > {conf}", input=saved_conf)
        site.sh("node-1", "cat > /etc/resolv.conf", input=saved_resolv)
        site.sh("registry-1", f"cat > {log}", input=saved_log)
    return report, site.check()


def test_container_from_an_image_not_in_the_bundle_fails(tampered):
    assert_fails(tampered[0], "node-1", "containers", "intruder:")


def test_runtime_config_pointing_at_docker_io_fails(tampered):
    assert_fails(tampered[0], "node-2", "runtime_config", "docker.io/library -> docker.io/library")


def test_resolver_of_a_us_provider_fails(tampered):
    assert_fails(tampered[0], "node-1", "endpoints", "8.8.8.8")


def test_edited_audit_line_fails_the_audit_chain(tampered):
    assert_fails(tampered[0], "registry-1", "audit_chain", "audit")


def test_every_check_passes_again_once_restored(tampered):
    assert_all_pass(tampered[1])


def test_upgrade_to_1_1_0_then_rollback_to_1_0_0_is_refused(site):
    t0 = time.monotonic()
    proc = site.site("1.1.0")
    TIMINGS["upgrade"] = time.monotonic() - t0
    print(f"\nsite.yml 1.0.0 -> 1.1.0: {TIMINGS['upgrade']:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:]
    want = manifest_digests(site, "1.1.0")
    old = manifest_digests(site, "1.0.0")
    assert set(want.values()).isdisjoint(old.values())
    for node in sorted(CONTAINER_HOSTS):
        running = running_digests(site, node)
        assert running == {"pilot-status": want["pilot/status"], "pilot-notes": want["pilot/notes"]}, node

    proc = site.site("1.0.0")
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())  # the YAML callback folds long messages
    # Refused by the bundle stage (on the controller or the staging host) ...
    assert re.search(r"Origin: \S*/roles/bundle/tasks/\w+\.yml", text), proc.stdout[-5000:]
    assert re.search(r"rejected \S*geheim-pilot-1\.0\.0\.tar", text), proc.stdout[-5000:]
    # ... for rollback: the verify report's rollback check failed.
    assert re.search(r'"check": "rollback", "detail": "[^"]*", "status": "fail"', text), proc.stdout[-5000:]
    # Nothing moved: the workloads still run 1.1.0.
    for node in sorted(CONTAINER_HOSTS):
        assert set(running_digests(site, node).values()) == set(want.values())
    print(f"\nsite.yml timings on the 3-node lab: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")
