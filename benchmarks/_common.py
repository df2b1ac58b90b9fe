"""Shared helpers for the airgap benchmarks (build.py, verify.py, import.py).

Everything measured runs as a separate process: the real ``airgap`` CLI from the
venv and the competitors (skopeo, sha256sum, a hashlib thread pool).  Wall time
is taken around the process; peak RSS is ``ru_maxrss`` from ``wait4`` of that very
process, collected by GNU ``time`` as a ~1 MiB launcher (see :func:`run_group` for
why not straight from this driver: exec carries the parent's RSS into the child's
``ru_maxrss``), so the figure is the process's own, not the benchmark driver's.

Only loopback is used: registries are Debian's ``docker-registry`` started by the
script itself on free 127.0.0.1 ports (tests/fixtures/registry.py), and every
temporary directory and registry is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VENV_PY = REPO / ".venv" / "bin" / "python"
AIRGAP_BIN = REPO / ".venv" / "bin" / "airgap"
PASSPHRASE = "bench"
TARGET = "geheim-pilot"
GiB = 1024 ** 3
MiB = 1024 ** 2


# --------------------------------------------------------------------------- processes


@dataclass
class Run:
    label: str
    cmd: list[str]
    seconds: float
    maxrss_kib: int  # peak RSS of the process (largest of the processes for a parallel group)
    rc: int
    out: str = ""
    err: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_kib / 1024


def airgap_cmd(*args: str | os.PathLike) -> list[str]:
    exe = str(AIRGAP_BIN) if AIRGAP_BIN.exists() else None
    base = [exe] if exe else [str(VENV_PY), "-m", "airgap"]
    return base + [str(a) for a in args]


def bench_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["AIRGAP_PASSPHRASE"] = PASSPHRASE
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Never let a proxy setting route loopback traffic elsewhere.
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.0/8,localhost"
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # use the bytecode compiled at set-up (see Bench.__enter__)
    env.update(extra or {})
    return env


TIME_BIN = "/usr/bin/time"


def run_group(label: str, cmds: Sequence[Sequence[str]], *, cwd: Path | None = None, env: dict | None = None,
              check: bool = True, timeout: float = 3600) -> Run:
    """Start every command at once, wait for all; wall time of the group, max RSS of any.

    Peak RSS: Linux carries the exec-ing task's old address space high-water mark into
    ``ru_maxrss`` (``exec_mmap`` -> ``setmax_mm_hiwater_rss``), and a child spawned by
    this Python driver (vfork/posix_spawn share its mm) would report at least the
    driver's own RSS.  So every command is started through GNU ``time`` (a ~1 MiB C
    program) and its ``os.wait4`` figure of the command is read back (``%M``, KiB):
    the RSS floor is then ~1 MiB instead of the driver's size.  The driver's own
    ``os.wait4`` of the time process is the fallback when /usr/bin/time is absent.
    """
    env = env or bench_env()
    logs, procs, rssfiles = [], [], []
    use_time = os.access(TIME_BIN, os.X_OK)
    t0 = time.perf_counter()
    for c in cmds:
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        logs.append((out, err))
        argv = list(map(str, c))
        if use_time:
            fd, rf = tempfile.mkstemp(prefix="airgap-bench-rss-")
            os.close(fd)
            rssfiles.append(rf)
            argv = [TIME_BIN, "-f", "%M", "-o", rf, *argv]
        procs.append(subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env, stdin=subprocess.DEVNULL))
    rcs, rss = [], []
    deadline = t0 + timeout
    for p in procs:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                for q in procs:
                    with contextlib.suppress(ProcessLookupError):
                        q.kill()
                raise RuntimeError(f"{label}: timed out after {timeout}s")
            time.sleep(0.002)
        p.returncode = os.waitstatus_to_exitcode(status)
        rcs.append(p.returncode)
        rss.append(ru.ru_maxrss)
    seconds = time.perf_counter() - t0
    if use_time:
        measured = []
        for rf, fallback in zip(rssfiles, rss):
            try:
                lines = [x for x in Path(rf).read_text().split() if x.isdigit()]
                measured.append(int(lines[-1]) if lines else fallback)
            finally:
                os.unlink(rf)
        rss = measured
    outs, errs = [], []
    for out, err in logs:
        out.seek(0)
        err.seek(0)
        outs.append(out.read().decode(errors="replace"))
        errs.append(err.read().decode(errors="replace"))
        out.close()
        err.close()
    rc = max(rcs, key=abs)
    run = Run(label, [" ".join(map(str, c)) for c in cmds][0] if len(cmds) == 1 else f"{len(cmds)} parallel",
              seconds, max(rss), rc, "\n".join(outs), "\n".join(errs))
    if check and rc != 0:
        raise RuntimeError(f"{label} failed (rc={rc}): {' '.join(map(str, cmds[rcs.index(rc)]))}\n{run.err[-3000:]}")
    return run


def run_one(label: str, cmd: Sequence[str], **kw) -> Run:
    return run_group(label, [cmd], **kw)


def run_sequence(label: str, cmds: Sequence[Sequence[str]], **kw) -> Run:
    """Run commands one after the other (as a user would); total time, max RSS of any."""
    total, rss, errs = 0.0, 0, []
    for c in cmds:
        r = run_one(label, c, **kw)
        total += r.seconds
        rss = max(rss, r.maxrss_kib)
        errs.append(r.err)
    return Run(label, f"{len(cmds)} sequential", total, rss, 0, err="\n".join(errs))


# --------------------------------------------------------------------------- workspace


class Bench:
    """Work directory + cleanup stack; registries and temp dirs go away at exit."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.keep = args.keep
        base = Path(args.workdir) if args.workdir else None
        if base:
            base.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"airgap-bench-{name}-", dir=base))
        self.stack = contextlib.ExitStack()
        self._registries = []

    def __enter__(self) -> Bench:
        # SIGTERM/SIGHUP run the same cleanup as Ctrl-C.
        def _raise(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, _raise)
        # airgap runs as installed: pip compiles a wheel's modules at install time,
        # while an editable install under PYTHONDONTWRITEBYTECODE=1 would recompile
        # every module on every run and time the compiler, not airgap.
        import compileall

        compileall.compile_dir(str(REPO / "airgap"), quiet=1)
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()
        if self.keep:
            print(f"[kept] work directory {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def registry(self, name: str):
        """A fresh loopback docker-registry with storage under the work dir."""
        from tests.fixtures.registry import start_registry

        reg = start_registry(self.path("registries", name))
        self._registries.append(reg)
        self.stack.callback(reg.close)
        return reg

    def drop_registry(self, reg) -> None:
        reg.close()
        shutil.rmtree(reg.root, ignore_errors=True)


def add_common_args(p: argparse.ArgumentParser, default_size: str) -> None:
    p.add_argument("--size-gib", default=default_size, help=f"GiB of layer data (default {default_size})")
    p.add_argument("--keep", action="store_true", help="keep the work directory (registries are always stopped)")
    p.add_argument("--workdir", help="parent directory for the work directory (default: $TMPDIR or /tmp)")
    p.add_argument("--repeat", type=int, default=2,
                   help="timed runs per contender, alternating order, best one reported (default 2)")
    p.add_argument("--cold", action="store_true",
                   help="evict the inputs from the page cache (sync + POSIX_FADV_DONTNEED) before every timed run")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def enough_disk(path: Path, need: float) -> bool:
    """True if *need* bytes fit under *path*; otherwise say so on stderr."""
    if free_bytes(path) >= need:
        return True
    print(f"not enough disk under {path}: need ~{need / GiB:.1f} GiB", file=sys.stderr)
    return False


def evict(paths: Iterable[Path]) -> None:
    """Best effort 'cold cache' without root: sync, then drop clean pages of these files."""
    os.sync()
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and not f.is_symlink()]
        for f in files:
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------- content


@dataclass
class Corpus:
    layout: Path
    tags: list[str]  # tags in the layout, one per image
    layer_bytes: int  # unique layer bytes
    layers: int  # unique layers
    built: dict


def make_corpus(layout: Path, total_bytes: int, *, images: int = 4, layers_per_image: int = 4,
                workers: int = 2) -> Corpus:
    """``images`` images x ``layers_per_image`` uncompressed random layers; layer 0 is shared
    by every image.  Layer size is chosen so the unique layer bytes are >= total_bytes."""
    from tests.fixtures.images import ImageSpec, build_oci_layout, make_random_layer

    unique = 1 + images * (layers_per_image - 1)
    size = math.ceil(total_bytes / unique / MiB) * MiB
    src = layout.parent / (layout.name + "-layers")
    src.mkdir(parents=True, exist_ok=True)
    jobs = [src / f"layer-{i:03d}.tar" for i in range(unique)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        layers = list(pool.map(lambda p: make_random_layer(p, size), jobs))
    shared = layers[0]
    specs = {}
    for i in range(images):
        own = layers[1 + i * (layers_per_image - 1): 1 + (i + 1) * (layers_per_image - 1)]
        specs[f"img{i}"] = ImageSpec(layers=[shared, *own], cmd=(f"/bin/app{i}",))
    built = build_oci_layout(layout, specs)  # hard-links the layer files into blobs/
    shutil.rmtree(src)
    total = sum(l.size for l in layers)
    log(f"corpus: {images} images x {layers_per_image} layers, {unique} unique layers of {size // MiB} MiB "
        f"= {total / GiB:.2f} GiB in {time.perf_counter() - t0:.1f}s")
    return Corpus(layout, sorted(specs), total, unique, built)


def push_corpus(corpus: Corpus, reg, repo_prefix: str = "bench") -> list[str]:
    """Push every image of the layout with skopeo; returns the registry references."""
    from tests.fixtures.images import push_layout

    refs = []
    for tag in corpus.tags:
        push_layout(corpus.layout, tag, reg.host, f"{repo_prefix}/{tag}", dest_tag="1.0")
        refs.append(f"{reg.host}/{repo_prefix}/{tag}:1.0")
    return refs


@dataclass
class Keys:
    builder: Path
    officer: Path
    trust: Path


def make_keys(d: Path) -> Keys:
    """builder, officer and root keys (encrypted, minimum Argon2id cost) and a signed trust policy."""
    from airgap.keys import KDF_MIN, SigningKey, keygen
    from airgap.trust import TrustPolicy

    d.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name in ("root-1", "builder-1", "officer-1"):
        kp, _ = keygen(name, d, PASSPHRASE, kdf_limits=KDF_MIN)
        keys[name] = SigningKey.load(kp, lambda: PASSPHRASE)
    policy = TrustPolicy.create(TARGET, "2099-01-01T00:00:00Z",
                                [keys["root-1"].public_key], 1,
                                [keys["builder-1"].public_key], 1,
                                [keys["officer-1"].public_key], 1)
    policy.sign(keys["root-1"])
    trust = d / "trust.json"
    trust.write_bytes(policy.to_bytes())
    return Keys(d / "builder-1.key", d / "officer-1.key", trust)


def write_spec(d: Path, image_refs: Sequence[str], *, name: str = "bench") -> Path:
    from tests.helpers import write_spec as _write_spec

    return _write_spec(d, name=name, target=TARGET, images=list(image_refs), files=[])


def build_bundle_from_layout(workdir: Path, corpus: Corpus, keys: Keys, out: Path, *, name: str = "bench") -> Run:
    """airgap build from the local OCI layout (no registry; spec written in *workdir*), then officer countersign."""
    rel = os.path.relpath(corpus.layout, workdir)
    spec = write_spec(workdir, [f"oci:{rel}:{t}" for t in corpus.tags], name=name)
    r = run_one("airgap build (oci layout)", airgap_cmd("build", spec, "-o", out, "--key", keys.builder, "--quiet"),
               cwd=workdir)
    run_one("airgap sign", airgap_cmd("sign", out, "--key", keys.officer, "--yes", "--quiet"))
    return r


def tar_members(bundle: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every member, read with Python's tarfile (not airgap's code)."""
    import tarfile

    with tarfile.open(bundle, "r:") as tf:
        return [(m.name, m.offset_data, m.size) for m in tf.getmembers()]


# --------------------------------------------------------------------------- output


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds if seconds > 0 else float("inf")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def best(runs: Sequence[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def alternate(repeat: int, contenders: Sequence[str]) -> list[str]:
    """A B, B A, A B ...: neither contender always runs first (warm cache, turbo, ...)."""
    order: list[str] = []
    for i in range(repeat):
        order += list(contenders) if i % 2 == 0 else list(reversed(contenders))
    return order


def emit_json(doc: dict) -> None:
    sys.stdout.flush()
    print(json.dumps(doc, sort_keys=True), flush=True)


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with contextlib.suppress(Exception):
        info["skopeo"] = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    with contextlib.suppress(Exception):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)
    return info
