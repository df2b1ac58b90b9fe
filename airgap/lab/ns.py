"""Linux namespace helpers for the lab (private; stdlib only).

Two halves live here:

* host-side helpers used by :mod:`airgap.lab`: ``setns`` through ctypes, a socket
  opened inside a named network namespace (for status probes and paramiko), and
  small /proc readers;
* the **node init**: ``python3 ns.py node-init CONFIG.json``.  It runs as PID 1 of
  a fresh PID namespace (started by ``unshare --mount --pid --uts --ipc --fork``
  inside the lab's network namespace), builds the node's root filesystem and
  then supervises the node's services (``sshd``) and reaps orphans until it is
  told to stop (SIGTERM/SIGINT), at which point it terminates everything in the
  node and exits; the kernel then tears the namespaces down.

This file must stay importable and runnable by a bare ``/usr/bin/python3``: it
imports nothing from airgap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(
    source: str,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {fstype or ''} {source} on {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:  # pragma: no cover - other architectures
        subprocess.run(["pivot_root", new_root, put_old], check=True)
        return
    _check(_libc.syscall(nr, new_root.encode(), put_old.encode()), "pivot_root")


# --- host side --------------------------------------------------------------


def ns_inode(path: str) -> int | None:
    """Inode of a namespace file (``/run/netns/X`` or ``/proc/PID/ns/net``), or None."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(task) as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            pass
    return out


def run_in_thread_netns(netns_path: str, func):
    """Call ``func()`` in a helper thread that has joined *netns_path*.

    setns(CLONE_NEWNET) is per thread, so the rest of the process keeps its
    network namespace; sockets created by ``func`` stay in the lab's namespace
    for their whole life and may be used from any thread.
    """
    box: dict = {}

    def target():
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="airgap-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def netns_socket(
    netns_path: str, host: str, port: int, timeout: float = 5.0
) -> socket.socket:
    """A TCP socket connected to ``host:port`` from inside the network namespace."""
    return run_in_thread_netns(
        netns_path, lambda: socket.create_connection((host, port), timeout=timeout)
    )


def ssh_banner(
    netns_path: str, host: str, port: int = 22, timeout: float = 2.0
) -> str | None:
    """The server's SSH identification line, or None if nothing answers."""
    try:
        sock = netns_socket(netns_path, host, port, timeout)
    except OSError:
        return None
    try:
        sock.settimeout(timeout)
        data = b""
        while b"\n" not in data and len(data) < 512:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        return line if line.startswith("SSH-") else None
    except OSError:
        return None
    finally:
        sock.close()


# --- node init (runs inside the node's namespaces) ---------------------------


def _log(msg: str) -> None:
    sys.stdout.write(f"[node-init {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()


def _seed_copy(src: str, dst: str) -> None:
    """Copy the seed tree into the new root (i.e. into the overlay's upper layer).

    Existing directories keep their mode/owner; files are replaced.
    """
    for dirpath, _dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        if not os.path.isdir(target_dir):
            os.makedirs(target_dir)
            shutil.copymode(dirpath, target_dir)
        for name in filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(target_dir, name)
            if os.path.lexists(d):
                os.unlink(d)
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
            else:
                shutil.copy2(s, d)
                os.chown(d, 0, 0)


def _make_dev(root: str) -> None:
    dev = os.path.join(root, "dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in ("null", "zero", "full", "random", "urandom", "tty", "fuse", "net/tun"):
        src = "/dev/" + name
        if not os.path.exists(src):
            continue
        dst = os.path.join(dev, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w"):
            pass
        mount(src, dst, None, MS_BIND)
    os.makedirs(os.path.join(dev, "pts"))
    mount(
        "devpts",
        os.path.join(dev, "pts"),
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    mount(
        "shm",
        os.path.join(dev, "shm"),
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        "mode=1777,size=65536k",
    )
    os.makedirs(os.path.join(dev, "mqueue"))
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    os.symlink("/proc/kcore", os.path.join(dev, "core"))


def _host_cgroup_v1() -> list[str]:
    """Mount points of the host's cgroup v1 hierarchies (cpu, memory, name=systemd, ...)."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and fields[4].startswith("/sys/fs/cgroup/"):
                out.append(fields[4])
    return out


def _mount_cgroups(target: str, mode: str) -> None:
    """The node's /sys/fs/cgroup: the host's v1 hierarchies, never the unified cgroup2 mount.

    crun insists that /sys/fs/cgroup is a cgroup2 or a tmpfs (v1) mount.  On
    this hybrid host podman and runc misbehave when both a v1 hierarchy and the
    cgroup2 mount at /sys/fs/cgroup/unified are visible, so a node sees a tmpfs
    with the v1 hierarchies bound in (``v1``: pods and containers get real
    cgroups, cgroupfs manager) or an empty one (``none``: runtimes must run with
    cgroups disabled).  On a cgroup2-only host ``v1`` binds the unified tree.
    """
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    hierarchies = _host_cgroup_v1() if mode == "v1" else []
    if mode == "v1" and not hierarchies and os.path.ismount("/sys/fs/cgroup"):
        mount("/sys/fs/cgroup", target, None, MS_BIND | MS_REC)
        return
    mount("cgroup", target, "tmpfs", flags, "mode=755,size=4k")
    for path in hierarchies:
        sub = os.path.join(target, os.path.basename(path))
        os.makedirs(sub, exist_ok=True)
        mount(path, sub, None, MS_BIND)
    mount("cgroup", target, None, MS_REMOUNT | MS_RDONLY | flags)


def _build_root(cfg: dict) -> None:
    node_dir = cfg["node_dir"]
    layer = os.path.join(node_dir, "layer")
    root = os.path.join(node_dir, "root")
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    # The writable layer is the node's disk: on the host's disk under the lab's
    # work directory (hidden from every node), so it survives a restart of the
    # node -- a reboot -- and disappears with the lab.
    first_boot = not os.path.isdir(os.path.join(layer, "upper"))
    os.makedirs(os.path.join(layer, "upper"), mode=0o755, exist_ok=True)
    os.makedirs(os.path.join(layer, "work"), mode=0o700, exist_ok=True)
    # lowerdir=/ is the host's root filesystem only: submounts (/proc, /sys,
    # /dev) are not part of it.
    mount(
        "airgap-lab",
        root,
        "overlay",
        0,
        f"lowerdir=/,upperdir={layer}/upper,workdir={layer}/work",
    )
    if first_boot:  # install the node: what the seed replaces or removes, once
        for pattern in cfg.get("remove", []):
            for p in glob.glob(root + pattern):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        _seed_copy(cfg["seed"], root)

    mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # A fresh sysfs: shows this network namespace's devices (only lo) and no
    # cgroup mounts at all -- in particular not the host's cgroup2 at
    # /sys/fs/cgroup/unified, which makes podman on this hybrid host misbehave.
    mount(
        "sysfs",
        os.path.join(root, "sys"),
        "sysfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
    )
    _mount_cgroups(os.path.join(root, "sys/fs/cgroup"), cfg.get("cgroups", "v1"))
    _make_dev(root)
    mount("tmpfs", os.path.join(root, "run"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for d in ("lock", "sshd", "user"):
        os.makedirs(os.path.join(root, "run", d), exist_ok=True)
    os.chmod(os.path.join(root, "run", "sshd"), 0o755)
    mount(
        "tmpfs", os.path.join(root, "tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"
    )
    for src, dst in cfg.get("binds", []):
        target = root + dst
        os.makedirs(target, exist_ok=True)
        mount(src, target, None, MS_BIND | MS_REC)
    # Hide the lab's own work directory (keys, other nodes' storage, state).
    for p in cfg.get("hide", []):
        if os.path.isdir(root + p):
            mount("tmpfs", root + p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4k")

    old = os.path.join(root, ".airgap-oldroot")
    os.makedirs(old, exist_ok=True)
    os.chdir(root)
    pivot_root(".", ".airgap-oldroot")
    os.chdir("/")
    umount("/.airgap-oldroot", MNT_DETACH)
    os.rmdir("/.airgap-oldroot")


class _Supervisor:
    def __init__(self, services: dict[str, list[str]], env: dict[str, str]):
        self.services = services
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, list[float]] = {}
        self.stopping = False

    def start(self, name: str) -> None:
        argv = self.services[name]
        _log(f"starting {name}: {' '.join(argv)}")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdin=subprocess.DEVNULL, cwd="/"
        )

    def on_exit(self, pid: int, status: int) -> None:
        for name, proc in list(self.procs.items()):
            if proc.pid != pid:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            del self.procs[name]
            if self.stopping:
                return
            _log(f"{name} exited ({proc.returncode}); restarting")
            recent = [
                t for t in self.restarts.get(name, []) if time.time() - t < 60
            ] + [time.time()]
            self.restarts[name] = recent
            if len(recent) > 5:
                _log(f"{name} keeps failing; giving up on it")
                return
            time.sleep(0.5)
            self.start(name)

    def stop(self, *_args) -> None:
        self.stopping = True


def _reap(sup: _Supervisor) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sup.on_exit(pid, status)


WANTS_DIRS = (
    "/etc/systemd/system/default.target.wants",
    "/etc/systemd/system/multi-user.target.wants",
)


def _unit_service(path: str) -> dict:
    """The [Service] keys of a systemd unit (a small subset: Type, Environment, ExecStart)."""
    out: dict = {"Environment": {}}
    section = ""
    with open(path) as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            if section != "Service":
                continue
            if key == "Environment":
                for item in shlex.split(value):
                    k, _, v = item.partition("=")
                    out["Environment"][k] = v
            else:
                out[key] = value
    return out


def _expand(argv: list[str], env: dict) -> list[str]:
    """systemd's $VAR (split into words) and ${VAR} (one word) in ExecStart."""
    out: list[str] = []
    for word in argv:
        if word.startswith("$") and not word.startswith("${") and word[1:] in env:
            out.extend(env[word[1:]].split())
        else:
            out.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return out


def boot_units(env: dict) -> dict[str, list[str]]:
    """Start what is enabled for boot, as systemd would: oneshot units run now,
    other units are returned as services to supervise (the lab has no systemd;
    roles enable units the way ``systemctl enable`` does, with a wants link)."""
    services: dict[str, list[str]] = {}
    for wants in WANTS_DIRS:
        for link in sorted(glob.glob(os.path.join(wants, "*.service"))):
            name = os.path.basename(link)
            try:
                unit = _unit_service(os.path.realpath(link))
            except OSError as exc:
                _log(f"boot: {name}: {exc}")
                continue
            argv = _expand(shlex.split(unit.get("ExecStart", "").lstrip("-@")), unit["Environment"])
            if not argv:
                continue
            if unit.get("Type", "simple") == "oneshot":
                _log(f"boot: {name}: {' '.join(argv)}")
                proc = subprocess.run(argv, env={**env, **unit["Environment"]}, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, cwd="/")
                _log(f"boot: {name}: exit {proc.returncode} {(proc.stdout + proc.stderr).strip()[-500:]}")
            else:
                services[name] = argv
    return services


def node_init(config_path: str) -> int:
    with open(config_path) as fh:
        cfg = json.load(fh)
    _log(f"node {cfg['hostname']} pid-in-ns={os.getpid()}")
    socket.sethostname(cfg["hostname"])
    _build_root(cfg)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
    }
    sup = _Supervisor(cfg.get("services", {}), env)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    for name in sup.services:
        sup.start(name)
    for name, argv in boot_units(env).items():
        sup.services[name] = argv
        sup.start(name)
    _log("ready")
    # PID 1: reap every orphan; stop on SIGTERM (the handler only sets a flag,
    # so poll instead of blocking in waitpid, which PEP 475 would restart).
    while not sup.stopping:
        _reap(sup)
        time.sleep(0.2)
    _log("stopping: SIGTERM to every process in the node")
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    else:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _log("stopped")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "node-init":
        try:
            sys.exit(node_init(sys.argv[2]))
        except Exception as exc:  # noqa: BLE001 - PID 1 reports and exits
            _log(f"FAILED: {type(exc).__name__}: {exc}")
            sys.exit(1)
    print("usage: ns.py node-init CONFIG.json", file=sys.stderr)
    sys.exit(2)
