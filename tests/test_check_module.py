"""The check modules' logic, on file trees: each collector, the enclave's judge,
the runtime rules, the audit anchor and the officer's report.

The lab tests (test_rollout.py) prove the same checks on real hosts; these
prove each rule, fast, including the cases a lab cannot stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import module_utils

ROOT = Path(__file__).resolve().parent.parent
MODULE_UTILS = ROOT / "playbooks" / "module_utils"
common = module_utils("airgap_check_common")
network = module_utils("airgap_check_network")
sources = module_utils("airgap_check_sources")
runtime = module_utils("airgap_check_runtime")
workloads = module_utils("airgap_check_workloads")
audit = module_utils("airgap_check_audit")
report = module_utils("airgap_check_report")

INTERNAL = "registry.pilot.geheim.internal:5000"
LABELS = common.Labels([
    {"pattern": "8.8.8.0/24", "provider": "Google", "provider_kind": "US hyperscaler", "jurisdiction": "US"},
    {"pattern": "google.com", "provider": "Google", "provider_kind": "US hyperscaler", "jurisdiction": "US"},
    {"pattern": "deb.debian.org", "provider": "Debian mirror network", "jurisdiction": "external"},
    {"pattern": "docker.io", "provider": "Docker, Inc.", "jurisdiction": "US"},
])
SPEC = {
    "ranges": ["10.42.10.0/24", "fd42:10::/48"],
    "domains": ["pilot.geheim.internal"],
    "names": ["ntp-backup.example.nl"],
    "services": {"dns": ["10.42.10.2"], "ntp": ["10.42.10.4", "ntp-backup.example.nl"], "registry": [INTERNAL],
                 "packages": ["http://apt.pilot.geheim.internal/debian"], "proxy": []},
}


@pytest.fixture
def enclave():
    return common.Enclave(SPEC, LABELS)


def tree(root: Path, files: dict[str, str]) -> common.Files:
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return common.Files(str(root))


def findings(res) -> list[tuple[str, int | None, str]]:
    return [(f["source"], f["line"], f["value"]) for f in res.to_dict()["findings"]]


# --------------------------------------------------------------------------- the matcher


def test_module_utils_matcher_is_the_toolkits_and_runs_without_it():
    shipped = MODULE_UTILS / "airgap_endpoints.py"
    assert shipped.resolve() == (ROOT / "airgap" / "_internal" / "endpoints.py").resolve()
    # Ansible ships it alone to nodes without the toolkit: it imports nothing of airgap.
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]);"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
            "assert not [k for k in sys.modules if k == 'airgap' or k.startswith('airgap.')];"
            "print(m.EndpointSet([('example.com', 1)]).lookup('a.example.com'))")
    # The node's own Python, without site-packages (no toolkit, no Ansible).
    proc = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code, str(shipped)], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "('example.com', 1)"


# --------------------------------------------------------------------------- the enclave's judge


@pytest.mark.parametrize("endpoint, inside", [
    ("10.42.10.7", True),
    ("http://[fd42:10::53]:53/", True),
    ("registry.pilot.geheim.internal:5000", True),   # a domain covers its subdomains
    ("a.b.pilot.geheim.internal", True),
    ("pilot.geheim.internal", True),
    ("pilot.geheim.internal.evil", False),
    ("notpilot.geheim.internal", False),
    ("127.0.0.53", True),                             # local to the node
    ("localhost", True),
    ("fe80::1%eth0", True),                           # the node's own link
    ("169.254.169.254", False),                       # the cloud metadata service is not local
    ("10.42.11.1", False),
    ("8.8.8.8", False),
    ("deb.debian.org", False),
])
def test_inside_the_enclave(enclave, endpoint, inside):
    assert enclave.inside(endpoint)[0] is inside


def test_services_must_be_declared_and_none_declared_means_none_allowed(enclave):
    assert enclave.service("dns", "10.42.10.2")[0]
    ok, why = enclave.service("dns", "10.42.10.3")
    assert not ok and "inside the enclave" in why and "not one of its resolvers" in why
    ok, why = enclave.service("dns", "8.8.8.8")
    assert not ok and why.startswith("outside the enclave")
    assert enclave.service("ntp", "ntp-backup.example.nl")[0]
    assert enclave.service("packages", "http://apt.pilot.geheim.internal/debian/dists")[0]
    ok, why = enclave.service("proxy", "http://proxy.pilot.geheim.internal:3128")
    assert not ok and "declares no proxies" in why
    # The port counts when the enclave declares one.
    assert enclave.service("registry", INTERNAL)[0]
    assert not enclave.service("registry", "registry.pilot.geheim.internal:5002")[0]


def test_findings_carry_the_sovereignty_label(enclave):
    res = common.Result("dns")
    enclave.judge(res, "/etc/resolv.conf", 3, "8.8.8.8", "dns")
    enclave.judge(res, "/etc/resolv.conf", 4, "9.9.9.9", "dns")
    f = res.to_dict()["findings"]
    assert f[0]["label"] == "US provider: Google (US hyperscaler)" and f[0]["line"] == 3
    assert "label" not in f[1]  # outside, and not a listed provider: fails all the same


def test_invalid_enclave_description_is_reported():
    bad = common.Enclave({"ranges": ["10.42.10.1/24", "nonsense"], "domains": ["a..b"]})
    assert len(bad.problems) == 3


# --------------------------------------------------------------------------- network


def test_dns_everywhere_a_resolver_is_configured(tmp_path, enclave):
    files = tree(tmp_path, {
        "/etc/resolv.conf": "# x\nnameserver 10.42.10.2\nnameserver 8.8.8.8 ; comment\n",
        "/etc/systemd/resolved.conf.d/x.conf": "[Resolve]\nDNS=10.42.10.2 1.1.1.1#cloudflare-dns.com\nFallbackDNS=9.9.9.9\n",
        "/etc/systemd/network/10-eth.network": "[Network]\nDNS=8.8.4.4\n",
        "/etc/network/interfaces": "iface eth0 inet static\n  dns-nameservers 10.42.10.2 208.67.222.222\n",
        "/etc/NetworkManager/system-connections/w.nmconnection": "[ipv4]\ndns=8.8.8.8;10.42.10.2;\n",
    })
    res = network.check_dns(files, enclave)
    assert findings(res) == [
        ("/etc/resolv.conf", 3, "8.8.8.8"),
        ("/etc/systemd/resolved.conf.d/x.conf", 2, "1.1.1.1"),
        ("/etc/systemd/resolved.conf.d/x.conf", 3, "9.9.9.9"),
        ("/etc/systemd/network/10-eth.network", 2, "8.8.4.4"),
        ("/etc/network/interfaces", 2, "208.67.222.222"),
        ("/etc/NetworkManager/system-connections/w.nmconnection", 2, "8.8.8.8"),
    ]


def test_ntp_chrony_timesyncd_ntpd(tmp_path, enclave):
    files = tree(tmp_path, {
        "/etc/chrony/chrony.conf": "pool 2.debian.pool.ntp.org iburst\nserver 10.42.10.4 iburst\n",
        "/etc/chrony/sources.d/x.sources": "server time.google.com\n",
        "/etc/systemd/timesyncd.conf": "[Time]\n#NTP=time.windows.com\nNTP=10.42.10.4\nFallbackNTP=time.aws.com\n",
        "/etc/ntpsec/ntp.conf": "server ntp-backup.example.nl\n",
    })
    assert findings(network.check_ntp(files, enclave)) == [
        ("/etc/chrony/chrony.conf", 1, "2.debian.pool.ntp.org"),
        ("/etc/chrony/sources.d/x.sources", 1, "time.google.com"),
        ("/etc/systemd/timesyncd.conf", 4, "time.aws.com"),
    ]


def test_hosts_entries_must_point_inside(tmp_path, enclave):
    files = tree(tmp_path, {"/etc/hosts": textwrap.dedent("""\
        127.0.0.1 localhost
        ::1 localhost ip6-localhost
        ff02::1 ip6-allnodes
        10.42.10.11 registry.pilot.geheim.internal
        52.94.76.10 registry.pilot.geheim.internal   # the fault
        """)})
    assert findings(network.check_hosts(files, enclave)) == [
        ("/etc/hosts", 5, "52.94.76.10 registry.pilot.geheim.internal")]


@pytest.mark.parametrize("dst, gateway, ok", [
    ("default", None, False),
    ("0.0.0.0/0", "10.42.10.1", False),
    ("52.0.0.0/8", None, False),
    ("2001:4860::/32", None, False),
    ("10.42.10.0/25", None, True),
    ("10.42.10.0/25", "192.0.2.1", False),
    ("fd42:10:0:1::/64", None, True),
    ("127.0.0.0/8", None, True),
    ("fe80::/64", None, True),
    ("10.42.0.0/16", None, False),  # wider than the enclave
])
def test_route_judge(enclave, dst, gateway, ok):
    assert network.judge_route(enclave, dst, gateway)[0] is ok


def test_live_and_configured_routes(tmp_path, enclave):
    files = tree(tmp_path, {
        "/etc/systemd/network/10-up.network": "[Network]\nGateway=192.0.2.1\n[Route]\nDestination=2001:4860::/32\n"
                                              "[Route]\nDestination=10.42.10.128/25\n",
        "/etc/network/interfaces.d/x": "iface eth0 inet static\n  up ip route add 52.0.0.0/8 via 10.42.10.1\n",
    })
    tables = {
        "-4": [{"type": "local", "dst": "127.0.0.1", "table": "local"}, {"dst": "10.42.10.0/24", "dev": "eth0"},
               {"dst": "default", "gateway": "10.42.10.1", "dev": "eth0"}],
        "-6": [{"type": "multicast", "dst": "ff00::/8", "table": "local"}, {"dst": "fe80::/64", "dev": "eth0"}],
    }

    def run(argv):
        if argv[:2] == ["ip", "route"]:
            return 2, "", "RTNETLINK answers: Network is unreachable"
        return 0, json.dumps(tables[argv[1]]), ""

    got = findings(network.check_routes(run, files, enclave))
    assert got == [
        ("ip -4 -j route show table all", None, "default via 10.42.10.1 dev eth0"),
        ("/etc/systemd/network/10-up.network", 2, "Gateway=192.0.2.1"),
        ("/etc/systemd/network/10-up.network", 4, "Destination=2001:4860::/32"),
        ("/etc/network/interfaces.d/x", 2, "up ip route add 52.0.0.0/8 via 10.42.10.1"),
    ]


# --------------------------------------------------------------------------- sources


def test_package_sources(tmp_path, enclave):
    files = tree(tmp_path, {
        "/etc/apt/sources.list": "deb [arch=amd64] http://deb.debian.org/debian bookworm main\n"
                                 "deb http://apt.pilot.geheim.internal/debian bookworm main\ndeb file:/srv/repo ./\n",
        "/etc/apt/sources.list.d/x.sources": "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n",
        "/etc/pip.conf": "[global]\nindex-url = https://pypi.org/simple\nfind-links = /opt/wheels\n",
        "/etc/yum.repos.d/x.repo": "[x]\nbaseurl=http://mirror.centos.org/x\n",
    })
    res = packages = sources.check_packages(files, enclave)
    assert findings(packages) == [
        ("/etc/apt/sources.list", 1, "http://deb.debian.org/debian"),
        ("/etc/apt/sources.list.d/x.sources", 2, "https://deb.nodesource.com/node_20.x"),
        ("/etc/yum.repos.d/x.repo", 2, "http://mirror.centos.org/x"),
        ("/etc/pip.conf", 2, "https://pypi.org/simple"),
    ]
    assert res.to_dict()["findings"][0]["label"].startswith("external service: Debian mirror network")


def test_proxies(tmp_path, enclave):
    files = tree(tmp_path, {
        "/etc/environment": 'PATH="/usr/bin"\nhttps_proxy="http://proxy.example.com:3128"\nno_proxy=localhost\n',
        "/etc/apt/apt.conf.d/90proxy": 'Acquire::http::Proxy "http://10.42.10.9:3128";\n',
        "/etc/systemd/system/docker.service.d/proxy.conf": '[Service]\nEnvironment="HTTP_PROXY=http://p.example:80"\n',
    })
    assert findings(sources.check_proxy(files, enclave, environ={"http_proxy": "http://q.example:8080"})) == [
        ("/etc/environment", 2, "http://proxy.example.com:3128"),
        ("/etc/systemd/system/docker.service.d/proxy.conf", 2, "http://p.example:80"),
        ("/etc/apt/apt.conf.d/90proxy", 1, "http://10.42.10.9:3128"),  # inside, but no proxy is declared
        ("environment of the check (http_proxy)", None, "http://q.example:8080"),
    ]


# --------------------------------------------------------------------------- runtime


def test_rendered_registries_conf_passes_and_rewrites(tmp_path):
    """The runtime role's template, rendered, names only the internal registry."""
    import jinja2
    import yaml

    role = ROOT / "playbooks" / "roles" / "runtime"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(role / "templates")), keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    text = env.get_template("registries.conf.j2").render(
        ansible_managed="test", runtime__internal_registry=INTERNAL,
        runtime__upstream_registries=defaults["runtime__upstream_registries"], runtime__extra_upstream_registries=[],
        runtime__unqualified_search_registries=[], runtime__short_name_mode="enforcing",
    )
    files = tree(tmp_path, {"/etc/containers/registries.conf": text})
    res = runtime.check_registries(files, runtime.Internal([INTERNAL]), LABELS)
    assert res.to_dict()["status"] == "PASS", res.to_dict()["findings"]
    rules = runtime.registry_rules(files)[0]
    assert runtime.rewrite("docker.io/library/busybox@sha256:" + "a" * 64, rules)[0].startswith(
        INTERNAL + "/docker.io/library/busybox@")
    assert runtime.rewrite("europe-docker.pkg.dev/x/y", rules)[1] is True  # blocked


def test_registries_fallbacks_aliases_containerd_and_auth_are_named(tmp_path):
    files = tree(tmp_path, {
        "/etc/containers/registries.conf": f"""\
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            location = "quay.io"
            [[registry.mirror]]
            location = "{INTERNAL}/quay.io"
            """,
        "/etc/containers/registries.conf.d/shortnames.conf": '[aliases]\n"x" = "ghcr.io/a/x"\n',
        "/etc/containerd/certs.d/docker.io/hosts.toml": 'server = "https://registry-1.docker.io"\n'
                                                        f'[host."https://{INTERNAL}"]\n  capabilities = ["pull"]\n',
        "/etc/containerd/certs.d/quay.io/hosts.toml": f'[host."https://{INTERNAL}"]\n',  # mirror only: falls back
        f"/etc/containerd/certs.d/{INTERNAL}/hosts.toml": f'server = "https://{INTERNAL}"\n',
        "/etc/containers/auth.json": json.dumps({"auths": {INTERNAL: {"auth": "eA=="}, "docker.io": {"auth": "eA=="}}}),
    })
    got = findings(runtime.check_registries(files, runtime.Internal([INTERNAL]), LABELS))
    values = [v for _s, _l, v in got]
    assert "quay.io -> quay.io" in values
    assert "docker.io" in values  # unqualified search and auth.json
    assert "x = ghcr.io/a/x" in values
    assert "https://registry-1.docker.io" in values
    assert "(no server)" in values
    assert ("/etc/containers/auth.json", 1, "docker.io") in got
    assert not any(INTERNAL in v and "->" not in v for v in values), got


@pytest.mark.parametrize("policy, bad", [
    ({"default": [{"type": "reject"}], "transports": {"docker": {INTERNAL: [{"type": "insecureAcceptAnything"}]}}}, []),
    ({"default": [{"type": "insecureAcceptAnything"}]}, ["default"]),
    ({"default": [{"type": "reject"}], "transports": {"docker": {"quay.io": [{"type": "insecureAcceptAnything"}]}}},
     ["docker:quay.io"]),
    ({"default": [{"type": "reject"}], "transports": {"oci": {"": [{"type": "insecureAcceptAnything"}]},
                                                      "containers-storage": {"": [{"type": "insecureAcceptAnything"}]},
                                                      "docker-archive": {"": [{"type": "reject"}]}}},
     ["containers-storage:", "oci:"]),
])
def test_image_policy(tmp_path, policy, bad):
    files = tree(tmp_path, {"/etc/containers/policy.json": json.dumps(policy, indent=2)})
    got = [v for _s, _l, v in findings(runtime.check_image_policy(files, runtime.Internal([INTERNAL])))]
    assert len(got) == len(bad) and all(any(b in v for v in got) for b in bad), got


def test_missing_policy_json_fails(tmp_path):
    assert findings(runtime.check_image_policy(common.Files(str(tmp_path)), runtime.Internal([INTERNAL])))


def test_push_credential_found_on_a_node(tmp_path):
    import base64
    import hashlib

    secret = "s3cret-push"
    auth = base64.b64encode(f"airgap-import:{secret}".encode()).decode()
    files = tree(tmp_path, {
        "/etc/containers/auth.json": json.dumps({"auths": {INTERNAL: {"auth": auth}}}),
        "/etc/airgap/airgap-import.password": secret + "\n",
    })
    digest = hashlib.sha256(secret.encode()).hexdigest()
    got = findings(runtime.check_credentials(files, runtime.Internal([INTERNAL]), "airgap-pull", digest, False))
    assert ("/etc/containers/auth.json", 1, f"{INTERNAL} user airgap-import") in got
    assert ("/etc/airgap/airgap-import.password", None, "(secret)") in got
    # The staging host may hold it (but its auth.json still only the pull account).
    got = findings(runtime.check_credentials(files, runtime.Internal([INTERNAL]), "airgap-pull", digest, True))
    assert got == [("/etc/containers/auth.json", 1, f"{INTERNAL} user airgap-import")]


def test_credentials_in_containerd_hosts_toml_and_config_toml_are_judged(tmp_path):
    """containerd nodes carry the pull credential as a hosts.toml header: the same rules apply there."""
    import base64
    import hashlib

    def basic(user, secret):
        return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    server = f"https://{INTERNAL}/v2/docker.io"
    pull = (f'server = "{server}"\n[header]\n  Authorization = "{basic("airgap-pull", "p")}"\n\n'
            f'[host."{server}"]\n  capabilities = ["pull", "resolve"]\n'
            f'  [host."{server}".header]\n    Authorization = "{basic("airgap-pull", "p")}"\n')
    files = tree(tmp_path, {"/etc/containerd/certs.d/docker.io/hosts.toml": pull})
    res = runtime.check_credentials(files, runtime.Internal([INTERNAL]), "airgap-pull", "0" * 64, False)
    assert findings(res) == []
    # server and host name one registry: one note, not two
    assert res.to_dict()["evidence"] == [f"/etc/containerd/certs.d/docker.io/hosts.toml: {server} user airgap-pull"]

    digest = hashlib.sha256(b"s3cret-push").hexdigest()
    cri = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs'
           f'."{INTERNAL}".auth]\n  username = "airgap-import"\n  password = "s3cret-push"\n')
    files = tree(tmp_path / "bad", {
        "/etc/containerd/certs.d/docker.io/hosts.toml": pull.replace(basic("airgap-pull", "p"),
                                                                   basic("airgap-import", "s3cret-push"), 1),
        "/etc/containerd/config.toml": cri,
    })
    got = findings(runtime.check_credentials(files, runtime.Internal([INTERNAL]), "airgap-pull", digest, False))
    assert ("/etc/containerd/certs.d/docker.io/hosts.toml", 1, f"{server} user airgap-import") in got
    assert ("/etc/containerd/config.toml", 2, f"{INTERNAL} user airgap-import") in got
    assert sum(v.endswith("user airgap-import") for _s, _l, v in got) == 4  # other account + push secret, each file


# --------------------------------------------------------------------------- workloads


def _podman(containers):
    listing = [{"Id": c["Id"], "Names": [c["Name"]], "Image": c["ImageName"], "State": c["State"]["Status"]}
               for c in containers]

    def run(argv):
        if argv[1] == "ps":
            return 0, json.dumps(listing), ""
        if argv[1] == "container":
            return 0, json.dumps(containers), ""
        return 0, json.dumps([{"Id": "img", "Digest": containers[0]["ImageDigest"]}]), ""
    return run


def _ctr(name, digest, status="running", privileged=False, network="host", mounts=()):
    return {"Id": name + "-id", "Name": name, "ImageName": f"{INTERNAL}/x/{name}@{digest}", "ImageDigest": digest,
            "Image": "img", "State": {"Status": status, "Running": status == "running", "ExitCode": 0},
            "HostConfig": {"Privileged": privileged, "NetworkMode": network},
            "Mounts": [{"Type": "bind", "Source": s, "Destination": d} for s, d in mounts]}


def test_workloads_judged_against_their_spec(tmp_path):
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    spec = [{"name": "app", "image": f"{INTERNAL}/x/app", "digests": [d1], "network": "host", "mounts": ["/srv/a:/a"]},
            {"name": "gone", "image": f"{INTERNAL}/x/gone", "digests": [d1], "network": ""}]
    run = _podman([
        _ctr("app", d1, mounts=[("/srv/a", "/a"), ("/etc", "/host-etc")], privileged=True),
        _ctr("other", d2, status="exited"),
    ])
    got = findings(workloads.check_workloads(run, "/usr/bin/podman", common.Files(str(tmp_path)), spec, [d1]))
    values = [v for _s, _l, v in got]
    assert "app privileged" in values and "app mount /etc:/host-etc" in values
    assert "app mount /srv/a:/a" not in values
    assert any(v.startswith("other ") for v in values)  # a stopped container that is no workload
    assert ("podman ps --all", None, "gone") in got


def test_marker_names_the_signed_manifest(tmp_path):
    files = tree(tmp_path, {"/etc/airgap/bundle.json": json.dumps(
        {"name": "p", "version": "1.0.0", "manifest_digest": "sha256:" + "0" * 64}, indent=2)})
    want = {"name": "p", "version": "1.0.0", "manifest_digest": "sha256:" + "f" * 64}
    assert findings(workloads.check_marker(files, "/etc/airgap/bundle.json", want)) == [
        ("/etc/airgap/bundle.json", 4, "manifest_digest sha256:" + "0" * 64)]
    want["manifest_digest"] = "sha256:" + "0" * 64
    assert findings(workloads.check_marker(files, "/etc/airgap/bundle.json", want)) == []


# --------------------------------------------------------------------------- audit anchor


def test_audit_log_must_hold_the_recorded_head(tmp_path):
    """The wiring of check.yml's audit check: the head `airgap audit head` recorded
    at the rollout, `airgap audit verify --expect-head` on today's copy, both the
    controller's toolkit (the real CLI)."""
    from airgap.audit import AuditLog

    airgap = str(Path(sys.executable).parent / "airgap")
    log = tmp_path / "audit.log"
    for i in range(3):
        AuditLog(log).append("import", {"bundle": f"b{i}"}, "accepted")
    head = json.loads(subprocess.run([airgap, "audit", "head", "--log", str(log), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    anchor = f"{head['seq']}:{head['head']}"
    lines = log.read_text().splitlines(keepends=True)

    def judge(content: str):
        log.write_text(content)
        cmd = [airgap, "audit", "verify", "--log", str(log), "--expect-head", anchor]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return audit.check_audit(anchor, proc.returncode, proc.stdout + proc.stderr, " ".join(cmd),
                                 "staging:/var/lib/airgap/state/audit.log").to_dict()

    AuditLog(log).append("verify", {"bundle": "b3"}, "accepted")
    grown = log.read_text()
    assert judge(grown)["status"] == "PASS"
    assert judge("".join(lines[:2]))["status"] == "FAIL"  # cut back before the head
    edited = judge(lines[0].replace("b0", "bX") + "".join(lines[1:]))
    assert edited["status"] == "FAIL" and edited["findings"][0]["source"] == "staging:/var/lib/airgap/state/audit.log"
    assert audit.check_audit("", 0, "INTACT", "c", "x").to_dict()["status"] == "FAIL"  # nothing recorded


def test_the_report_shows_where_the_history_begins(tmp_path, signed_bundle):
    """A first use of the trust policy (a fresh, or wiped, state directory) is in the audit
    check's summary and evidence, as the controller's `airgap audit verify` printed it."""
    airgap = str(Path(sys.executable).parent / "airgap")
    state = tmp_path / "state"
    rec = subprocess.run([airgap, "verify", str(signed_bundle.path), "--trust", str(signed_bundle.trust), "--state",
                          str(state), "--record"], capture_output=True, text=True)
    assert rec.returncode == 0, rec.stderr
    head = subprocess.run([airgap, "audit", "head", "--state", str(state)], capture_output=True, text=True,
                          check=True).stdout.strip()
    cmd = [airgap, "audit", "verify", "--log", str(state / "audit.log"), "--expect-head", head]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and "first use: trust policy version 1" in proc.stdout
    judged = audit.check_audit(head, proc.returncode, proc.stdout + proc.stderr, " ".join(cmd), "staging:log").to_dict()
    assert judged["status"] == "PASS" and "history begins with the first use of trust policy version 1" in judged["summary"]
    [first] = [e for e in judged["evidence"] if e.startswith("first use:")]
    assert "pinned at entry 1" in first and "first use" not in judged["evidence"][0]


# --------------------------------------------------------------------------- the report


def _results():
    ok = {"check": "dns", "title": "Name resolution", "section": "Enclave", "status": "PASS", "summary": "fine",
          "findings": [], "evidence": [f"line {i}" for i in range(5)]}
    bad = dict(ok, status="FAIL", summary="1 finding(s)", findings=[
        {"check": "dns", "source": "/etc/resolv.conf", "line": 3, "value": "8.8.8.8", "reason": "outside <the> enclave",
         "label": "US provider: Google"}], evidence=[])
    return [dict(ok, host="node-2"), dict(bad, host="node-1"), dict(ok, check="signed", title="Signed bundle",
                                                                     section="Supply chain", host="controller")]


HEADER = {"generated": "2026-01-01T00:00:00Z", "inventory": ["inv"], "registry": INTERNAL, "audit_head": "7:" + "a" * 64,
          "bundle": {"name": "geheim-pilot", "version": "1.0.0", "file": "b.tar", "sha256": "c" * 64,
                     "manifest_digest": "sha256:" + "d" * 64},
          "signers": [{"role": "builder", "keyid": "e" * 64, "name": "builder-1"},
                      {"role": "officer", "keyid": "f" * 64, "name": "officer-1"}]}


def test_report_verdict_and_failures_first():
    doc = report.build(_results(), HEADER)
    assert doc["verdict"] == "FAIL" and doc["counts"] == {"hosts": 3, "checks": 3, "pass": 2, "fail": 1, "findings": 1,
                                                      "expected_fail": 0, "needs_cluster": 0}
    assert doc["hosts"] == ["controller", "node-1", "node-2"]  # sorted, the controller first
    md = report.markdown(doc)
    assert md.startswith("# airgap check: FAIL")
    head = md[:md.index("## Failures")]
    for text in ("sha256:" + "d" * 64, "builder: builder-1", "officer: officer-1", "7:" + "a" * 64):
        assert text in head
    assert md.index("| node-1 | Name resolution | `/etc/resolv.conf:3` | `8.8.8.8` |") < md.index("## Every check")
    assert "... 2 more" in md  # evidence summarised; the JSON has every item
    assert len(doc["results"][2]["evidence"]) == 5


def test_html_report_is_one_self_contained_printable_page():
    page = report.html_page(report.build(_results(), HEADER))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "@media print" in page
    assert "outside &lt;the&gt; enclave" in page  # escaped
    assert page.index("Failures (1)") < page.index("Every check on every host") < page.index("<h2>Evidence")
    assert not any(tag in page.lower() for tag in ("<script", "<link", "<img", "src=", "href=", "url(", "@import"))


def test_the_module_runs_through_ansible_with_its_module_utils(tmp_path):
    """Ansible packs the module with its module_utils (the matcher through its
    symlink) and runs it; a planted resolver comes back as a finding."""
    import os

    files = tree(tmp_path / "root", {"/etc/resolv.conf": "nameserver 10.42.10.2\nnameserver 8.8.8.8\n",
                                     "/etc/hosts": "127.0.0.1 localhost\n"})
    args = {"checks": ["dns", "hosts"], "root": files.root, "enclave": SPEC,
            "labels": [{"pattern": "8.8.8.0/24", "provider": "Google", "jurisdiction": "US"}]}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               ANSIBLE_HOME=str(tmp_path / "h"), ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-m", "airgap_check",
                           "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}",
                           "--tree", str(tmp_path / "tree")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "tree" / "localhost").read_text())
    by_check = {r["check"]: r for r in result["results"]}
    assert by_check["hosts"]["status"] == "PASS"
    assert [(f["source"], f["line"], f["value"], f["label"]) for f in by_check["dns"]["findings"]] == [
        ("/etc/resolv.conf", 2, "8.8.8.8", "US provider: Google")]
