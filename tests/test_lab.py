"""The namespace lab: isolation, ssh with checked host keys, podman, clean teardown.

No test sends a packet outside 127.0.0.0/8: "no route out" is checked with
``ip route get``, which asks the routing table and sends nothing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from airgap import lab as labmod
from airgap.lab import Lab, ns
from airgap.lab import nodes as labnodes

pytestmark = pytest.mark.slow

NODES = {"registry-1": "127.0.10.1", "node-1": "127.0.10.2", "node-2": "127.0.10.3"}


def _mountinfo() -> list[str]:
    # Drop the mount id and parent id: they identify, they do not describe.
    return sorted(
        " ".join(line.split()[2:])
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def _pids_in_netns(inode: int) -> list[int]:
    return labnodes.pids_in_netns(inode)


# --- the isolated network ----------------------------------------------------


def test_netns_has_only_loopback_and_no_route_out(lab):
    info = lab.info()
    r = lab.run_in_netns(["ip", "-o", "link", "show"], check=True)
    links = [line.split(":")[1].strip() for line in r.stdout.splitlines()]
    assert links == ["lo"]
    assert "UP" in r.stdout.split("<", 1)[1].split(">", 1)[0].split(",")
    # No IPv4 route at all in the main table, and the kernel says so for an outside address.
    r = lab.run_in_netns(["ip", "-4", "route", "show", "table", "main"], check=True)
    assert r.stdout.strip() == ""
    for outside in ("192.0.2.1", "10.0.0.1", "1.1.1.1"):
        r = lab.run_in_netns(["ip", "route", "get", outside])
        assert r.returncode != 0 and "unreachable" in r.stderr.lower(), (
            outside,
            r.stdout,
            r.stderr,
        )
    r = lab.run_in_netns(["ip", "-6", "route", "get", "2001:db8::1"])
    assert r.returncode != 0
    # Every node address is local on lo.
    for addr in NODES.values():
        r = lab.run_in_netns(["ip", "route", "get", addr], check=True)
        assert r.stdout.startswith(f"local {addr} dev lo"), r.stdout
    # The nodes live in that namespace too (same netns inode).
    for node in info.nodes:
        assert ns.ns_inode(f"/proc/{node.pid}/ns/net") == ns.ns_inode(info.netns)


def test_status_reports_every_node(lab):
    st = lab.status()
    assert st.up and st.netns_exists
    assert [(n.name, n.address) for n in st.nodes] == list(NODES.items())
    for n in st.nodes:
        assert n.running and n.sshd and n.ssh_banner.startswith("SSH-2.0-OpenSSH")
        assert n.pid and ns.pid_alive(n.pid)
    assert st.to_dict()["nodes"][0]["name"] == "registry-1"


def test_up_again_reports_already_up(lab):
    before = lab.info()
    again = Lab(lab.workdir).up(nodes=3)
    assert again.already_up
    assert [n.pid for n in again.nodes] == [n.pid for n in before.nodes]


# --- inventory and ssh ---------------------------------------------------------


def test_inventory_groups_and_ssh_settings(lab):
    info = lab.info()
    inv = yaml.safe_load(Path(info.inventory).read_text())
    top = inv["all"]["children"]["airgap_lab"]
    groups = top["children"]
    assert set(groups["registry"]["hosts"]) == {"registry-1"}
    assert set(groups["staging"]["hosts"]) == {"registry-1"}
    assert set(groups["container_hosts"]["hosts"]) == {"node-1", "node-2"}
    hosts = {}
    for g in groups.values():
        for h, hv in (g.get("hosts") or {}).items():
            if hv:
                hosts[h] = hv["ansible_host"]
    assert hosts == NODES
    v = top["vars"]
    assert v["ansible_user"] == "root"
    assert Path(v["ansible_ssh_private_key_file"]) == Path(info.client_key)
    assert oct(os.stat(info.client_key).st_mode & 0o777) == "0o600"
    assert f"UserKnownHostsFile={info.known_hosts}" in v["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in v["ansible_ssh_common_args"]
    assert Path(v["ansible_python_interpreter"]).exists()
    known = Path(info.known_hosts).read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(
        f"{a},{n}" for n, a in NODES.items()
    )
    # Every node has its own host key.
    assert len({line.split()[2] for line in known}) == len(NODES)


@pytest.mark.parametrize("node", list(NODES))
def test_openssh_login_shows_node_hostname_and_pid_namespace(lab, node):
    r = lab.ssh(
        node,
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'; "
        "ip -o link show | wc -l; ls -A " + str(lab.workdir) + " | wc -l",
    )
    assert r.returncode == 0, r.stderr
    hostname, init, nprocs, nlinks, hidden = r.stdout.splitlines()
    assert hostname == node
    assert "node-init" in init  # PID 1 is the node's init, not the host's
    assert int(nprocs) < 20  # the host has hundreds; the node sees only its own
    assert nlinks == "1"
    assert hidden == "0"  # the lab's work dir (keys, state) is hidden inside


def test_paramiko_checks_host_keys(lab):
    import paramiko

    info = lab.info()
    for name, addr in NODES.items():
        client = paramiko.SSHClient()
        client.load_host_keys(info.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            addr,
            username="root",
            key_filename=info.client_key,
            sock=lab.socket(addr, 22),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        try:
            _, out, _ = client.exec_command("hostname; echo $$")
            host, pid = out.read().decode().split()
            assert host == name and int(pid) < 1000
        finally:
            client.close()
    # The wrong host key for an address is refused: node-1's key presented as registry-1's.
    lines = Path(info.known_hosts).read_text().splitlines()
    k1 = next(line for line in lines if line.startswith("127.0.10.2,")).split(" ", 1)[1]
    bad = paramiko.SSHClient()
    bad.get_host_keys().add(
        "127.0.10.1",
        k1.split()[0],
        paramiko.PKey.from_type_string(
            k1.split()[0], __import__("base64").b64decode(k1.split()[1])
        ),
    )
    bad.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        bad.connect(
            "127.0.10.1",
            username="root",
            key_filename=info.client_key,
            sock=lab.socket("127.0.10.1", 22),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    bad.close()


def test_ssh_without_lab_key_is_refused(lab, tmp_path):
    key = tmp_path / "other"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {key}")
    argv = lab.ssh_argv("node-1")
    argv[argv.index("-i") + 1] = str(key)
    r = lab.run_in_netns([*argv, "true"])
    assert r.returncode == 255 and "Permission denied" in r.stderr


def test_ansible_reaches_every_node(lab):
    ansible = shutil.which(
        "ansible", path=str(Path(os.sys.executable).parent)
    ) or shutil.which("ansible")
    if not ansible:
        pytest.fail("ansible not installed: scripts/setup.sh installs it")
    r = lab.run_in_netns(
        [
            ansible,
            "-i",
            lab.info().inventory,
            "all",
            "-m",
            "ansible.builtin.command",
            "-a",
            "hostname",
            "-o",
        ],
        env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"},
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for name in NODES:
        assert re.search(
            rf"^{name} \| CHANGED \| rc=0 \| \(stdout\) {name}$", r.stdout, re.MULTILINE
        ), r.stdout
    # The fixture's inventory sees the lab's group_vars (linked from inventories/lab/).
    gv = Path(__file__).resolve().parents[1] / "inventories/lab/group_vars"
    keys = [
        k
        for f in sorted(gv.rglob("*.yml"))
        for k in (yaml.safe_load(f.read_text()) or {})
    ]
    if keys:
        r = lab.run_in_netns(
            [
                ansible,
                "-i",
                lab.info().inventory,
                "node-1",
                "-m",
                "ansible.builtin.debug",
                "-a",
                f"var={keys[0]}",
            ],
            timeout=60,
        )
        assert r.returncode == 0 and "NOT DEFINED" not in r.stdout, r.stdout + r.stderr
        assert Path(lab.info().inventory).with_name("group_vars").is_symlink()


# --- filesystem isolation --------------------------------------------------------


def test_writes_in_a_node_stay_in_that_node(lab):
    probe = f"/root/airgap-lab-probe-{uuid.uuid4().hex}"
    etc_probe = f"/etc/airgap-lab-probe-{uuid.uuid4().hex}"
    try:
        r = lab.exec(
            "node-1",
            [
                "sh",
                "-c",
                f"echo one > {probe} && echo one > {etc_probe} && cat {probe}",
            ],
        )
        assert r.returncode == 0 and r.stdout == "one\n", r.stderr
        # Not on the host.
        assert not Path(probe).exists() and not Path(etc_probe).exists()
        for other in ("registry-1", "node-2"):
            assert lab.exec(other, ["test", "-e", probe]).returncode == 1
            assert lab.exec(other, ["test", "-e", etc_probe]).returncode == 1
        # Each node has its own /etc/hostname and host key, not the host's.
        names = {n: lab.exec(n, ["cat", "/etc/hostname"]).stdout.strip() for n in NODES}
        assert names == {n: n for n in NODES}
        keys = {
            lab.exec(n, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
            for n in NODES
        }
        assert len(keys) == 3
        if Path("/etc/ssh/ssh_host_ed25519_key.pub").exists():
            assert Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text() not in keys
    finally:
        lab.exec("node-1", ["rm", "-f", probe, etc_probe])


def test_node_runs_podman_with_quirks_handled(lab):
    r = lab.exec("node-1", ["cat", "/etc/containers/containers.conf"])
    assert 'cgroups = "enabled"' in r.stdout and "default_ulimits = []" in r.stdout
    r = lab.exec(
        "node-1",
        [
            "sh",
            "-c",
            "grep -c cgroup2 /proc/self/mountinfo; stat -f -c %T /sys/fs/cgroup; "
            "stat -f -c %T /sys/fs/cgroup/memory",
        ],
    )
    # The host's v1 hierarchies (real cgroups for pods), never the unified cgroup2 mount.
    assert r.stdout.split() == ["0", "tmpfs", "cgroupfs"]


# --- podman through a registry inside the isolated network ----------------------

REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/airgap-lab-test-registry
http:
  addr: 127.0.10.1:5000
"""


def _busybox_tar() -> bytes:
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox (static) not installed: scripts/setup.sh installs busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tar.gettarinfo(busybox, arcname="bin/busybox")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(busybox, "rb") as fh:
            tar.addfile(info, fh)
        for applet in ("sh", "true", "hostname", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def test_podman_pull_from_lab_registry_and_run(make_lab):
    if not shutil.which("podman") or not shutil.which("docker-registry"):
        pytest.fail("podman and docker-registry needed: scripts/setup.sh installs them")
    # A private lab: the shared one keeps 127.0.10.1:5000 free for the playbooks.
    priv = make_lab(nodes=3)
    ref = "127.0.10.1:5000/lab/busybox:1"

    def x(node, argv, **kw):
        r = priv.exec(node, argv, timeout=120, **kw)
        assert r.returncode == 0, (node, argv, r.stdout, r.stderr)
        return r

    start = (
        "cat > /etc/airgap-test-registry.yml && (docker-registry serve /etc/airgap-test-registry.yml"
        " </dev/null >/var/log/test-registry.log 2>&1 &)"
    )
    x("registry-1", ["sh", "-c", start], input=REGISTRY_CONFIG)
    deadline = time.monotonic() + 20
    # Wait until the registry answers (HTTP on 127.0.10.1, inside the netns).
    while True:
        probe = "import urllib.request as u; print(u.urlopen('http://127.0.10.1:5000/v2/', timeout=2).status)"
        r = priv.run_in_netns(["python3", "-c", probe])
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)
    x(
        "registry-1",
        ["podman", "import", "--change", 'CMD=["/bin/busybox","true"]', "-", ref],
        input=_busybox_tar(),
    )
    x("registry-1", ["podman", "push", "--tls-verify=false", ref])
    # node-1 has never seen the image: it must come from the registry in the lab.
    assert priv.exec("node-1", ["podman", "image", "exists", ref]).returncode == 1
    x("node-1", ["podman", "pull", "--tls-verify=false", ref])
    x("node-1", ["podman", "run", "--rm", ref, "true"])
    x("node-1", ["podman", "run", "--rm", ref])  # the image's CMD
    # Image storage is per node: node-2 has not got it, and neither has the host's podman.
    assert priv.exec("node-2", ["podman", "image", "exists", ref]).returncode == 1
    assert "127.0.10.1:5000/lab/busybox" not in _host_images()


def _host_images() -> str:
    import subprocess

    r = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}"],
        check=False,
        capture_output=True,
        text=True,
    )
    return r.stdout


# --- teardown --------------------------------------------------------------------


def test_up_is_idempotent_and_down_removes_everything(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run the suite as root (README)")
    before = _mountinfo()
    name = f"airgap-lab-d{os.getpid()}"
    inv = tmp_path / "inv" / "hosts.yml"
    the_lab = Lab(tmp_path / "work", name=name, inventory=inv)
    info = the_lab.up(nodes=2)
    try:
        assert not info.already_up and inv.exists()
        assert Lab(tmp_path / "work").up(nodes=2).already_up
        inode = ns.ns_inode(info.netns)
        pids = [p for n in info.nodes for p in (n.pid, n.launcher_pid)]
        assert all(ns.pid_alive(p) for p in pids)
        # something started in the lab after up (a stray process) is also removed
        r = the_lab.exec(
            "node-1",
            ["sh", "-c", "(sleep 600 </dev/null >/dev/null 2>&1 &)"],
            timeout=10,
        )
        assert r.returncode == 0
        stray = _popen_in_netns(the_lab, ["sleep", "600"])
        assert _mountinfo() != before  # /run/netns/<name>
    finally:
        assert the_lab.down() is True
    stray.wait(timeout=10)
    assert _mountinfo() == before
    assert not Path(info.netns).exists()
    assert name not in _run(["ip", "netns", "list"]).stdout
    assert not any(ns.pid_alive(p) for p in pids)
    assert _pids_in_netns(inode) == []
    assert not (tmp_path / "work").exists()
    assert not inv.exists()
    assert the_lab.down() is False
    assert Lab(tmp_path / "work").status().up is False


def _run(argv):
    import subprocess

    return subprocess.run(argv, check=False, capture_output=True, text=True)


def _popen_in_netns(the_lab, argv):
    import subprocess

    return subprocess.Popen(["nsenter", f"--net={the_lab.info().netns}", "--", *argv])


def test_down_restores_a_preexisting_inventory(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run the suite as root (README)")
    inv = tmp_path / "hosts.yml"
    inv.write_text("# committed\n")
    the_lab = Lab(tmp_path / "work", name=f"airgap-lab-i{os.getpid()}", inventory=inv)
    the_lab.up(nodes=1)
    try:
        assert "registry-1" in inv.read_text()
    finally:
        the_lab.down()
    assert inv.read_text() == "# committed\n"


def test_sshd_is_restarted_when_it_dies(make_lab):
    priv = make_lab(nodes=1)
    r = priv.exec("registry-1", ["sh", "-c", "kill $(cat /run/sshd.pid)"])
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    time.sleep(0.3)
    while not priv.status().up:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert priv.ssh("registry-1", "true").returncode == 0


def test_bad_node_count_is_a_usage_error():
    from airgap.exceptions import UsageError

    with pytest.raises(UsageError):
        Lab("/nonexistent-airgap-lab").up(nodes=0)


def test_workdir_is_hidden_inside_nodes_and_lab_runs_from_var(tmp_path):
    """Like the default /var/lib/airgap-lab: the work dir is inside the overlay's lowerdir=/."""
    import tempfile

    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run the suite as root (README)")
    parent = Path(tempfile.mkdtemp(prefix="airgap-lab-test-", dir="/var/tmp"))
    the_lab = Lab(parent / "work", name=f"airgap-lab-v{os.getpid()}")
    try:
        info = the_lab.up(nodes=2)
        assert sorted(os.listdir(parent / "work")) == [
            "cp",
            "hosts.yml",
            "lab.json",
            "nodes",
            "ssh",
        ]
        r = the_lab.exec("node-1", ["ls", "-A", str(parent / "work")])
        assert r.returncode == 0 and r.stdout == ""
        r = the_lab.exec(
            "node-1", ["test", "-e", str(parent / "work" / "ssh" / "id_ed25519")]
        )
        assert r.returncode == 1
        # The inventory is exactly what render_inventory() gives for this work dir.
        assert Path(info.inventory).read_text() == labmod.render_inventory(
            parent / "work",
            info.name,
            [(n.name, n.address, n.groups) for n in info.nodes],
        )
        assert the_lab.ssh("node-1", "hostname").stdout == "node-1\n"
        assert "up" in the_lab.status().to_text() and "node-1" in info.to_text()
    finally:
        the_lab.down()
        assert not (parent / "work").exists()
        parent.rmdir()


def test_committed_lab_inventory_matches_the_default_lab():
    committed = (
        Path(__file__).resolve().parents[1] / "inventories" / "lab" / "hosts.yml"
    )
    assert committed.read_text() == labmod.render_inventory(labmod.DEFAULT_WORKDIR)
