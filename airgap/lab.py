"""``airgap lab``: a rehearsal of the isolated site on one machine.

The lab builds a small isolated site out of Linux namespaces (root only):

* **The isolated network** is a named network namespace (default ``airgap-lab``,
  file ``/run/netns/airgap-lab``) holding *only* the loopback interface, up.
  127.0.0.0/8 is local on ``lo``, so every 127.0.10.N works; there is no other
  interface, no veth and no route, so any hidden download fails at once
  (``ip -n airgap-lab route get 192.0.2.1`` -> "Network is unreachable").
* **Nodes**: ``registry-1`` (127.0.10.1: registry host and staging host) and
  ``node-1`` .. ``node-{N-1}`` (127.0.10.2..N: container hosts).  Each node is
  ``unshare --mount --pid --uts --ipc --fork`` joined to the lab's network
  namespace.  Its PID 1 is a small Python init (:mod:`airgap._internal.ns`) that

  - mounts a copy-on-write view of the host's root filesystem: overlayfs with
    ``lowerdir=/`` and its upper/work layer in ``<workdir>/nodes/<node>/layer``
    (the node's "disk": hidden from every node, kept across a restart of the
    node -- :meth:`Lab.restart` is a reboot -- and removed with the lab); on its
    first boot the node is "installed": the host's external package sources are
    removed and the seed (ssh keys, hosts, resolv.conf, podman config) copied in;
  - mounts a fresh ``/proc`` (own PID namespace), a fresh read-only ``/sys``
    whose ``/sys/fs/cgroup`` holds the host's cgroup v1 hierarchies and not the
    unified cgroup2 mount (so pods get cgroups with the cgroupfs manager), a tmpfs
    ``/dev`` with the usual device nodes bound in and its own ``devpts``, tmpfs
    ``/run`` and ``/tmp``;
  - bind-mounts ``<workdir>/nodes/<node>/containers`` and ``.../containerd`` (on
    the host's disk) onto ``/var/lib/containers`` and ``/var/lib/containerd`` so
    podman and containerd can use overlayfs (overlay on overlay does not work);
  - hides the lab's work directory under a tmpfs, sets the hostname (own UTS
    namespace), ``pivot_root``\\ s into the new root;
  - runs ``sshd`` on 127.0.10.N:22 with the node's own ed25519 host key and root
    login by the lab client key only, restarts it if it dies, reaps orphans, and
    on SIGTERM stops everything in the node;
  - at boot starts what roles enabled for boot the way ``systemctl enable``
    does (links in ``/etc/systemd/system/{default,multi-user}.target.wants``):
    oneshot units such as podman's ``podman-restart.service`` run, others are
    supervised.

* **podman quirks of this host**, handled by the lab so roles need not know
  (file ``/etc/containers/containers.conf`` and ``storage.conf`` of each node):
  ``cgroups = "enabled"`` with ``cgroup_manager = "cgroupfs"`` on the host's
  cgroup v1 hierarchies (pods need real cgroups: with cgroups disabled ``podman
  kube play`` fails, "pod cgroup is not set"), ``default_ulimits = []``
  (raising RLIMIT_NOFILE fails here), ``events_logger = "file"`` and no
  journald (no systemd), ``netns = "host"`` (containers share the node's
  network namespace: no bridge/veth appears in the isolated network, and
  containers reach the registry at 127.0.10.1), runtime ``crun``, storage
  driver ``overlay`` on the host-disk bind mount.

On-disk layout (``workdir``, default :data:`DEFAULT_WORKDIR`)::

    lab.json                   state: netns, node pids, paths (status/down read it)
    ssh/id_ed25519[.pub]       lab client key (root login on every node)
    ssh/known_hosts            host keys of every node (127.0.10.N and node name)
    cp/                        ssh ControlPath sockets (per lab, see below)
    hosts.yml                  inventory (also written to ``inventory=`` if given)
    nodes/<node>/init.json     node init configuration
    nodes/<node>/init.log      node init + sshd log (stdout/stderr of PID 1)
    nodes/<node>/seed/         files copied into the node's upper layer at start
    nodes/<node>/containers/   the node's /var/lib/containers (podman storage)
    nodes/<node>/containerd/   the node's /var/lib/containerd (containerd content and snapshots)
    nodes/<node>/{layer,root}/ empty mount points, used only inside the node

Running Ansible against the lab -- from *inside* the lab's network namespace
(the host's namespace cannot reach the nodes, by design)::

    airgap lab up                                    # writes inventories/lab/hosts.yml
    ip netns exec airgap-lab ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml
    # or: nsenter --net=/run/netns/airgap-lab ansible-playbook ...
    # or, from Python: Lab(workdir).run_in_netns(["ansible-playbook", "-i", inv, "playbooks/site.yml"])

The inventory sets, for group ``airgap_lab`` (parent of ``registry``,
``staging`` and ``container_hosts``): ``ansible_user: root``,
``ansible_ssh_private_key_file: <workdir>/ssh/id_ed25519``,
``ansible_python_interpreter: /usr/bin/python3`` (the node sees the host's root
filesystem; modules need only the stdlib) and ``ansible_ssh_common_args``
``-o UserKnownHostsFile=<workdir>/ssh/known_hosts -o GlobalKnownHostsFile=/dev/null
-o StrictHostKeyChecking=yes -o ControlPath=<workdir>/cp/%h``.  The
ControlPath keeps ssh connection multiplexing per lab: two labs (in two
network namespaces) use the same addresses, and a shared master socket would
silently connect to the other lab.  Plain ssh works the same way::

    ip netns exec airgap-lab ssh -i <workdir>/ssh/id_ed25519 \\
        -o UserKnownHostsFile=<workdir>/ssh/known_hosts -o StrictHostKeyChecking=yes root@127.0.10.2

``nsenter -t <pid> -a <cmd>`` (pid from ``airgap lab status``/``lab.json``) or
:meth:`Lab.exec` runs a command directly in a node, without ssh.

Several labs may run at once if each has its own ``name`` (network namespace)
and ``workdir``; the addresses are the same in each, which is fine because
every lab has its own loopback.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from airgap._internal import ns
from airgap.exceptions import OperationError, UsageError

DEFAULT_NAME = "airgap-lab"
DEFAULT_WORKDIR = Path("/var/lib/airgap-lab")
DEFAULT_INVENTORY = Path("inventories/lab/hosts.yml")
SUBNET = "127.0.10"
NETNS_DIR = Path("/run/netns")
STATE_VERSION = 1
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_PYTHON = "/usr/bin/python3"

# Launcher processes started by this Python process, so down() can reap them.
_LAUNCHED: dict[int, subprocess.Popen] = {}

CONTAINERS_CONF = """\
# Written by airgap lab: quirks of the lab host handled here so roles need not know.
[containers]
cgroups = "enabled"
default_ulimits = []
netns = "host"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
"""

STORAGE_CONF = """\
# Written by airgap lab: /var/lib/containers is a bind mount of the host's disk.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""

SSHD_CONFIG = """\
# Written by airgap lab.
ListenAddress {address}:22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
PidFile /run/sshd.pid
UseDNS no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


@dataclasses.dataclass
class LabNode:
    name: str
    address: str
    groups: list[str]
    pid: int | None = None  # host PID of the node's init (PID 1 inside)
    launcher_pid: int | None = None  # the `unshare` process waiting for it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LabInfo:
    name: str
    netns: str
    workdir: str
    inventory: str
    known_hosts: str
    client_key: str
    nodes: list[LabNode]
    already_up: bool = False

    def to_text(self) -> str:
        state = "already up" if self.already_up else "up"
        rows = [
            f"lab {self.name} {state}: netns {self.netns}, workdir {self.workdir}",
            f"  inventory   {self.inventory}",
            f"  client key  {self.client_key}",
            f"  known_hosts {self.known_hosts}",
        ]
        rows += [
            f"  {n.name:<12} {n.address:<12} pid {n.pid}  groups {','.join(n.groups)}"
            for n in self.nodes
        ]
        rows.append(
            f"  ansible: ip netns exec {self.name} ansible-playbook -i {self.inventory} playbooks/site.yml"
        )
        return "\n".join(rows) + "\n"

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise UsageError(f"no lab node named {name!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["nodes"] = [n.to_dict() for n in self.nodes]
        return d


@dataclasses.dataclass
class NodeStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    sshd: bool
    ssh_banner: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LabStatus:
    name: str
    up: bool  # every node running and answering ssh
    netns_exists: bool
    workdir: str
    nodes: list[NodeStatus]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "nodes": [n.to_dict() for n in self.nodes]}

    def to_text(self) -> str:
        head = f"lab {self.name}: {'up' if self.up else 'DOWN' if not self.nodes else 'DEGRADED'}"
        head += f" (netns {'present' if self.netns_exists else 'absent'}, workdir {self.workdir})"
        rows = [
            f"  {n.name:<12} {n.address:<12} pid {n.pid or '-':<8} "
            f"{'running' if n.running else 'stopped':<8} sshd {'ok' if n.sshd else 'unreachable'}"
            for n in self.nodes
        ]
        return "\n".join([head, *rows]) + "\n"


def node_names(nodes: int) -> list[tuple[str, str, list[str]]]:
    """(name, address, groups) for a lab of *nodes* nodes."""
    if not 1 <= nodes <= 200:
        raise UsageError(f"--nodes must be between 1 and 200, got {nodes}")
    out = [("registry-1", f"{SUBNET}.1", ["registry", "staging"])]
    for i in range(1, nodes):
        out.append((f"node-{i}", f"{SUBNET}.{i + 1}", ["container_hosts"]))
    return out


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    check = kw.pop("check", False)
    return subprocess.run(list(argv), check=check, **kw)


def _ed25519_keygen(path: Path, comment: str) -> None:
    """An unencrypted ed25519 key pair at *path* (lab keys: throw-away, root only)."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def _yaml_quote(s: str) -> str:
    return json.dumps(s)  # JSON strings are valid YAML scalars


def render_inventory(
    workdir: str | os.PathLike,
    name: str = DEFAULT_NAME,
    nodes: list[tuple[str, str, list[str]]] | None = None,
) -> str:
    """The Ansible inventory (YAML text) of the lab in *workdir*; deterministic."""
    workdir = Path(workdir).absolute()
    nodes = nodes if nodes is not None else node_names(3)
    key = workdir / "ssh" / "id_ed25519"
    known = workdir / "ssh" / "known_hosts"
    common = (
        f"-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null "
        f"-o StrictHostKeyChecking=yes -o ControlPath={workdir}/cp/%h"
    )
    groups: dict[str, list[tuple[str, str]]] = {
        "registry": [],
        "staging": [],
        "container_hosts": [],
    }
    for node, addr, gs in nodes:
        for g in gs:
            groups.setdefault(g, []).append((node, addr))
    lines = [
        "---",
        "# Generated by `airgap lab up` (airgap/lab.py); do not edit.  Ansible must run",
        "# inside the lab's network namespace, e.g.:",
        f"#   ip netns exec {name} ansible-playbook -i <this file> playbooks/site.yml",
        "all:",
        "  children:",
        "    airgap_lab:",
        "      vars:",
        "        ansible_user: root",
        f"        ansible_ssh_private_key_file: {_yaml_quote(str(key))}",
        f"        ansible_ssh_common_args: {_yaml_quote(common)}",
        f"        ansible_python_interpreter: {NODE_PYTHON}",
        f"        airgap_lab_netns: {_yaml_quote(name)}",
        "      children:",
    ]
    seen: set[str] = set()
    base = ["registry", "staging", "container_hosts"]
    for g in base + sorted(set(groups) - set(base)):
        if not groups[g]:
            lines.append(f"        {g}: {{}}")
            continue
        lines.append(f"        {g}:")
        lines.append("          hosts:")
        for node, addr in groups[g]:
            if node in seen:
                lines.append(f"            {node}: {{}}")
            else:
                seen.add(node)
                lines.append(f"            {node}:")
                lines.append(f"              ansible_host: {addr}")
    return "\n".join(lines) + "\n"


class Lab:
    """One lab: a network namespace and its nodes, described by ``<workdir>/lab.json``."""

    def __init__(
        self,
        workdir: str | os.PathLike = DEFAULT_WORKDIR,
        *,
        name: str = DEFAULT_NAME,
        inventory: str | os.PathLike | None = None,
    ):
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"bad lab name {name!r}")
        self.workdir = Path(workdir).absolute()
        if any(c.isspace() for c in str(self.workdir)):
            raise UsageError(
                f"lab work dir {self.workdir}: must not contain whitespace (ssh options)"
            )
        # ssh's ControlPath <workdir>/cp/<address> (+ a 17-byte temporary suffix
        # while ssh creates it) must fit a unix socket path (107 bytes).
        if len(str(self.workdir)) > 76:
            raise UsageError(
                f"lab work dir {self.workdir}: path longer than 76 characters"
            )
        self.name = name
        self.inventory = Path(inventory).absolute() if inventory else None
        self.state_file = self.workdir / "lab.json"

    # --- paths ------------------------------------------------------------

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def client_key(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "ssh" / "known_hosts"

    # --- state --------------------------------------------------------------

    def _load(self) -> dict | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise OperationError(
                f"{self.state_file}: unreadable lab state ({exc})"
            ) from None
        if data.get("version") != STATE_VERSION:
            raise OperationError(
                f"{self.state_file}: unknown lab state version {data.get('version')!r}"
            )
        # The state names the lab; a Lab object for the same workdir follows it.
        self.name = data["name"]
        return data

    def _save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    def _info(self, state: dict, already_up: bool = False) -> LabInfo:
        return LabInfo(
            name=state["name"],
            netns=state["netns"],
            workdir=str(self.workdir),
            inventory=state["inventory"],
            known_hosts=str(self.known_hosts),
            client_key=str(self.client_key),
            nodes=[LabNode(**n) for n in state["nodes"]],
            already_up=already_up,
        )

    def info(self) -> LabInfo:
        state = self._load()
        if state is None:
            raise OperationError(f"lab {self.name!r} is not up (no {self.state_file})")
        return self._info(state)

    def _node_owned(self, state: dict, pid: int | None) -> bool:
        """Is *pid* alive and in this lab's network namespace (not a recycled pid)?"""
        if not ns.pid_alive(pid):
            return False
        return ns.ns_inode(f"/proc/{pid}/ns/net") == state.get("netns_inode")

    # --- up -----------------------------------------------------------------

    def up(self, nodes: int = 3) -> LabInfo:
        """Bring the lab up; if it is already up, report it (``already_up=True``)."""
        if os.geteuid() != 0:
            raise OperationError("airgap lab needs root (namespaces, mounts)")
        layout = node_names(nodes)
        state = self._load()
        if state is not None:
            st = self.status()
            if st.up:
                return self._info(state, already_up=True)
            # Half up (a node died, the host rebooted): start over cleanly.
            self.down()
        if self.netns_path.exists():
            raise OperationError(
                f"network namespace {self.name!r} exists but is not this lab's "
                f"(no state in {self.workdir}); remove it or choose another name"
            )
        for tool in ("ip", "unshare", "nsenter", "ssh-keygen", "/usr/sbin/sshd"):
            if not shutil.which(tool):
                raise OperationError(f"required tool {tool!r} not found")

        workdir_created = not self.workdir.exists()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        netns_dir_was_mount = os.path.ismount(NETNS_DIR)
        inventory = self.inventory or (self.workdir / "hosts.yml")
        inv_previous = None
        if inventory != self.workdir / "hosts.yml" and inventory.exists():
            inv_previous = inventory.read_text()
        state = {
            "version": STATE_VERSION,
            "name": self.name,
            "netns": str(self.netns_path),
            "netns_inode": None,
            "netns_dir_was_mount": netns_dir_was_mount,
            "workdir_created": workdir_created,
            "inventory": str(inventory),
            "inventory_previous": inv_previous,
            "created": datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "nodes": [LabNode(n, a, g).to_dict() for n, a, g in layout],
        }
        self._save(state)  # from here on, down() can clean up whatever exists
        try:
            self._up(state)
        except BaseException:
            try:
                self.down()
            except Exception as exc:  # noqa: BLE001
                print(
                    f"airgap lab: cleanup after failed up also failed: {exc}",
                    file=sys.stderr,
                )
            raise
        return self._info(state)

    def _up(self, state: dict) -> None:
        ssh_dir = self.workdir / "ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cp").mkdir(exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        _ed25519_keygen(self.client_key, f"airgap-lab@{self.name}")
        client_pub = self.client_key.with_suffix(".pub").read_text()

        r = _run(["ip", "netns", "add", self.name])
        if r.returncode != 0:
            raise OperationError(f"ip netns add {self.name}: {r.stderr.strip()}")
        state["netns_inode"] = ns.ns_inode(str(self.netns_path))
        self._save(state)
        r = _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        if r.returncode != 0:
            raise OperationError(
                f"ip -n {self.name} link set lo up: {r.stderr.strip()}"
            )

        known = []
        for node in state["nodes"]:
            pub = self._prepare_node(
                node,
                client_pub,
                [(n["name"], n["address"], n["groups"]) for n in state["nodes"]],
            )
            known.append(f"{node['address']},{node['name']} {pub}")
        self.known_hosts.write_text("\n".join(known) + "\n")

        for node in state["nodes"]:
            self._start_node(state, node)
            self._save(state)
        self._write_inventory(state)
        deadline = time.monotonic() + 30
        for node in state["nodes"]:
            while (
                ns.ssh_banner(str(self.netns_path), node["address"], 22, timeout=1.0)
                is None
            ):
                if (
                    not self._node_owned(state, node["pid"])
                    or time.monotonic() > deadline
                ):
                    raise OperationError(
                        f"lab node {node['name']}: sshd on {node['address']}:22 did not come up; "
                        f"log:\n{self._log_tail(node['name'])}"
                    )
                time.sleep(0.1)

    def _node_dir(self, node: str) -> Path:
        return self.workdir / "nodes" / node

    def _log_tail(self, node: str, lines: int = 30) -> str:
        try:
            return "\n".join(
                (self._node_dir(node) / "init.log").read_text().splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def _prepare_node(self, node: dict, client_pub: str, all_nodes: list) -> str:
        """Write the node's seed tree and init config; return its host public key line."""
        d = self._node_dir(node["name"])
        seed = d / "seed"
        for sub in (
            "layer",
            "root",
            "containers",
            "containerd",
            "seed/etc/ssh",
            "seed/etc/containers",
            "seed/root/.ssh",
        ):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(seed / "root", 0o700)
        os.chmod(seed / "root/.ssh", 0o700)
        key = seed / "etc/ssh/ssh_host_ed25519_key"
        _ed25519_keygen(key, f"root@{node['name']}")
        pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        (seed / "etc/ssh/sshd_config").write_text(
            SSHD_CONFIG.format(address=node["address"])
        )
        ak = seed / "root/.ssh/authorized_keys"
        ak.write_text(client_pub)
        os.chmod(ak, 0o600)
        (seed / "etc/hostname").write_text(node["name"] + "\n")
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        hosts += [f"{a} {n}" for n, a, _ in all_nodes]
        (seed / "etc/hosts").write_text("\n".join(hosts) + "\n")
        (seed / "etc/containers/containers.conf").write_text(CONTAINERS_CONF)
        (seed / "etc/containers/storage.conf").write_text(STORAGE_CONF)
        # No name server exists on the isolated side.
        (seed / "etc/resolv.conf").write_text(
            "# airgap lab: no DNS on the isolated side\n"
        )
        for p in seed.rglob("*"):
            if p.is_dir() and p.name not in ("root", ".ssh"):
                os.chmod(p, 0o755)
        cfg = {
            "hostname": node["name"],
            "address": node["address"],
            "node_dir": str(d),
            "seed": str(seed),
            # A node of the enclave is installed without the host's external
            # package sources (its repositories come from the enclave),
            # without the host's services enabled at boot (the rollout
            # enables what the node runs) and without the host's root shell
            # start-up files (bash reads ~/.bashrc for every ssh command; a
            # developer's pyenv/cargo set-up there costs every module run
            # and can wait for a lock for a minute).
            "remove": [
                "/root/.bashrc",
                "/root/.profile",
                "/root/.bash_profile",
                "/etc/ssh/ssh_host_*",
                "/root/.ssh/authorized_keys*",
                "/etc/resolv.conf",
                "/etc/apt/sources.list",
                "/etc/apt/sources.list.d/*",
                "/etc/systemd/system/*.target.wants/*",
            ],
            # Image stores on the host's disk: overlayfs (podman's and containerd's
            # snapshotters) cannot stack on the node's overlay root.
            "binds": [[str(d / "containers"), "/var/lib/containers"],
                      [str(d / "containerd"), "/var/lib/containerd"]],
            "cgroups": "v1",
            "hide": [str(self.workdir)],
            "services": {
                "sshd": ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"]
            },
        }
        (d / "init.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return pub

    def _start_node(self, state: dict, node: dict) -> None:
        d = self._node_dir(node["name"])
        python = NODE_PYTHON if os.path.exists(NODE_PYTHON) else sys.executable
        argv = [
            "nsenter",
            f"--net={self.netns_path}",
            "--",
            "unshare",
            "--mount",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--propagation",
            "private",
            "--",
            python,
            "-I",
            ns.__file__,
            "node-init",
            str(d / "init.json"),
        ]
        with open(d / "init.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd="/",
            )
        node["launcher_pid"] = proc.pid
        _LAUNCHED[proc.pid] = proc
        deadline = time.monotonic() + 10
        while True:
            kids = ns.children(proc.pid)
            if kids:
                node["pid"] = kids[0]
                return
            if proc.poll() is not None:
                raise OperationError(
                    f"lab node {node['name']} failed to start (exit {proc.returncode}); "
                    f"log:\n{self._log_tail(node['name'])}"
                )
            if time.monotonic() > deadline:
                raise OperationError(f"lab node {node['name']}: init did not start")
            time.sleep(0.01)

    def _write_inventory(self, state: dict) -> None:
        text = render_inventory(
            self.workdir,
            state["name"],
            [(n["name"], n["address"], n["groups"]) for n in state["nodes"]],
        )
        for t in {self.workdir / "hosts.yml", Path(state["inventory"])}:
            t.parent.mkdir(parents=True, exist_ok=True)
            tmp = t.with_name(t.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, t)

    # --- status -------------------------------------------------------------

    def status(self) -> LabStatus:
        state = self._load()
        if state is None:
            return LabStatus(
                self.name, False, self.netns_path.exists(), str(self.workdir), []
            )
        inode = state.get("netns_inode")
        netns_ok = inode is not None and ns.ns_inode(state["netns"]) == inode
        out = []
        for n in state["nodes"]:
            running = self._node_owned(state, n.get("pid"))
            banner = (
                ns.ssh_banner(state["netns"], n["address"], 22)
                if running and netns_ok
                else None
            )
            out.append(
                NodeStatus(
                    n["name"],
                    n["address"],
                    n.get("pid"),
                    running,
                    banner is not None,
                    banner,
                )
            )
        up = netns_ok and bool(out) and all(s.running and s.sshd for s in out)
        return LabStatus(state["name"], up, netns_ok, str(self.workdir), out)

    # --- down ---------------------------------------------------------------

    def down(self) -> bool:
        """Remove everything ``up`` made.  Returns False if there was nothing to do."""
        state = self._load()
        if state is None:
            return False
        nodes = state.get("nodes", [])
        # Stop each node's init (it stops its services); then make sure.
        for n in nodes:
            if self._node_owned(state, n.get("pid")):
                os.kill(n["pid"], signal.SIGTERM)
        pids = [
            n[k]
            for n in nodes
            for k in ("pid", "launcher_pid")
            if n.get(k) and self._node_owned(state, n[k])
        ]
        deadline = time.monotonic() + 10
        while any(ns.pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in pids:
            if self._node_owned(state, p):
                os.kill(p, signal.SIGKILL)
        for (
            p
        ) in pids:  # reap our own children now (same process as up: tests, fixtures)
            proc = _LAUNCHED.pop(p, None)
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        # Anything else still in the lab's network namespace was started by us
        # (nsenter into a node, run_in_netns); the namespace is ours alone.
        inode = state.get("netns_inode")
        if inode is not None:
            for _ in range(50):
                left = [p for p in _pids_in_netns(inode)]
                if not left:
                    break
                for p in left:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        netns_file = Path(state["netns"])
        if (
            ns.ns_inode(str(netns_file)) is not None
            and ns.ns_inode(str(netns_file)) == inode
        ):
            r = _run(["ip", "netns", "delete", state["name"]])
            if r.returncode != 0:
                raise OperationError(
                    f"ip netns delete {state['name']}: {r.stderr.strip()}"
                )
        elif (
            netns_file.is_file()
            and not os.path.ismount(netns_file)
            and netns_file.stat().st_size == 0
        ):
            netns_file.unlink()  # the empty mount point left by a reboot or a crash of this lab
        if (
            not state.get("netns_dir_was_mount", True)
            and os.path.ismount(NETNS_DIR)
            and not any(NETNS_DIR.iterdir())
        ):
            _run(["umount", str(NETNS_DIR)])
        # Files: the inventory copy outside the workdir, then the workdir's content.
        inv = Path(state["inventory"])
        if inv.parent != self.workdir:
            prev = state.get("inventory_previous")
            if prev is not None:
                inv.write_text(prev)
            else:
                inv.unlink(missing_ok=True)
        for name in ("ssh", "cp", "nodes", "hosts.yml", "hosts.yml.tmp", "lab.tmp"):
            p = self.workdir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        self.state_file.unlink(missing_ok=True)
        if state.get("workdir_created"):
            try:
                self.workdir.rmdir()
            except OSError:
                pass  # someone put something else there: leave it
        return True

    # --- reboot -------------------------------------------------------------

    def restart(self, node: str, timeout: float = 30.0) -> None:
        """Reboot *node*: stop everything in it, start its init again on the same disk.

        What the node keeps is what a machine keeps over a reboot: its disk (the
        overlay's upper layer and its container storage); ``/run``, ``/tmp`` and
        every process are gone.  Returns when its sshd answers again.
        """
        state = self._load()
        if state is None:
            raise OperationError(f"lab {self.name!r} is not up")
        entry = next((n for n in state["nodes"] if n["name"] == node), None)
        if entry is None:
            raise UsageError(f"no lab node named {node!r}")
        pids = [p for p in (entry.get("pid"), entry.get("launcher_pid")) if p and self._node_owned(state, p)]
        if entry.get("pid") in pids:
            os.kill(entry["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(ns.pid_alive(p) for p in pids) and time.monotonic() < deadline:
            proc = _LAUNCHED.get(entry.get("launcher_pid"))
            if proc is not None and proc.poll() is not None:
                _LAUNCHED.pop(entry["launcher_pid"], None)
            time.sleep(0.05)
        for p in pids:
            if self._node_owned(state, p):
                os.kill(p, signal.SIGKILL)
        proc = _LAUNCHED.pop(entry.get("launcher_pid"), None)
        if proc is not None:
            proc.wait(timeout=5)
        self._start_node(state, entry)
        self._save(state)
        while ns.ssh_banner(str(self.netns_path), entry["address"], 22, timeout=1.0) is None:
            if not self._node_owned(state, entry["pid"]) or time.monotonic() > deadline:
                raise OperationError(
                    f"lab node {node}: sshd did not come back after the restart; log:\n{self._log_tail(node)}"
                )
            time.sleep(0.1)

    # --- running things in the lab ------------------------------------------

    def node_pid(self, node: str) -> int:
        state = self._load()
        if state is None:
            raise OperationError(f"lab {self.name!r} is not up")
        for n in state["nodes"]:
            if n["name"] == node:
                if not self._node_owned(state, n.get("pid")):
                    raise OperationError(f"lab node {node} is not running")
                return n["pid"]
        raise UsageError(f"no lab node named {node!r}")

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        input: bytes | str | None = None,
        timeout: float | None = None,
        capture: bool = True,
        text: bool | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        """Run *argv* inside *node* (all its namespaces, its root) as root, no ssh.

        Output is captured: a background process started this way must redirect its
        stdin/stdout/stderr (``cmd </dev/null >log 2>&1 &``), or this call waits for it.
        The node's PID 1 adopts and reaps it; ``down`` stops it.
        """
        pid = self.node_pid(node)
        node_env = {
            "PATH": NODE_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            **(env or {}),
        }
        full = [
            "nsenter",
            "-t",
            str(pid),
            "-a",
            "--",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in node_env.items()],
            *argv,
        ]
        if text is None:
            text = not isinstance(input, bytes)
        return subprocess.run(
            full,
            input=input,
            capture_output=capture,
            text=text,
            timeout=timeout,
            check=check,
            cwd="/",
        )

    def run_in_netns(
        self, argv: Sequence[str], *, check: bool = False, capture: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        """Run *argv* on the host's filesystem but inside the lab's network namespace."""
        state = self._load()
        netns = state["netns"] if state else str(self.netns_path)
        kw.setdefault("text", True)
        return subprocess.run(
            ["nsenter", f"--net={netns}", "--", *argv],
            check=check,
            capture_output=capture,
            **kw,
        )

    def ssh_argv(self, node: str) -> list[str]:
        """An OpenSSH command line (to run via :meth:`run_in_netns`) logging into *node*."""
        info = self.info()
        addr = info.node(node).address
        return [
            "ssh",
            "-i",
            str(self.client_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-F",
            "/dev/null",
            f"root@{addr}",
        ]

    def ssh(self, node: str, command: str, **kw) -> subprocess.CompletedProcess:
        return self.run_in_netns([*self.ssh_argv(node), command], **kw)

    def socket(self, host: str, port: int, timeout: float = 5.0):
        """A TCP socket connected from inside the lab's network namespace (e.g. for paramiko)."""
        return ns.netns_socket(self.info().netns, host, port, timeout)


def _pids_in_netns(inode: int) -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if ns.ns_inode(f"/proc/{entry}/ns/net") == inode:
            out.append(int(entry))
    return out
