"""Bringing a lab up, down, and rebooting one of its nodes."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from airgap._internal import fsutil, timefmt
from airgap.exceptions import OperationError, UsageError
from airgap.lab import nodes as nodemod
from airgap.lab import ns
from airgap.lab.handle import LabHandle
from airgap.lab.layout import NETNS_DIR, STATE_VERSION, LabInfo, LabNode, node_names, render_inventory


class Lab(LabHandle):
    """One lab: a network namespace and its nodes, described by ``<workdir>/lab.json``."""

    # --- up -----------------------------------------------------------------

    def up(self, nodes: int = 3) -> LabInfo:
        """Bring the lab up; if it is already up, report it (``already_up=True``)."""
        if os.geteuid() != 0:
            raise OperationError("airgap lab needs root (namespaces, mounts)")
        layout = node_names(nodes)
        state = self._load()
        if state is not None:
            if self.status().up:
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
        state = self._new_state(layout)
        self._save(state)  # from here on, down() can clean up whatever exists
        try:
            self._up(state)
        except BaseException:
            try:
                self.down()
            except Exception as exc:  # noqa: BLE001
                print(f"airgap lab: cleanup after failed up also failed: {exc}", file=sys.stderr)
            raise
        return self._info(state)

    def _new_state(self, layout: list[tuple[str, str, list[str]]]) -> dict:
        workdir_created = not self.workdir.exists()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        inventory = self.inventory or (self.workdir / "hosts.yml")
        inv_previous = None
        if inventory != self.workdir / "hosts.yml" and inventory.exists():
            inv_previous = inventory.read_text()
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "netns": str(self.netns_path),
            "netns_inode": None,
            "netns_dir_was_mount": os.path.ismount(NETNS_DIR),
            "workdir_created": workdir_created,
            "inventory": str(inventory),
            "inventory_previous": inv_previous,
            "created": timefmt.now(),
            "nodes": [LabNode(n, a, g).to_dict() for n, a, g in layout],
        }

    def _up(self, state: dict) -> None:
        ssh_dir = self.workdir / "ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cp").mkdir(exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        nodemod.ed25519_keygen(self.client_key, f"airgap-lab@{self.name}")
        client_pub = self.client_key.with_suffix(".pub").read_text()

        r = nodemod.run(["ip", "netns", "add", self.name])
        if r.returncode != 0:
            raise OperationError(f"ip netns add {self.name}: {r.stderr.strip()}")
        state["netns_inode"] = ns.ns_inode(str(self.netns_path))
        self._save(state)
        r = nodemod.run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        if r.returncode != 0:
            raise OperationError(f"ip -n {self.name} link set lo up: {r.stderr.strip()}")

        layout = [(n["name"], n["address"], n["groups"]) for n in state["nodes"]]
        known = []
        for node in state["nodes"]:
            pub = nodemod.prepare(self._node_dir(node["name"]), self.workdir, node, client_pub, layout)
            known.append(f"{node['address']},{node['name']} {pub}")
        self.known_hosts.write_text("\n".join(known) + "\n")

        for node in state["nodes"]:
            nodemod.start(self.netns_path, self._node_dir(node["name"]), node)
            self._save(state)
        self._write_inventory(state)
        deadline = time.monotonic() + 30
        for node in state["nodes"]:
            self._wait_sshd(state, node, deadline, "did not come up")

    def _wait_sshd(self, state: dict, node: dict, deadline: float, what: str) -> None:
        while ns.ssh_banner(str(self.netns_path), node["address"], 22, timeout=1.0) is None:
            if not self._node_owned(state, node["pid"]) or time.monotonic() > deadline:
                raise OperationError(
                    f"lab node {node['name']}: sshd on {node['address']}:22 {what}; "
                    f"log:\n{nodemod.log_tail(self._node_dir(node['name']))}"
                )
            time.sleep(0.1)

    def _write_inventory(self, state: dict) -> None:
        text = render_inventory(
            self.workdir, state["name"], [(n["name"], n["address"], n["groups"]) for n in state["nodes"]]
        )
        for t in {self.workdir / "hosts.yml", Path(state["inventory"])}:
            t.parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write(t, text.encode())

    # --- down ---------------------------------------------------------------

    def down(self) -> bool:
        """Remove everything ``up`` made.  Returns False if there was nothing to do."""
        state = self._load()
        if state is None:
            return False
        self._stop_nodes(state)
        self._remove_netns(state)
        self._remove_files(state)
        return True

    def _stop_nodes(self, state: dict) -> None:
        nodes = state.get("nodes", [])
        # Stop each node's init (it stops its services); then make sure.
        for n in nodes:
            if self._node_owned(state, n.get("pid")):
                os.kill(n["pid"], signal.SIGTERM)
        pids = [n[k] for n in nodes for k in ("pid", "launcher_pid") if n.get(k) and self._node_owned(state, n[k])]
        deadline = time.monotonic() + 10
        while any(ns.pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in pids:
            if self._node_owned(state, p):
                os.kill(p, signal.SIGKILL)
        for p in pids:  # reap our own children now (same process as up: tests, fixtures)
            nodemod.reap(p)
        # Anything else still in the lab's network namespace was started by us
        # (nsenter into a node, run_in_netns); the namespace is ours alone.
        inode = state.get("netns_inode")
        if inode is None:
            return
        for _ in range(50):
            left = nodemod.pids_in_netns(inode)
            if not left:
                break
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def _remove_netns(self, state: dict) -> None:
        inode = state.get("netns_inode")
        netns_file = Path(state["netns"])
        if inode is not None and ns.ns_inode(str(netns_file)) == inode:
            r = nodemod.run(["ip", "netns", "delete", state["name"]])
            if r.returncode != 0:
                raise OperationError(f"ip netns delete {state['name']}: {r.stderr.strip()}")
        elif netns_file.is_file() and not os.path.ismount(netns_file) and netns_file.stat().st_size == 0:
            netns_file.unlink()  # the empty mount point left by a reboot or a crash of this lab
        if (
            not state.get("netns_dir_was_mount", True)
            and os.path.ismount(NETNS_DIR)
            and not any(NETNS_DIR.iterdir())
        ):
            nodemod.run(["umount", str(NETNS_DIR)])

    def _remove_files(self, state: dict) -> None:
        # The inventory copy outside the workdir, then the workdir's content.
        inv = Path(state["inventory"])
        if inv.parent != self.workdir:
            prev = state.get("inventory_previous")
            if prev is not None:
                inv.write_text(prev)
            else:
                inv.unlink(missing_ok=True)
        for name in ("ssh", "cp", "nodes", "hosts.yml"):
            p = self.workdir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        for p in self.workdir.glob(".*.tmp"):  # an atomic write cut short
            p.unlink()
        self.state_file.unlink(missing_ok=True)
        if state.get("workdir_created"):
            try:
                self.workdir.rmdir()
            except OSError:
                pass  # someone put something else there: leave it

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
            proc = nodemod.LAUNCHED.get(entry.get("launcher_pid"))
            if proc is not None and proc.poll() is not None:
                nodemod.LAUNCHED.pop(entry["launcher_pid"], None)
            time.sleep(0.05)
        for p in pids:
            if self._node_owned(state, p):
                os.kill(p, signal.SIGKILL)
        nodemod.reap(entry.get("launcher_pid"))
        nodemod.start(self.netns_path, self._node_dir(node), entry)
        self._save(state)
        self._wait_sshd(state, entry, deadline, "did not come back after the restart")
