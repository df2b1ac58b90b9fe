"""What a lab is made of: its nodes and addresses, the files written into them, its inventory.

No I/O here: the data classes that ``up``/``status`` return, the node layout
(:func:`node_names`) and the Ansible inventory text (:func:`render_inventory`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from airgap.exceptions import UsageError

DEFAULT_NAME = "airgap-lab"
DEFAULT_WORKDIR = Path("/var/lib/airgap-lab")
DEFAULT_INVENTORY = Path("inventories/lab/hosts.yml")
SUBNET = "127.0.10"
NETNS_DIR = Path("/run/netns")
STATE_VERSION = 1
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_PYTHON = "/usr/bin/python3"

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
        "# Generated by `airgap lab up` (airgap/lab/); do not edit.  Ansible must run",
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
