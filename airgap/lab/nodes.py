"""One lab node on the host: its seed tree and init config, starting its init, its log.

A node is ``unshare --mount --pid --uts --ipc --fork`` joined to the lab's
network namespace, running :mod:`airgap.lab.ns` as its PID 1 (see the package
docstring for what that init does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from airgap.exceptions import OperationError
from airgap.lab import ns
from airgap.lab.layout import CONTAINERS_CONF, NODE_PYTHON, SSHD_CONFIG, STORAGE_CONF

# Launcher processes started by this Python process, so down() can reap them.
LAUNCHED: dict[int, subprocess.Popen] = {}

# A node of the enclave is installed without the host's external package
# sources (its repositories come from the enclave), without the host's services
# enabled at boot (the rollout enables what the node runs) and without the
# host's root shell start-up files (bash reads ~/.bashrc for every ssh command;
# a developer's pyenv/cargo set-up there costs every module run and can wait
# for a lock for a minute).
REMOVED_AT_INSTALL = (
    "/root/.bashrc",
    "/root/.profile",
    "/root/.bash_profile",
    "/etc/ssh/ssh_host_*",
    "/root/.ssh/authorized_keys*",
    "/etc/resolv.conf",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d/*",
    "/etc/systemd/system/*.target.wants/*",
)


def run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    check = kw.pop("check", False)
    return subprocess.run(list(argv), check=check, **kw)


def ed25519_keygen(path: Path, comment: str) -> None:
    """An unencrypted ed25519 key pair at *path* (lab keys: throw-away, root only)."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def log_tail(node_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join((node_dir / "init.log").read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_seed(seed: Path, node: dict, client_pub: str, all_nodes: list) -> str:
    """The files copied into the node's disk at its first boot; returns its host public key line."""
    key = seed / "etc/ssh/ssh_host_ed25519_key"
    ed25519_keygen(key, f"root@{node['name']}")
    pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    (seed / "etc/ssh/sshd_config").write_text(SSHD_CONFIG.format(address=node["address"]))
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
    (seed / "etc/resolv.conf").write_text("# airgap lab: no DNS on the isolated side\n")
    for p in seed.rglob("*"):
        if p.is_dir() and p.name not in ("root", ".ssh"):
            os.chmod(p, 0o755)
    return pub


def prepare(node_dir: Path, workdir: Path, node: dict, client_pub: str, all_nodes: list) -> str:
    """Write the node's seed tree and init config; return its host public key line."""
    seed = node_dir / "seed"
    for sub in ("layer", "root", "containers", "containerd", "seed/etc/ssh", "seed/etc/containers",
                "seed/root/.ssh"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(seed / "root", 0o700)
    os.chmod(seed / "root/.ssh", 0o700)
    pub = _write_seed(seed, node, client_pub, all_nodes)
    cfg = {
        "hostname": node["name"],
        "address": node["address"],
        "node_dir": str(node_dir),
        "seed": str(seed),
        "remove": list(REMOVED_AT_INSTALL),
        # Image stores on the host's disk: overlayfs (podman's and containerd's
        # snapshotters) cannot stack on the node's overlay root.
        "binds": [[str(node_dir / "containers"), "/var/lib/containers"],
                  [str(node_dir / "containerd"), "/var/lib/containerd"]],
        "cgroups": "v1",
        "hide": [str(workdir)],
        "services": {"sshd": ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"]},
    }
    (node_dir / "init.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return pub


def start(netns_path: Path, node_dir: Path, node: dict) -> None:
    """Start the node's init; sets ``node["launcher_pid"]`` and ``node["pid"]`` (its PID 1 on the host)."""
    python = NODE_PYTHON if os.path.exists(NODE_PYTHON) else sys.executable
    argv = ["nsenter", f"--net={netns_path}", "--",
            "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "--propagation", "private", "--",
            python, "-I", ns.__file__, "node-init", str(node_dir / "init.json")]
    with open(node_dir / "init.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd="/")
    node["launcher_pid"] = proc.pid
    LAUNCHED[proc.pid] = proc
    deadline = time.monotonic() + 10
    while True:
        kids = ns.children(proc.pid)
        if kids:
            node["pid"] = kids[0]
            return
        if proc.poll() is not None:
            raise OperationError(
                f"lab node {node['name']} failed to start (exit {proc.returncode}); "
                f"log:\n{log_tail(node_dir)}"
            )
        if time.monotonic() > deadline:
            raise OperationError(f"lab node {node['name']}: init did not start")
        time.sleep(0.01)


def reap(pid: int | None) -> None:
    """Wait for a launcher this process started (so it leaves no zombie)."""
    proc = LAUNCHED.pop(pid, None) if pid is not None else None
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def pids_in_netns(inode: int) -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if ns.ns_inode(f"/proc/{entry}/ns/net") == inode:
            out.append(int(entry))
    return out
