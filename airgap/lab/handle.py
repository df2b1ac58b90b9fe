"""A lab on disk: its paths and state file, its status, and running things in it.

:class:`LabHandle` reads a lab that ``up`` made (``<workdir>/lab.json``) and
reaches into it (a node's namespaces, the lab's network namespace, ssh);
:class:`airgap.lab.Lab` adds bringing it up and down.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from airgap._internal import fsutil
from airgap.exceptions import OperationError, UsageError
from airgap.lab import ns
from airgap.lab.layout import (
    DEFAULT_NAME,
    DEFAULT_WORKDIR,
    NETNS_DIR,
    NODE_PATH,
    STATE_VERSION,
    LabInfo,
    LabNode,
    LabStatus,
    NodeStatus,
)


class LabHandle:
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
            raise UsageError(f"lab work dir {self.workdir}: must not contain whitespace (ssh options)")
        # ssh's ControlPath <workdir>/cp/<address> (+ a 17-byte temporary suffix
        # while ssh creates it) must fit a unix socket path (107 bytes).
        if len(str(self.workdir)) > 76:
            raise UsageError(f"lab work dir {self.workdir}: path longer than 76 characters")
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

    def _node_dir(self, node: str) -> Path:
        return self.workdir / "nodes" / node

    # --- state --------------------------------------------------------------

    def _load(self) -> dict | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise OperationError(f"{self.state_file}: unreadable lab state ({exc})") from None
        if data.get("version") != STATE_VERSION:
            raise OperationError(f"{self.state_file}: unknown lab state version {data.get('version')!r}")
        # The state names the lab; a Lab object for the same workdir follows it.
        self.name = data["name"]
        return data

    def _save(self, state: dict) -> None:
        fsutil.atomic_write(self.state_file, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())

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

    # --- status -------------------------------------------------------------

    def status(self) -> LabStatus:
        state = self._load()
        if state is None:
            return LabStatus(self.name, False, self.netns_path.exists(), str(self.workdir), [])
        inode = state.get("netns_inode")
        netns_ok = inode is not None and ns.ns_inode(state["netns"]) == inode
        out = []
        for n in state["nodes"]:
            running = self._node_owned(state, n.get("pid"))
            banner = ns.ssh_banner(state["netns"], n["address"], 22) if running and netns_ok else None
            out.append(NodeStatus(n["name"], n["address"], n.get("pid"), running, banner is not None, banner))
        up = netns_ok and bool(out) and all(s.running and s.sshd for s in out)
        return LabStatus(state["name"], up, netns_ok, str(self.workdir), out)

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
        node_env = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}
        full = ["nsenter", "-t", str(pid), "-a", "--", "env", "-i",
                *[f"{k}={v}" for k, v in node_env.items()], *argv]
        if text is None:
            text = not isinstance(input, bytes)
        return subprocess.run(full, input=input, capture_output=capture, text=text, timeout=timeout,
                              check=check, cwd="/")

    def run_in_netns(
        self, argv: Sequence[str], *, check: bool = False, capture: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        """Run *argv* on the host's filesystem but inside the lab's network namespace."""
        state = self._load()
        netns = state["netns"] if state else str(self.netns_path)
        kw.setdefault("text", True)
        return subprocess.run(["nsenter", f"--net={netns}", "--", *argv], check=check, capture_output=capture, **kw)

    def ssh_argv(self, node: str) -> list[str]:
        """An OpenSSH command line (to run via :meth:`run_in_netns`) logging into *node*."""
        addr = self.info().node(node).address
        return [
            "ssh", "-i", str(self.client_key),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-F", "/dev/null",
            f"root@{addr}",
        ]

    def ssh(self, node: str, command: str, **kw) -> subprocess.CompletedProcess:
        return self.run_in_netns([*self.ssh_argv(node), command], **kw)

    def socket(self, host: str, port: int, timeout: float = 5.0):
        """A TCP socket connected from inside the lab's network namespace (e.g. for paramiko)."""
        return ns.netns_socket(self.info().netns, host, port, timeout)
