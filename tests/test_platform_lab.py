"""What the Haven-shaped rollout relies on, proven with the real engines on a lab.

One private lab (registry-1, node-1, node-2) and one internal registry with TLS
from a test CA and a pull credential (docker-registry, access log on):

* **podman kube play** (Debian 12's podman 4.3) runs the workload that
  ``airgap manifests render`` wrote from a signed bundle: every image, the
  infra (pause) image included, pulled from the internal registry by digest;
  ``--replace`` and ``--down`` make it idempotent.  It needs real cgroups (the
  lab mounts the host's v1 hierarchies, never the unified cgroup2 mount, and
  podman runs with the cgroupfs manager): with ``cgroups = "disabled"`` a pod
  cannot even start.
* **containerd 1.6 + runc** pull through ``certs.d/<upstream>/hosts.toml``
  whose ``server`` is the internal registry itself, by tag and by digest, into
  the ``k8s.io`` namespace, authenticated by the pull credential the
  ``hosts.toml`` files carry as a header (an anonymous pull is refused), so
  the rollout's pre-pull puts no secret on a command line.  A pull of an image the internal registry lacks
  fails there (its access log shows the request), and nothing else is tried.
  Kubespray's mirror-only shape (no ``server``) falls back to
  registry-1.docker.io, and containerd 1.6 ignores a ``server``-only file (no
  ``[host]`` table) and goes upstream too: both proven here, inside a
  loopback-only network namespace, so the fallback fails at name resolution
  and no packet leaves.
* Negative ``oom_score_adj`` (what CRI asks for pod sandboxes) is refused on
  this VM: containerd's CRI needs ``restrict_oom_score_adj = true``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap.lab.layout import NODE_PATH
from tests.fixtures.keys import make_policy
from tests.fixtures.lab import ctr_spy
from tests.helpers import REPO, airgap, write_spec

PILOT = REPO / "bundles" / "geheim-pilot"

pytestmark = pytest.mark.slow

REG = "127.0.10.1:5443"
USER, PASSWORD = "puller", "pull-only-pw"
CREATED = "2026-11-01T00:00:00Z"
CONTAINERD_ROOT = "/etc/containerd"
AIRGAP = str(REPO / ".venv/bin/airgap")

WORKLOAD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pilot-status
spec:
  replicas: 1
  selector:
    matchLabels: {app: pilot-status}
  template:
    metadata:
      labels: {app: pilot-status}
    spec:
      containers:
        - name: status
          image: {image}
          volumeMounts: [{name: settings, mountPath: /etc/pilot}]
      volumes:
        - name: settings
          configMap: {name: pilot-status}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: pilot-status
data:
  status.conf: "listen_port=8080\\n"
"""

CONTAINERS_CONF = """\
[containers]
cgroups = "{cgroups}"
default_ulimits = []
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
infra_image = "{infra}"
"""

CONTAINERD_CONFIG = """\
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # This VM refuses a negative oom_score_adj (see test_negative_oom_score_adj_is_refused_here).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{root}/certs.d"
"""


def hosts_toml(server: str, ca: str, *, with_server: bool = True, with_host: bool = True, auth: bool = True) -> str:
    """The shape the rollout writes: the internal registry as server and as the one host, the pull
    credential as an Authorization header of both (roles/runtime/templates/hosts.toml.j2)."""
    header = f'Authorization = "Basic {base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}"\n' if auth else ""
    out = ""
    if with_server:
        out += f'server = "{server}"\noverride_path = true\nca = "{ca}"\n'
        out += f"[header]\n  {header}\n" if header else "\n"
    if with_host:
        out += f'[host."{server}"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n  ca = "{ca}"\n'
        out += f'  [host."{server}".header]\n    {header}' if header else ""
    return out


@dataclass
class Site:
    lab: object
    ca: Path
    status_digest: str
    status_internal: str  # REG/<internal repo>
    upstream: str  # the seeded registry's host:port, mirrored by hosts.toml
    pause_ref: str  # REG/lab/pause@sha256:...
    rendered: Path


def x(lab, node: str, argv, *, input=None, timeout: float = 180, env=None):
    r = lab.exec(node, argv, input=input, timeout=timeout, env=env)
    assert r.returncode == 0, (node, argv, r.stdout[-2000:], r.stderr[-2000:])
    return r


def sh(lab, node: str, script: str, **kw):
    return x(lab, node, ["sh", "-c", script], **kw)


def put(lab, node: str, path: str, data: str | bytes, mode: str = "0644") -> None:
    x(lab, node, ["sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}'], input=data)


def _pki(d: Path) -> None:
    def run(*argv):
        subprocess.run(argv, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=airgap test internal CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "reg.key", "-out", "reg.csr", "-subj", "/CN=127.0.10.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.10.1\n")
    run("openssl", "x509", "-req", "-in", "reg.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "reg.crt", "-days", "2", "-extfile", "ext")


def _start_registry(lab, pki: Path) -> None:
    import bcrypt

    put(lab, "registry-1", "/etc/airgap-test/reg.crt", (pki / "reg.crt").read_text())
    put(lab, "registry-1", "/etc/airgap-test/reg.key", (pki / "reg.key").read_text(), "0600")
    put(lab, "registry-1", "/etc/airgap-test/htpasswd",
        f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    put(lab, "registry-1", "/etc/airgap-test/registry.yml", textwrap.dedent(f"""\
        version: 0.1
        log:
          level: info
          accesslog:
            disabled: false
        storage:
          filesystem:
            rootdirectory: /var/lib/airgap-test-registry
        http:
          addr: {REG}
          tls:
            certificate: /etc/airgap-test/reg.crt
            key: /etc/airgap-test/reg.key
        auth:
          htpasswd:
            realm: airgap-test
            path: /etc/airgap-test/htpasswd
        """))
    sh(lab, "registry-1", "(docker-registry serve /etc/airgap-test/registry.yml </dev/null "
                          ">/var/log/airgap-test-registry.log 2>&1 &)")
    probe = ("import ssl, urllib.request, urllib.error\n"
             f"ctx = ssl.create_default_context(cafile='{pki / 'ca.crt'}')\n"
             "try:\n"
             f"    urllib.request.urlopen('https://{REG}/v2/', context=ctx, timeout=2)\n"
             "except urllib.error.HTTPError as e:\n"
             "    assert e.code == 401, e.code\n")
    deadline = time.monotonic() + 20
    while lab.run_in_netns(["python3", "-c", probe]).returncode != 0:
        assert time.monotonic() < deadline, "the lab registry did not come up"
        time.sleep(0.2)


def access_log(lab) -> str:
    return x(lab, "registry-1", ["cat", "/var/log/airgap-test-registry.log"]).stdout


def _make_images():
    spec = importlib.util.spec_from_file_location("make_images", PILOT / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Upstream:
    """The connected side's registry holding the GEHEIM pilot sample images (busybox httpd: they run)."""

    host: str
    digests: dict[str, str]  # "pilot/status" -> manifest digest

    def ref(self, repo: str) -> str:
        return f"{self.host}/{repo}:1.0"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    from tests.fixtures.registry import start_registry

    base = tmp_path_factory.mktemp("upstream")
    reg = start_registry(base / "registry")
    try:
        make_images = _make_images()
        digests = make_images.build_layout(base / "layout")
        make_images.push(base / "layout", reg.host)
        yield Upstream(reg.host, {f"pilot/{tag.split('-')[0]}": digests[tag] for tag in digests if tag.endswith("-1.0")})
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory, upstream, keyring) -> Site:
    from airgap.lab import Lab
    from tests.fixtures.lab import _require_lab_host

    _require_lab_host()
    seeded_registry = upstream
    base = tmp_path_factory.mktemp("platform")
    lab = Lab(base / "work", name=f"airgap-lab-h{os.getpid()}")
    lab.up(nodes=3)
    try:
        pki = base / "pki"
        pki.mkdir()
        _pki(pki)
        _start_registry(lab, pki)
        (base / "pw").write_text(PASSWORD + "\n")

        # Connected side: a signed bundle with the status image and its workload.
        spec_dir = base / "spec"
        (spec_dir / "k8s").mkdir(parents=True)
        (spec_dir / "k8s/status.yaml").write_text(WORKLOAD.replace("{image}", seeded_registry.ref("pilot/status")))
        spec = write_spec(spec_dir, images=[seeded_registry.ref("pilot/status"), seeded_registry.ref("pilot/pause")], files=[],
                          extra={"workloads": [{"name": "pilot-status", "src": "k8s/status.yaml"}]})
        bundle = base / "pilot.tar"
        r = airgap("build", spec, "-o", bundle, "--key", keyring.key_path("builder-1"), "--plain-http",
                   "--created", CREATED, "--quiet")
        assert r.code == 0, r.err
        assert airgap("sign", bundle, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
        trust = base / "trust.json"
        trust.write_bytes(make_policy(keyring).to_bytes())

        # Isolated side: import into the lab registry (from inside the lab's network), render.
        r = lab.run_in_netns([AIRGAP, "import", bundle, "--trust", trust, "--registry", REG, "--ca-file",
                              pki / "ca.crt", "--username", USER, "--password-file", base / "pw",
                              "--state", base / "state", "--quiet"], timeout=300)
        assert r.returncode == 0, r.stderr
        rendered = base / "rendered"
        r = airgap("manifests", "render", bundle, "--trust", trust, "--registry", REG, "-o", rendered)
        assert r.code == 0, r.err

        # The infra (pause) image came in the same bundle.
        prefix = f"{REG}/{seeded_registry.host.replace(':', '_')}/pilot"
        pause = f"{prefix}/pause@{seeded_registry.digests['pilot/pause']}"
        status = seeded_registry.digests["pilot/status"]
        yield Site(lab, pki / "ca.crt", status, f"{prefix}/status", seeded_registry.host, pause, rendered)
    finally:
        lab.down()


# --------------------------------------------------------------------------- podman kube play


def _podman_node(site: Site, cgroups: str = "enabled") -> dict[str, str]:
    lab = site.lab
    put(lab, "node-1", "/etc/containers/certs.d/127.0.10.1:5443/ca.crt", site.ca.read_text())
    put(lab, "node-1", "/etc/airgap-test/auth.json", json.dumps(
        {"auths": {REG: {"auth": __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}), "0600")
    conf = f"/etc/airgap-test/containers-{cgroups}.conf"
    put(lab, "node-1", conf, CONTAINERS_CONF.format(cgroups=cgroups, infra=site.pause_ref))
    put(lab, "node-1", "/etc/airgap-test/pilot-status.yaml", (site.rendered / "pilot-status.yaml").read_text())
    env = {"CONTAINERS_CONF": conf}
    # podman 4.3 pulls the infra image without kube play's --authfile: it is pulled first, by digest.
    x(lab, "node-1", ["podman", "pull", "--quiet", "--authfile", "/etc/airgap-test/auth.json", site.pause_ref], env=env)
    return env


APP = "pilot-status-pod-0-status"
PLAY = ["podman", "kube", "play", "--authfile", "/etc/airgap-test/auth.json", "--network", "host",
        "/etc/airgap-test/pilot-status.yaml"]


def test_kube_play_cannot_run_a_pod_with_cgroups_disabled(site):
    env = _podman_node(site, "disabled")
    r = site.lab.exec("node-1", PLAY, env=env, timeout=180)
    try:
        assert r.returncode != 0 and "cgroup is not set" in r.stderr, (r.stdout, r.stderr)
    finally:
        site.lab.exec("node-1", ["podman", "pod", "rm", "--all", "--force"], env=env)


def test_rendered_workload_runs_with_kube_play_by_internal_digest(site):
    lab = site.lab
    env = _podman_node(site)
    ref = f"{site.status_internal}@{site.status_digest}"
    assert f"image: {ref}" in (site.rendered / "pilot-status.yaml").read_text()
    try:
        x(lab, "node-1", PLAY, env=env)
        ps = json.loads(x(lab, "node-1", ["podman", "ps", "--format", "json"], env=env).stdout)
        images = {c["Names"][0]: c["Image"] for c in ps}
        assert images[APP] == ref, images  # kube play names a Deployment's pod <name>-pod-<replica>
        infra = [img for name, img in images.items() if name.endswith("-infra")]
        assert infra == [site.pause_ref], images
        page = lab.run_in_netns(["python3", "-c",
                                 "import urllib.request as u; print(u.urlopen('http://127.0.10.2:8080/', timeout=5).status)"])
        assert page.stdout.strip() == "200", page.stderr
        conf = x(lab, "node-1", ["podman", "exec", APP, "cat", "/etc/pilot/status.conf"], env=env)
        assert conf.stdout == "listen_port=8080\n"
        cgroup = x(lab, "node-1", ["podman", "exec", APP, "cat", "/proc/self/cgroup"], env=env)
        assert "libpod_parent" in cgroup.stdout  # a real cgroup, cgroupfs manager, v1 hierarchy
        # Idempotent: --replace converges on the same pod, same digests.
        x(lab, "node-1", [*PLAY, "--replace"], env=env)
        ps = json.loads(x(lab, "node-1", ["podman", "ps", "--format", "json"], env=env).stdout)
        assert sorted(c["Image"] for c in ps) == sorted([ref, site.pause_ref])
    finally:
        x(lab, "node-1", ["podman", "kube", "play", "--down", PLAY[-1]], env=env)
    assert x(lab, "node-1", ["podman", "pod", "ps", "-q"], env=env).stdout.strip() == ""


# --------------------------------------------------------------------------- containerd


@pytest.fixture(scope="module")
def containerd(site):
    """containerd + runc on node-2, configured as the rollout configures a containerd node."""
    lab = site.lab
    ca = f"{CONTAINERD_ROOT}/certs.d/ca.crt"
    put(lab, "node-2", ca, site.ca.read_text())
    mirrored = site.upstream.replace(":", "_")
    for namespace, server in ((f"{mirrored}_" if ":" in site.upstream else site.upstream,
                               f"https://{REG}/v2/{mirrored}"),
                              ("docker.io", f"https://{REG}/v2/docker.io"),
                              ("127.0.10.1_5443_", f"https://{REG}/v2")):
        put(lab, "node-2", f"{CONTAINERD_ROOT}/certs.d/{namespace}/hosts.toml", hosts_toml(server, ca), "0600")
    put(lab, "node-2", f"{CONTAINERD_ROOT}/config.toml",
        CONTAINERD_CONFIG.format(sandbox=site.pause_ref, root=CONTAINERD_ROOT))
    sh(lab, "node-2", "containerd --config /etc/containerd/config.toml </dev/null >/var/log/containerd.log 2>&1 & "
                      "echo $! > /run/airgap-test-containerd.pid")
    deadline = time.monotonic() + 20
    while lab.exec("node-2", ["ctr", "version"]).returncode != 0:
        assert time.monotonic() < deadline, lab.exec("node-2", ["cat", "/var/log/containerd.log"]).stdout
        time.sleep(0.2)
    yield lab
    lab.exec("node-2", ["sh", "-c", "kill $(cat /run/airgap-test-containerd.pid)"])


def pull(lab, ref: str, hosts_dir: str = f"{CONTAINERD_ROOT}/certs.d", namespace: str = "k8s.io"):
    """As the rollout pulls: no ``--user``, the hosts.toml files carry the credential."""
    return lab.exec("node-2", ["ctr", "-n", namespace, "images", "pull", "--hosts-dir", hosts_dir, ref], timeout=180)


def test_containerd_pulls_by_tag_and_by_digest_through_the_internal_server(site, containerd):
    by_tag = pull(containerd, f"{site.upstream}/pilot/status:1.0")  # the upstream's name, served internally
    assert by_tag.returncode == 0, by_tag.stderr
    by_digest = pull(containerd, f"{site.status_internal}@{site.status_digest}")  # what the rollout pre-pulls
    assert by_digest.returncode == 0, by_digest.stderr
    listed = x(containerd, "node-2", ["ctr", "-n", "k8s.io", "images", "ls"]).stdout
    assert f"{site.status_internal}@{site.status_digest}" in listed and site.status_digest in listed
    assert "registry-1.docker.io" not in by_tag.stderr + by_digest.stderr
    log = access_log(containerd)
    assert f"/v2/{site.upstream.replace(':', '_')}/pilot/status/manifests/1.0" in log  # the upstream namespace, mapped
    run = x(containerd, "node-2", ["ctr", "-n", "k8s.io", "run", "--rm", f"{site.status_internal}@{site.status_digest}",
                                   "airgap-t1", "/bin/busybox", "echo", "runc-ok"])
    assert run.stdout.strip() == "runc-ok"


def test_the_hosts_toml_header_is_what_authenticates_the_pull(site, containerd):
    """Without the header the registry refuses the same pull: the credential really travels in hosts.toml."""
    mirrored = site.upstream.replace(":", "_")
    ca = f"{CONTAINERD_ROOT}/certs.d/ca.crt"
    anonymous = "/etc/airgap-test/anonymous"
    put(containerd, "node-2", f"{anonymous}/{mirrored}_/hosts.toml",
        hosts_toml(f"https://{REG}/v2/{mirrored}", ca, auth=False))
    ref = f"{site.upstream}/pilot/status:1.0"
    r = pull(containerd, ref, anonymous, namespace="airgap-anonymous")
    assert r.returncode != 0 and "401 Unauthorized" in r.stderr, r.stderr
    r = pull(containerd, ref, namespace="airgap-anonymous")
    assert r.returncode == 0, r.stderr




def test_the_pre_pull_module_puts_no_credential_on_a_command_line(site, containerd, tmp_path):
    """airgap_pods on a containerd node pulls every signed image by digest, and neither ctr's argv
    (world-readable in /proc) nor its environment holds the pull credential."""
    lab = containerd
    put(lab, "node-2", "/etc/airgap-test/spy/ctr", ctr_spy("/var/log/airgap-test-ctr.log"), "0755")
    ref = f"{site.status_internal}@{site.status_digest}"
    args = {"dir": "/etc/airgap-test/workloads",
            "containerd": {"images": [ref, site.pause_ref], "hosts_dir": f"{CONTAINERD_ROOT}/certs.d",
                           "address": "/run/containerd/containerd.sock", "namespace": "airgap-spy"}}
    # As the rollout runs it: from the controller over ssh (the node cannot see the
    # controller's checkout, which may live under a /tmp the node does not share).
    play = tmp_path / "pre-pull.yml"
    play.write_text(json.dumps([{"hosts": "node-2", "gather_facts": False,
                                 "environment": {"PATH": "/etc/airgap-test/spy:" + NODE_PATH},
                                 "tasks": [{"name": "pre-pull", "airgap_pods": args, "register": "out"},
                                           {"name": "result", "delegate_to": "localhost",
                                            "ansible.builtin.copy": {"content": "{{ out | to_json }}",
                                                                     "dest": str(tmp_path / "out.json")}}]}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}

    def module():
        r = lab.run_in_netns([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(lab.workdir / "hosts.yml"), str(play)],
                             env=env, timeout=300, cwd=REPO)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
        return json.loads((tmp_path / "out.json").read_text())

    out = module()
    assert out["changed"] is True and out["pulled"] == [ref, site.pause_ref], out
    listed = x(lab, "node-2", ["ctr", "-n", "airgap-spy", "images", "ls", "-q"]).stdout.split()
    assert {ref, site.pause_ref} <= set(listed)
    log = x(lab, "node-2", ["cat", "/var/log/airgap-test-ctr.log"]).stdout
    pulls = [line for line in log.splitlines() if line.startswith("argv:") and " images pull " in line]
    assert len(pulls) == 2 and all("--hosts-dir" in line and "--user" not in line for line in pulls), log
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in log and token not in log
    # Converged: nothing pulled again.
    again = module()
    assert again["changed"] is False and again["pulled"] == [], again


def test_a_missing_image_fails_at_the_internal_registry_and_goes_nowhere_else(containerd):
    r = pull(containerd, "docker.io/library/nginx:1.25")
    assert r.returncode != 0 and "not found" in r.stderr, r.stderr
    assert "registry-1.docker.io" not in r.stderr
    tried = {line.split('host="', 1)[1].split('"', 1)[0] for line in r.stderr.splitlines() if 'host="' in line}
    assert tried == {REG}, r.stderr
    assert "HEAD /v2/docker.io/library/nginx/manifests/1.25" in access_log(containerd)


def _pull_through(lab, shape: str, tag: str, **kw):
    """Pull a docker.io image the internal registry lacks through a hosts.toml of another *shape*."""
    ca = f"{CONTAINERD_ROOT}/certs.d/ca.crt"
    put(lab, "node-2", f"/etc/airgap-test/{shape}/docker.io/hosts.toml", hosts_toml(f"https://{REG}/v2/docker.io", ca, **kw))
    r = pull(lab, f"docker.io/library/nginx:{tag}", f"/etc/airgap-test/{shape}")
    assert r.returncode != 0
    assert "host=registry-1.docker.io" in r.stderr, r.stderr
    return r


def test_kubesprays_mirror_only_hosts_toml_falls_back_to_docker_hub(containerd):
    r = _pull_through(containerd, "mirror-only", "1.26", with_server=False)
    # The internal registry answered 404, then containerd went for the upstream: only the
    # lab's loopback-only network stopped it (no resolver, no route).
    assert 'host="127.0.10.1:5443"' in r.stderr
    assert 'Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.26"' in r.stderr


def test_containerd_1_6_drops_a_server_only_hosts_toml_and_goes_upstream(containerd):
    r = _pull_through(containerd, "server-only", "1.27", with_host=False)
    assert "failed to decode hosts.toml" in r.stderr and "invalid `host` tree" in r.stderr, r.stderr


def test_negative_oom_score_adj_is_refused_here(containerd):
    """CRI asks runc for oom_score_adj -998 on pod sandboxes; this VM refuses any negative value."""
    lab = containerd
    sh(lab, "node-2", "rm -rf /root/ob && mkdir -p /root/ob/rootfs/bin && cp /bin/busybox /root/ob/rootfs/bin/ "
                      "&& cd /root/ob && runc spec")

    def run(adj: int, name: str):
        spec = json.loads(x(lab, "node-2", ["cat", "/root/ob/config.json"]).stdout)
        spec["process"].update(terminal=False, args=["/bin/busybox", "true"], oomScoreAdj=adj)
        put(lab, "node-2", "/root/ob/config.json", json.dumps(spec))
        return lab.exec("node-2", ["sh", "-c", f"cd /root/ob && runc --root /run/airgap-test-runc run {name}"],
                        timeout=60)

    refused = run(-998, "oom-negative")
    assert refused.returncode != 0 and "oom_score_adj" in refused.stderr, refused.stderr
    assert run(0, "oom-zero").returncode == 0
    dump = x(lab, "node-2", ["containerd", "--config", "/etc/containerd/config.toml", "config", "dump"]).stdout
    assert "restrict_oom_score_adj = true" in dump


def test_the_sandbox_image_is_internal(site, containerd):
    dump = x(containerd, "node-2", ["containerd", "--config", "/etc/containerd/config.toml", "config", "dump"]).stdout
    assert f'sandbox_image = "{site.pause_ref}"' in dump
    r = pull(containerd, site.pause_ref)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- OS packages from the bundle


def _upstream_apt(directory: Path, names: tuple[str, ...]) -> tuple[Path, str]:
    """A connected-side apt repository of *names* from apt's cache, and the host's dpkg status without them."""
    directory.mkdir(parents=True)
    for name in names:
        debs = list(Path("/var/cache/apt/archives").glob(f"{name}_*.deb"))  # scripts/setup.sh keeps them there
        assert debs, f"no {name} .deb in apt's cache: run scripts/setup.sh"
        for deb in debs:
            shutil.copyfile(deb, directory / deb.name)
    index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=directory, check=True, capture_output=True)
    (directory / "Packages").write_bytes(index.stdout)
    keep = [p for p in Path("/var/lib/dpkg/status").read_text().split("\n\n")
            if p.strip() and p.split("\n", 1)[0].removeprefix("Package: ") not in names]
    return directory, "\n\n".join(keep) + "\n"


def test_a_node_gets_its_packages_from_the_bundle_with_no_network(site, keyring, tmp_path):
    lab, names = site.lab, ("containerd", "runc")
    repo, baseline = _upstream_apt(tmp_path / "upstream", names)
    spec_dir = tmp_path / "spec"
    (spec_dir / "apt").mkdir(parents=True)
    (spec_dir / "apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    (spec_dir / "apt/target.status").write_text(baseline)
    spec = write_spec(spec_dir, images=[], files=[], extra={"packages": {
        "release": "bookworm", "sources": "apt/sources.list", "baseline": "apt/target.status", "names": list(names)}})
    bundle = tmp_path / "packages.tar"
    r = airgap("build", spec, "-o", bundle, "--key", keyring.key_path("builder-1"), "--created", CREATED, "--quiet")
    assert r.code == 0, r.err
    assert airgap("sign", bundle, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    trust = tmp_path / "trust.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    # Verified and unpacked on the isolated side, where the node can read it.
    files = Path(f"/srv/airgap-test-{os.getpid()}")
    try:
        r = lab.run_in_netns([AIRGAP, "import", bundle, "--trust", trust, "--registry", REG, "--state",
                              tmp_path / "state", "--files-dir", files, "--quiet"], timeout=300)
        assert r.returncode == 0, r.stderr
        packages = files / "current/packages"
        # The node loses the packages, in its own overlay only.
        sh(lab, "registry-1", "dpkg --purge --force-depends containerd runc >/dev/null 2>&1")
        assert lab.exec("registry-1", ["sh", "-c", "command -v containerd runc"]).returncode != 0
        assert subprocess.run(["dpkg", "-s", "containerd"], capture_output=True).returncode == 0  # the host keeps them
        # apt, with the bundle's repository as its only source, inside the loopback-only network.
        assert lab.exec("registry-1", ["ip", "-4", "route", "show"]).stdout.strip() == ""
        sh(lab, "registry-1", f"rm -f /etc/apt/sources.list.d/*; "
                              f"echo 'deb [trusted=yes] file:{packages} ./' > /etc/apt/sources.list")
        update = sh(lab, "registry-1", "apt-get update 2>&1")
        sources = [line for line in update.stdout.splitlines() if line.startswith(("Get:", "Hit:", "Ign:", "Err:"))]
        assert sources and all(f"file:{packages}" in line for line in sources), update.stdout
        install = sh(lab, "registry-1", "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                                        "containerd runc 2>&1", timeout=300)
        assert "Setting up containerd" in install.stdout and "Setting up runc" in install.stdout, install.stdout
        version = x(lab, "registry-1", ["containerd", "--version"]).stdout
        assert "1.6." in version
        status = x(lab, "registry-1", ["dpkg-query", "-W", "-f", "${Package} ${Status}\n", "containerd", "runc"]).stdout
        assert status.splitlines() == ["containerd install ok installed", "runc install ok installed"]
    finally:
        shutil.rmtree(files, ignore_errors=True)
