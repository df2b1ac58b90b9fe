"""End to end: the rollout (site.yml) and the proof (check.yml) on one lab.

One lab and one pair of bundles (1.0.0 and 1.1.0, built by :class:`airgap.lab.demo.Demo`
from the sample images, countersigned, carried as media parts and joined inside
the lab's network namespace) are shared by the whole module; site.yml runs as
few times as the claims need.  The tests run in file order and each leaves the
site as the next one expects:

1. site.yml with 1.0.0, then check.yml: every check PASS on every host;
2. site.yml again changes nothing; ``--check`` reports no change either;
3. planted faults, one per class, each on a named node, all at once: ONE
   check.yml run reports exactly those findings (node, check, file, value) and
   exits non-zero; once they are removed (the near-expiry registry certificate
   by site.yml, which renews it) every check passes again;
4. a container host is rebooted: its workloads come back and check.yml passes;
5. 1.1.0 over 1.0.0 moves the workloads to the new digests; 1.0.0 afterwards is
   refused by the bundle stage (rollback);
6. the toolkit: a trojan airgap wheel (same name and version, builder- and
   officer-signed, no toolkit release lists it) installs nothing on the staging
   host and the bundle stage names the wheel and the missing statement; a
   modified toolkit the toolkit role released installs and runs (bundle stage
   only, twice: no further site.yml run).

The lab has its own network namespace name and work directory, so it never
touches a lab brought up by ``airgap lab up`` or by the demo.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from tests.fixtures.lab import _inventory_dir, _require_lab_host, ctr_spy
from tests.helpers import REPO

pytestmark = pytest.mark.slow

HOSTS = {"registry-1", "node-1", "node-2"}
CONTAINER_HOSTS = {"node-1", "node-2"}
HAVEN_NODE = {"haven_lsm", "haven_addresses", "haven_mirrors", "haven_time", "haven_logs"}
HAVEN_CLUSTER = {"haven_version", "haven_rbac", "haven_conformance", "haven_storage", "haven_metrics",
                 "haven_certificates", "haven_log_aggregation"}
HOST_CHECKS = {"dns", "ntp", "packages", "proxy", "hosts", "routes", "registries", "image_policy", "credentials"} | HAVEN_NODE
NODE_CHECKS = HOST_CHECKS | {"workloads", "marker"}
REGISTRY_CHECKS = HOST_CHECKS | {"registry_content", "registry_access", "certificate", "audit"}
CONTROLLER_CHECKS = {"signed", "enclave", "policy", "haven_nodes", "haven_zones"} | HAVEN_CLUSTER
# The Haven checks the lab inventory declares it cannot pass (inventories/lab/group_vars/all/haven.yml):
# reported FAIL, listed apart, not counted in the verdict.
LAB_EXPECTED = ({("controller", "haven_nodes"), ("controller", "haven_zones")}
                | {(h, c) for h in HOSTS for c in ("haven_lsm", "haven_time", "haven_logs")})
# The lab purges these in a node's own overlay before the first rollout: the
# packages stage must bring them back from the bundle, with no network.
PURGED = {"registry-1": ["docker-registry"], "node-1": ["containerd", "runc"]}
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

    @property
    def report_dir(self) -> Path:
        return self.demo.workdir / "check-report"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from airgap.lab import Lab
    from airgap.lab.demo import Demo

    _require_lab_host()
    base = tmp_path_factory.mktemp("rollout")
    lab = Lab(base / "lab", name=f"airgap-lab-r{os.getpid()}", inventory=_inventory_dir(base) / "hosts.yml")
    lines: list[str] = []
    demo = Demo(base / "demo", repo=REPO, lab=lab, log=lines.append)
    try:
        demo.prepare()
        built = {"1.0.0": demo.build("bundle.yaml", "1.0.0"), "1.1.0": demo.build("bundle-1.1.0.yaml", "1.1.0")}
        toolkits = toolkit_bundles(demo, base)
    finally:
        demo.stop()
    media = {v: demo.carry(b) for v, b in built.items()}
    demo.lab_up()
    try:
        bundles = {v: demo.join_inside(m, built[v].name) for v, m in media.items()}
        for node, names in PURGED.items():
            lab.exec(node, ["dpkg", "--purge", "--force-depends", *names], check=True)
        # The toolkit bundles are only ever staged: the controller reads them in place.
        yield Site(demo, lab, {**bundles, **toolkits}, demo.workdir / "layout")
    finally:
        lab.down()


# ----------------------------------------------------------------------------- helpers

def modified_toolkit(out: Path, marker: str) -> Path:
    """airgap's wheel with the same name and version (0.1.0), whose ``airgap --version`` says *marker*."""
    from airgap import wheels
    src = out / "src"
    for path in wheels._source_paths(REPO):
        dest = src / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    init = src / "airgap" / "__init__.py"
    text = init.read_text()
    assert '__version__ = "0.1.0"' in text
    init.write_text(text.replace('__version__ = "0.1.0"', f'__version__ = "0.1.0+{marker}"'))
    return wheels.build_toolkit_wheel(src, out / "wheel")


def toolkit_bundles(demo, base: Path) -> dict[str, Path]:
    """1.2.0: the issue's trojan (a modified airgap wheel of the same name and version, no toolkit
    statement), built and countersigned like any bundle; 1.3.0: a modified toolkit the toolkit
    role released (statement signed by toolkit-1)."""
    honest = demo.release_dir
    specs = base / "specs"
    shutil.copytree(REPO / "bundles" / "geheim-pilot", specs)
    out = {}
    for version, marker in (("1.2.0", "trojan"), ("1.3.0", "released")):
        spec = specs / f"bundle-{version}.yaml"
        spec.write_text((specs / "bundle-1.1.0.yaml").read_text().replace('version: "1.1.0"', f'version: "{version}"'))
        wheel = modified_toolkit(base / f"toolkit-{marker}", marker)
        house = base / f"wheelhouse-{marker}"
        house.mkdir()
        for w in honest.glob("*.whl"):
            shutil.copyfile(wheel if w.name == wheel.name else w, house / w.name)
        if marker == "released":
            demo.make_toolkit_release(base / "release-2", wheels_from=house)
        else:
            demo.release_dir = house  # no statement: the builder carries unreleased wheels
        out[f"{version}-{marker}"] = demo.build(spec, version)
    demo.release_dir = honest
    return out


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
    failed = {f"{h} {c}": v["findings"] or v["summary"] for (h, c), v in res.items()
              if v["status"] not in ("PASS", "NEEDS-CLUSTER") and (h, c) not in LAB_EXPECTED}
    assert not failed, f"checks failed: {json.dumps(failed, indent=1)[:6000]}"
    # The lab's expected Haven failures are FAIL, each with its reason, and listed apart.
    assert {k for k, v in res.items() if v["status"] == "FAIL"} == LAB_EXPECTED
    assert all(res[k].get("expected") for k in LAB_EXPECTED)
    assert {(f["host"], f["check"]) for f in report["expected_failures"]} == LAB_EXPECTED
    assert {c for (h, c), v in res.items() if v["status"] == "NEEDS-CLUSTER"} == HAVEN_CLUSTER
    assert report["returncode"] == 0
    assert report["passed"] is True and report["verdict"] == "PASS" and report["failures"] == []
    assert {h for h, _ in res} == HOSTS | {"controller"}
    for host in CONTAINER_HOSTS:
        assert {c for h, c in res if h == host} == NODE_CHECKS, host
    assert {c for h, c in res if h == "registry-1"} == REGISTRY_CHECKS
    assert {c for h, c in res if h == "controller"} == CONTROLLER_CHECKS


def running_digests(site: Site, node: str) -> dict[str, str]:
    """workload -> image digest of the pilot's running application containers on *node* (not the pods' infra)."""
    out = site.sh(node, "podman ps --format json").stdout
    found = {}
    for ctr in json.loads(out or "[]"):
        name = ctr["Names"][0]
        if ctr.get("IsInfra"):
            continue
        info = json.loads(site.sh(node, f"podman container inspect {name}").stdout)[0]
        found[re.sub(r"-pod-\d+-\w+$", "", name)] = info["ImageDigest"]
    return found


def infra_digests(site: Site, node: str) -> set[str]:
    out = json.loads(site.sh(node, "podman ps --format json").stdout or "[]")
    return {json.loads(site.sh(node, f"podman container inspect {c['Names'][0]}").stdout)[0]["ImageDigest"]
            for c in out if c.get("IsInfra")}


def manifest_of(site: Site, version: str) -> dict:
    with tarfile.open(site.bundles[version]) as tar:
        names = [n for n in tar.getnames() if n.endswith("manifest.json") and "/" not in n.strip("./")]
        return json.load(tar.extractfile(names[0]))


def manifest_digests(site: Site, version: str) -> dict[str, str]:
    """pilot/<app> -> image digest, from the bundle's signed manifest."""
    return {img["repository"]: img["digest"] for img in manifest_of(site, version)["images"]}


# ----------------------------------------------------------------------------- 1, 2: converge

def test_first_rollout_then_every_check_passes(site):
    t0 = time.monotonic()
    proc = site.site("1.0.0")
    TIMINGS["first"] = time.monotonic() - t0
    print(f"\nsite.yml first run (3-node lab, bundle 1.0.0): {TIMINGS['first']:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert set(recap(proc.stdout)) == HOSTS
    report = site.check()
    assert_all_pass(report)
    # The workloads run from their Kubernetes manifests (podman kube play), every
    # image -- the pods' infra image too -- by the digest the bundle signed.
    want = manifest_digests(site, "1.0.0")
    for node in sorted(CONTAINER_HOSTS):
        assert running_digests(site, node) == {"pilot-status": want["pilot/status"], "pilot-notes": want["pilot/notes"]}
        assert infra_digests(site, node) == {want["pilot/pause"]}
        played = site.sh(node, "cat /etc/airgap/workloads/pilot-status.yaml").stdout
        assert f"@{want['pilot/status']}" in played and "kind: Deployment" in played
    # The packages purged in the nodes' own overlays came back from the bundle
    # (apt, the bundle's repository its only source; the lab has no network).
    carried = {d["package"]: d["version"] for d in manifest_of(site, "1.0.0")["packages"]["debs"]}
    for node, names in PURGED.items():
        got = site.sh(node, "dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\\n' " + " ".join(names)).stdout
        assert got.splitlines() == [f"{n} {carried[n]} installed" for n in names], (node, got)
        assert site.sh(node, "ls /etc/apt/sources.list.d; cat /etc/apt/sources.list", check=False).stdout.strip() == ""
    # What every node is held to: the controller's evidence of the signed bundle.
    assert report["bundle"]["manifest_digest"] == manifest_digest_of(site, "1.0.0")
    assert {s["role"] for s in report["signers"]} == {"builder", "officer"}
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", report["audit_head"])
    # Held to a bundle given on the command line instead (verified now by the
    # controller's toolkit): the same site passes, and the report names that file.
    given = site.demo.check(*site.demo.rollout_args(site.bundles["1.0.0"])[:4], strict=False, capture=True)
    assert_all_pass(given)
    assert given["bundle"]["path"] == str(site.bundles["1.0.0"])
    signed = results(given)[("controller", "signed")]
    assert any("verified now" in e for e in signed["evidence"])
    # Held to 1.1.0, which was never rolled out: every node is measured against its manifest.
    other = site.demo.check(*site.demo.rollout_args(site.bundles["1.1.0"])[:4], strict=False, capture=True)
    want = manifest_digest_of(site, "1.1.0")
    failed = {(f["host"], f["check"]) for f in other["failures"]}
    assert {("node-1", "marker"), ("node-2", "marker"), ("node-1", "workloads"), ("node-2", "workloads"),
            ("registry-1", "registry_content")} <= failed, failed
    digests = [f for f in other["failures"] if f["check"] == "marker" and f["value"].startswith("manifest_digest")]
    assert len(digests) == 2 and all(want in f["reason"] for f in digests)


def manifest_digest_of(site: Site, version: str) -> str:
    from airgap.bundle import Bundle

    with Bundle.open(site.bundles[version]) as bundle:
        return bundle.manifest().digest


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


# ----------------------------------------------------------------------------- 3: planted faults

REGISTRY_STORAGE = "/var/lib/airgap/registry/docker/registry/v2"
# The pilot's application containers, as podman kube play names a Deployment's pod's containers.
STATUS, NOTES = "pilot-status-pod-0-status", "pilot-notes-pod-0-notes"
PKI = "/etc/airgap/pki"
AUDIT_LOG = "/var/lib/airgap/state/audit.log"

# (node, path, content) written, and removed or restored afterwards.
PLANTED_FILES = [
    ("node-1", "/etc/systemd/network/10-uplink.network",
     "[Match]\nName=eth0\n\n[Network]\nDNS=8.8.8.8\n\n[Route]\nDestination=2001:4860::/32\n"),
    ("node-1", "/etc/containers/policy.json", '{"default": [{"type": "insecureAcceptAnything"}]}\n'),
    ("node-2", "/etc/systemd/timesyncd.conf.d/time.conf", "[Time]\nNTP=time.google.com\n"),
    ("node-2", "/etc/pip.conf", "[global]\nindex-url = https://pypi.org/simple\n"),
    ("node-2", "/etc/hosts", None),  # appended, see below
    ("node-2", "/etc/containers/registries.conf", None),  # appended
    ("registry-1", "/etc/apt/sources.list.d/debian.list", "deb http://deb.debian.org/debian bookworm main\n"),
    ("registry-1", "/etc/environment", None),  # appended
    ("registry-1", "/etc/containerd/certs.d/docker.io/hosts.toml", 'server = "https://registry-1.docker.io"\n'),
]
APPENDED = {
    ("node-2", "/etc/hosts"): "52.94.76.10 registry.pilot.geheim.internal\n",
    ("node-2", "/etc/containers/registries.conf"): '\n[[registry]]\nprefix = "docker.io/library"\nlocation = "docker.io/library"\n',
    ("registry-1", "/etc/environment"): "https_proxy=http://proxy.example.com:3128\n",
}


def _save(site: Site, node: str, path: str) -> str | None:
    proc = site.sh(node, f"cat {path}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def _restore(site: Site, node: str, path: str, saved: str | None) -> None:
    if saved is None:
        site.sh(node, f"rm -f {path}", check=False)
    else:
        site.sh(node, f"cat > {path}", input=saved)


def _first_missing(site: Site, node: str, directory: Path) -> str | None:
    """The outermost missing directory of *directory* on *node*, or None."""
    missing = None
    for d in [directory, *directory.parents]:
        if site.sh(node, f"test -d {d}", check=False).returncode == 0:
            break
        missing = str(d)
    return missing


def _restart_registry(site: Site) -> None:
    """What the registry role's handler does without systemd: both endpoints again."""
    for name, config in (("airgap-registry", "config.yml"), ("airgap-registry-push", "config-push.yml")):
        site.sh("registry-1",
                f"start-stop-daemon --stop --retry TERM/15/KILL/5 --oknodo --remove-pidfile "
                f"--pidfile /run/airgap-registry/{name}.pid --exec /usr/bin/docker-registry >/dev/null; "
                f"start-stop-daemon --start --background --make-pidfile --pidfile /run/airgap-registry/{name}.pid "
                f"--chuid docker-registry:docker-registry --output /var/log/airgap/{name}.log "
                f"--exec /usr/bin/docker-registry -- serve /etc/airgap/registry/{config}")
    wait = ("import socket, sys, time\n"
            "for _ in range(100):\n"
            "    try:\n"
            "        [socket.create_connection(('127.0.10.1', p), 1).close() for p in (5000, 5001)]\n"
            "        sys.exit(0)\n"
            "    except OSError:\n"
            "        time.sleep(0.2)\n"
            "sys.exit(1)\n")
    site.lab.exec("registry-1", ["python3", "-c", wait], check=True)


@pytest.fixture(scope="module")
def planted(site):
    """Every fault class at once, each on a named node; one check.yml run judges them.

    Returns the faulty report (with copies of its Markdown and HTML), the
    site.yml run that renewed the certificate, and the report after removal.
    """
    saved = {(n, p): _save(site, n, p) for n, p, _ in PLANTED_FILES}
    # Directories a planted file needs that the node does not have: removed afterwards.
    made = {(n, d) for n, p, _ in PLANTED_FILES for d in [_first_missing(site, n, Path(p).parent)] if d}
    saved_audit = _save(site, "registry-1", AUDIT_LOG)
    marker = json.loads(_save(site, "node-1", "/etc/airgap/bundle.json"))
    status_image = json.loads(site.sh("node-2", f"podman container inspect {STATUS} --format json").stdout)[0]["ImageName"]
    # The largest blob in the registry's storage is a layer of a signed image.
    blob = site.sh("registry-1", f"find {REGISTRY_STORAGE}/blobs -name data -type f -printf '%s %h\\n' "
                                 "| sort -n | tail -1 | cut -d' ' -f2").stdout.strip()
    assert blob, "no blob in the registry's storage"
    layer = "sha256:" + Path(blob).name
    crt = site.sh("registry-1", f"ls {PKI}/server-*.crt").stdout.split()[0]
    faulty = {}
    try:
        for node, path, content in PLANTED_FILES:
            site.sh(node, f"mkdir -p {Path(path).parent}")
            if content is None:
                site.sh(node, f"cat >> {path}", input=APPENDED[(node, path)])
            else:
                site.sh(node, f"cat > {path}", input=content)
        # route v4: a live route, in the one network namespace every lab node shares
        site.sh("node-1", "ip route add 52.0.0.0/8 dev lo")
        # foreign container: an image not in the bundle (notes 1.1, brought in as a
        # local OCI layout), let in by node-1's planted permissive policy.json
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(site.layout, arcname="intruder")
        site.sh("node-1", "rm -rf /root/intruder && tar -x -C /root", input=buf.getvalue())
        site.sh("node-1", "podman run --detach --name intruder --network host --entrypoint /bin/busybox "
                          "oci:/root/intruder:notes-1.1 sleep 600 >/dev/null")
        # privileged container: one more container in node-2's pilot-status pod, privileged
        site.sh("node-2", f"podman run --detach --pod pilot-status-pod-0 --name {STATUS}-extra --privileged "
                          f"--entrypoint /bin/busybox {status_image} sleep 600 >/dev/null")
        # stopped container
        site.sh("node-2", f"podman stop --time 1 {NOTES} >/dev/null")
        # missing blob: a layer's data moved out of the registry's storage
        site.sh("registry-1", f"mv {blob}/data /root/blob.data")
        # marker not naming the signed manifest
        site.sh("node-1", "cat > /etc/airgap/bundle.json",
                input=json.dumps(dict(marker, manifest_digest="sha256:" + "0" * 64), indent=2))
        # audit: one character of the first entry's action edited, format kept
        lines = saved_audit.splitlines(keepends=True)
        action = json.loads(lines[0])["action"]
        site.sh("registry-1", f"cat > {AUDIT_LOG}",
                input=lines[0].replace(json.dumps(action), json.dumps(action + "x"), 1) + "".join(lines[1:]))
        # certificate: re-signed for 10 days, served after a restart
        site.sh("registry-1", f"openssl x509 -req -sha256 -in {crt[:-4]}.csr -CA {PKI}/ca.crt -CAkey {PKI}/private/ca.key "
                              f"-CAserial {PKI}/private/ca.srl -copy_extensions copyall -days 10 -out {crt} 2>/dev/null")
        _restart_registry(site)

        t0 = time.monotonic()
        faulty = site.check()
        TIMINGS["check_planted"] = time.monotonic() - t0
        faulty["markdown"] = (site.report_dir / "airgap-check.md").read_text()
        faulty["html"] = (site.report_dir / "airgap-check.html").read_text()
        faulty["layer"] = layer
    finally:
        for (node, path), text in saved.items():
            _restore(site, node, path, text)
        for node, directory in made:
            site.sh(node, f"rm -rf {directory}")
        site.sh("node-1", "ip route del 52.0.0.0/8 dev lo", check=False)
        site.sh("node-1", "podman rm --force --time 0 intruder >/dev/null 2>&1; "
                          "podman image prune --all --force >/dev/null 2>&1; rm -rf /root/intruder", check=False)
        site.sh("node-2", f"podman rm --force --time 0 {STATUS}-extra >/dev/null", check=False)
        site.sh("node-2", f"podman start {NOTES} >/dev/null", check=False)
        site.sh("registry-1", f"mv /root/blob.data {blob}/data", check=False)
        site.sh("node-1", "cat > /etc/airgap/bundle.json", input=json.dumps(marker, indent=2, sort_keys=True) + "\n")
        site.sh("registry-1", f"cat > {AUDIT_LOG}", input=saved_audit)
    # The certificate is left to site.yml: the registry stage renews it when due.
    renew = site.site("1.0.0", "--tags", "registry")
    return faulty, renew, site.check()


def finding_keys(report: dict) -> set[tuple[str, str, str, str]]:
    return {(f["host"], f["check"], f["source"], f["value"]) for f in report["failures"]}


def test_planted_faults_each_reported_on_its_node_with_file_and_value(planted):
    report = planted[0]
    url = "https://127.0.10.1:5000/v2/"
    expected = {
        # DNS, route v6 (configured), policy.json, foreign container, marker: node-1
        ("node-1", "dns", "/etc/systemd/network/10-uplink.network", "8.8.8.8"),
        ("node-1", "routes", "/etc/systemd/network/10-uplink.network", "Destination=2001:4860::/32"),
        ("node-1", "image_policy", "/etc/containers/policy.json", '"default": [{"type": "insecureAcceptAnything"}]'),
        ("node-1", "workloads", "podman container inspect intruder", None),
        ("node-1", "marker", "/etc/airgap/bundle.json", "manifest_digest sha256:" + "0" * 64),
        # NTP, pip, hosts, registries.conf, privileged and stopped containers: node-2
        ("node-2", "ntp", "/etc/systemd/timesyncd.conf.d/time.conf", "time.google.com"),
        ("node-2", "packages", "/etc/pip.conf", "https://pypi.org/simple"),
        ("node-2", "hosts", "/etc/hosts", "52.94.76.10 registry.pilot.geheim.internal"),
        ("node-2", "registries", "/etc/containers/registries.conf", "docker.io/library -> docker.io/library"),
        ("node-2", "workloads", f"podman container inspect {STATUS}-extra", f"{STATUS}-extra privileged"),
        ("node-2", "workloads", f"podman container inspect {NOTES}", None),
        # ... and with its only application container stopped, podman stops the pod's infra container
        ("node-2", "workloads", None, "-infra exited"),
        # apt, proxy, containerd certs.d, missing blob, audit log, certificate: registry-1
        ("registry-1", "packages", "/etc/apt/sources.list.d/debian.list", "http://deb.debian.org/debian"),
        ("registry-1", "proxy", "/etc/environment", "http://proxy.example.com:3128"),
        ("registry-1", "registries", "/etc/containerd/certs.d/docker.io/hosts.toml", "https://registry-1.docker.io"),
        # a hosts.toml with a server and no [host] table: containerd 1.6 drops it and goes upstream
        ("registry-1", "registries", "/etc/containerd/certs.d/docker.io/hosts.toml", "(no [host] table)"),
        ("registry-1", "registry_content", None, planted[0]["layer"]),
        ("registry-1", "audit", None, None),
        ("registry-1", "certificate", "certificate of 127.0.10.1:5000", None),
        ("registry-1", "certificate", "certificate of 127.0.10.1:5001", None),
    }
    # route v4: a live route in the network namespace all lab nodes share, so
    # every node reports it (on real hosts each node has its own table).
    for host in HOSTS:
        expected.add((host, "routes", "ip -4 -j route show table all", "52.0.0.0/8 dev lo"))
    # Haven's "registry mirrors internal" is the registries check's judgement, reported again in its section.
    expected |= {(h, "haven_mirrors", src, v) for h, c, src, v in list(expected) if c == "registries"}
    got = finding_keys(report)
    unmatched = [e for e in expected if not any(_matches(e, g) for g in got)]
    assert not unmatched, f"not reported: {unmatched}\nreported: {sorted(got)}"
    extra = [g for g in got if not any(_matches(e, g) for e in expected)]
    assert not extra, f"reported but not planted: {extra}"
    # The findings name the line too, and label US providers.
    by_key = {(f["host"], f["check"], f["source"]): f for f in report["failures"]}
    assert by_key[("node-1", "dns", "/etc/systemd/network/10-uplink.network")]["line"] == 5
    assert "US provider: Google" in by_key[("node-1", "dns", "/etc/systemd/network/10-uplink.network")]["label"]
    assert by_key[("node-2", "hosts", "/etc/hosts")]["line"] is not None
    stopped = [f for f in report["failures"] if f["source"] == f"podman container inspect {NOTES}"]
    assert "stopped" in stopped[0]["reason"]
    blob = [f for f in report["failures"] if f["check"] == "registry_content"]
    assert blob[0]["source"].startswith(url) and blob[0]["source"].endswith("/blobs/" + planted[0]["layer"])


def _matches(expected, got) -> bool:
    return all(e is None or e == g or (i == 3 and e in g) for i, (e, g) in enumerate(zip(expected, got)))


def test_planted_faults_fail_the_run_and_nothing_else_fails(planted):
    report = planted[0]
    assert report["returncode"] != 0 and report["passed"] is False and report["verdict"] == "FAIL"
    failed_checks = {(r["host"], r["check"]) for r in report["results"] if r["status"] == "FAIL" and not r.get("expected")}
    assert failed_checks == {(f["host"], f["check"]) for f in report["failures"]}
    # The play's own output ends with the verdict and names node, check, file and value.
    output = " ".join(report["output"].split())  # the YAML callback folds long lines
    assert "FAIL node-2 ntp: /etc/systemd/timesyncd.conf.d/time.conf:2 time.google.com" in output
    assert output.rindex("FAIL node-2 ntp") > output.rindex("TASK [")


def test_report_reads_verdict_and_failures_first_and_prints_self_contained(planted):
    report = planted[0]
    md, page = report["markdown"], report["html"]
    assert md.startswith("# airgap check: FAIL\n")
    assert md.index("## Failures") < md.index("## Every check on every host") < md.index("## Evidence")
    for what in ("**Bundle**", "**Manifest**", "**Signers**", "**Audit head**"):
        assert md.index(what) < md.index("## Failures")
    assert report["bundle"]["manifest_digest"] in md
    assert page.startswith("<!DOCTYPE html>") and "@media print" in page
    assert page.index("Failures") < page.index("Every check on every host")
    # No external asset: no link, script, image or font is fetched.
    assert not re.search(r"<(link|script|img|iframe)\b|@import|url\(|src=|href=", page, re.I)


def test_certificate_under_30_days_is_renewed_by_site_yml(planted, site):
    faulty, renew, _after = planted
    cert = [f for f in faulty["failures"] if f["check"] == "certificate"]
    assert cert and all(re.search(r"expires in \d+ day\(s\), under 30", f["reason"]) for f in cert), cert
    assert renew.returncode == 0, renew.stdout[-5000:]
    assert recap(renew.stdout)["registry-1"]["changed"] >= 1
    crt = site.sh("registry-1", f"ls {PKI}/server-*.crt").stdout.split()[0]
    assert site.sh("registry-1", f"openssl x509 -noout -checkend {60 * 86400} -in {crt}", check=False).returncode == 0


def test_everything_passes_once_the_faults_are_removed(planted):
    assert_all_pass(planted[2])


# ----------------------------------------------------------------------------- 4: reboot

def test_workloads_come_back_after_a_node_reboot(site, planted):
    before = running_digests(site, "node-1")
    assert set(before) == {"pilot-status", "pilot-notes"}
    site.lab.restart("node-1")
    # A reboot: every process of the node is new (the init is PID 1 again)...
    assert site.sh("node-1", "cat /proc/1/cmdline | tr '\\0' ' '").stdout.startswith("/usr/bin/python3")
    deadline = time.monotonic() + 60
    while running_digests(site, "node-1") != before and time.monotonic() < deadline:
        time.sleep(0.5)
    # ... and podman-restart, enabled by the workloads role, started the workloads.
    assert running_digests(site, "node-1") == before
    assert_all_pass(site.check())


# ----------------------------------------------------------------------------- 5: upgrade

def test_upgrade_to_1_1_0_then_rollback_to_1_0_0_is_refused(site):
    t0 = time.monotonic()
    proc = site.site("1.1.0")
    TIMINGS["upgrade"] = time.monotonic() - t0
    print(f"\nsite.yml 1.0.0 -> 1.1.0: {TIMINGS['upgrade']:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:]
    want = manifest_digests(site, "1.1.0")
    old = manifest_digests(site, "1.0.0")
    apps = ("pilot/status", "pilot/notes")  # the pods' infra image (pilot/pause 1.0) is the same in both
    assert {want[a] for a in apps}.isdisjoint(old[a] for a in apps) and want["pilot/pause"] == old["pilot/pause"]
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
        assert set(running_digests(site, node).values()) == {want[a] for a in apps}
    print(f"\nsite.yml/check.yml timings on the 3-node lab: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def toolkit_version(site: Site) -> str:
    return site.sh("registry-1", "/opt/airgap/bin/airgap --version").stdout.strip()


def test_trojan_wheel_installs_nothing_then_a_released_toolkit_installs_and_runs(site):
    """The issue's scenario, through the bundle stage only (the rest of site.yml is not about the toolkit)."""
    assert toolkit_version(site) == "airgap 0.1.0"
    installed = "/opt/airgap/lib/python3*/site-packages/airgap/__init__.py"
    before = site.sh("registry-1", f"sha256sum {installed}").stdout

    proc = site.demo.stage(site.bundles["1.2.0-trojan"], capture=True, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:]
    text = " ".join(proc.stdout.split())
    # The bundle stage says which wheel and which statement: and keeps the toolkit.
    assert "files/wheels/airgap-0.1.0-py3-none-any.whl: no valid toolkit release lists it" in text, proc.stdout[-5000:]
    assert "the bundle carries no toolkit release statement (files/wheels/toolkit-release.json)" in text
    assert "keeps the installed toolkit" in text
    print("\nbundle stage, trojan bundle: " + text[text.index("registry-1 keeps"):][:700])
    assert toolkit_version(site) == "airgap 0.1.0"
    assert site.sh("registry-1", f"sha256sum {installed}").stdout == before
    assert "0.1.0+trojan" not in site.sh("registry-1", "grep -r 0.1.0+trojan /opt/airgap 2>/dev/null; true").stdout

    proc = site.demo.stage(site.bundles["1.3.0-released"], capture=True, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:]
    # Installed, and it is what verified the bundle on the staging host in this very stage.
    assert toolkit_version(site) == "airgap 0.1.0+released"


# ----------------------------------------------------------------------------- 6: containerd nodes

CTR_SPY = "/usr/local/sbin/ctr"  # before /usr/bin in PATH, where Ansible's modules look first


def test_containerd_nodes_hold_every_signed_image_and_pull_nothing_from_outside(site):
    """`demo.sh --runtime containerd`: the container hosts become containerd nodes, as a cluster's nodes are."""
    for node in sorted(CONTAINER_HOSTS):  # every ctr the rollout and check.yml run, recorded (argv, environment)
        site.sh(node, f"cat > {CTR_SPY} && chmod 0755 {CTR_SPY}", input=ctr_spy("/var/log/airgap-ctr.log"))
    proc = site.site("1.1.0", "-e", "airgap__runtime=containerd")
    assert proc.returncode == 0, proc.stdout[-5000:]
    report = site.demo.check("-e", "airgap__runtime=containerd", strict=False, capture=True)
    res = results(report)
    failed = {k: v["findings"] for k, v in res.items() if v["status"] == "FAIL" and not v.get("expected")}
    assert not failed and report["returncode"] == 0, json.dumps(failed, indent=1)[:5000]
    want = manifest_digests(site, "1.1.0")
    for node in sorted(CONTAINER_HOSTS):
        assert res[(node, "containerd")]["status"] == "PASS"
        assert res[(node, "containerd_probe")]["status"] == "PASS"
        listed = site.sh(node, "ctr -n k8s.io images ls -q").stdout.split()
        assert {ref.rsplit("@", 1)[1] for ref in listed if "@" in ref} >= set(want.values())
        # Every hosts.toml names the internal registry as server and as its one host.
        for toml in site.sh(node, "ls /etc/containerd/certs.d/*/hosts.toml").stdout.split():
            text = site.sh(node, f"cat {toml}").stdout
            assert re.search(r'^server = "https://127\.0\.10\.1:5000(/v2/[^"]*)?"$', text, re.M), (toml, text)
            assert len(re.findall(r"^\[host\.", text, re.M)) == 1 and "127.0.10.1:5000" in text
        # No pod runs on a containerd node: kubelet, not podman, runs them there.
        assert running_digests(site, node) == {}
        assert "sandbox_image = \"127.0.10.1:5000/" in site.sh(node, "cat /etc/containerd/config.toml").stdout
    # The probe of each node reached the internal registry (its access log) and nothing else.
    for node in sorted(CONTAINER_HOSTS):
        assert any("airgap-probe/manifests/" in e for e in res[(node, "containerd_probe")]["evidence"])
        assert "asked only 127.0.10.1:5000" in " ".join(res[(node, "containerd")]["evidence"])
    # A second run changes nothing.
    again = site.site("1.1.0", "-e", "airgap__runtime=containerd")
    assert {h: c["changed"] for h, c in recap(again.stdout).items()} == {h: 0 for h in HOSTS}, again.stdout[-6000:]
    # The pull credential is in the root-only hosts.toml files, and on no ctr command line or environment.
    for node in sorted(CONTAINER_HOSTS):
        secrets = set()
        for toml in site.sh(node, "ls /etc/containerd/certs.d/*/hosts.toml").stdout.split():
            assert site.sh(node, f"stat -c '%a %U' {toml}").stdout.split() == ["600", "root"], toml
            for token in re.findall(r'Authorization = "Basic ([^"]+)"', site.sh(node, f"cat {toml}").stdout):
                user, _, secret = base64.b64decode(token).decode().partition(":")
                assert user == "airgap-pull" and secret, toml
                secrets |= {token, secret}
        assert len(secrets) == 2, node  # one pull credential, in every file
        assert not secrets & set(site.sh(node, "cat /etc/containerd/config.toml").stdout.split('"'))
        log = site.sh(node, "cat /var/log/airgap-ctr.log").stdout
        pulls = [line for line in log.splitlines() if line.startswith("argv:") and " images pull " in line]
        assert any("airgap-probe" in line for line in pulls), log  # check.yml's probe
        assert sum("airgap-probe" not in line for line in pulls) >= len(want), log  # the rollout's pre-pull
        assert all("--user" not in line for line in pulls)
        assert not any(secret in log for secret in secrets), node
        site.sh(node, f"rm -f {CTR_SPY} /var/log/airgap-ctr.log")
