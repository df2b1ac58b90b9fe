#!/usr/bin/env python3
"""Benchmark: site.yml (first and second run) and check.yml on the 3-node lab.

    .venv/bin/python benchmarks/rollout.py [--repeat 1] [--runtime podman|containerd] [--keep] [--workdir DIR]

Setup (untimed): the sample images, demo keys and trust policy, the toolkit
release, the local apt mirror of the nodes' packages, bundle 1.0.0 built and
countersigned (airgap.lab.demo.Demo, the demo's own steps), cut into
media parts; per repeat a FRESH lab (`airgap lab`, registry-1 + node-1 + node-2)
and the parts verified and joined inside it.

--runtime: the container hosts' runtime, as `scripts/demo.sh --runtime`
(podman: the workloads run as pods; containerd: every signed image pre-pulled).

Timed, each as its own process, in this order on that fresh lab:
  floor        ansible all -m ansible.builtin.ping   (one module run on every host:
               the least any playbook costs here; the ratios below are against it)
  site first   ansible-playbook site.yml             (empty site: everything is made)
  site second  ansible-playbook site.yml             (converged: nothing may change)
  check        ansible-playbook check.yml            (read-only proof, all PASS)

--profile N: each playbook run also writes ansible-core's own junit report
(the one built-in callback that times every task on every host) and the N
slowest tasks of each step are printed (wall seconds: the slowest host of
that task; tasks run on all hosts at once).

Goals (issue "check.yml that cannot be fooled ..."): first run <= 60 s, second
run <= 15 s with 0 changed, check.yml <= 15 s.  Printed: seconds, changed
counts per host (PLAY RECAP), ratio to the floor, MET/MISSED; one JSON line last.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOALS = {"site first": 60.0, "site second": 15.0, "check": 15.0}


def recap(output: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def profiled(directory: Path | None, label: str):
    """Let ansible-playbook's junit callback write this step's task times into *directory*/<label>."""
    if directory is None:
        return contextlib.nullcontext()
    out = directory / label.replace(" ", "-")
    out.mkdir(parents=True, exist_ok=True)
    return _env(ANSIBLE_CALLBACKS_ENABLED="junit", JUNIT_OUTPUT_DIR=str(out), JUNIT_TASK_CLASS="true",
                JUNIT_HIDE_TASK_ARGUMENTS="true", JUNIT_TASK_RELATIVE_PATH=str(c.REPO))


@contextlib.contextmanager
def _env(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def slowest(directory: Path, n: int) -> tuple[list[list], str]:
    """The *n* slowest tasks of a step ([task, seconds (slowest host), hosts]) and a line of totals."""
    tasks: dict[str, list[float]] = {}
    for report in sorted(directory.glob("*.xml")):
        for case in ET.parse(report).getroot().iter("testcase"):
            # "[host] play: role : task" -> "role : task", after the task file and line
            name = re.sub(r"^\[[^]]+\]\s*", "", case.get("name", ""))
            name = name.rsplit(": ", 2)[-2] + ": " + name.rsplit(": ", 1)[-1] if " : " in name else name.split(": ", 1)[-1]
            key = f"{case.get('classname', '')} {name}"
            tasks.setdefault(key, []).append(float(case.get("time") or 0))
    rows = sorted(([k[:110], max(t), len(t)] for k, t in tasks.items()), key=lambda r: -r[1])
    total = sum(max(t) for t in tasks.values())
    return rows[:n], f"{len(tasks)} tasks, {total:.1f} s in tasks (slowest host of each)"


def timed(label: str, fn, profile: Path | None = None) -> dict:
    c.log(f"{label} ...")
    t0 = time.monotonic()
    with profiled(profile, label):
        proc = fn()
    seconds = time.monotonic() - t0
    counts = recap(proc.stdout or "")
    c.log(f"{label}: {seconds:.1f} s, exit {proc.returncode}")
    return {"label": label, "seconds": seconds, "rc": proc.returncode,
            "changed": {h: n["changed"] for h, n in sorted(counts.items())},
            "tail": "" if proc.returncode == 0 else (proc.stdout or "")[-3000:]}


def one_round(demo, bundle_media: Path, bundle_name: str, profile: Path | None = None) -> list[dict]:
    demo.lab_up(fresh=True)
    try:
        joined = demo.join_inside(bundle_media, bundle_name)
        inv = str(demo.inventory_path())
        rows = [timed("floor", lambda: demo.run(
            [str(demo.venv_bin / "ansible"), "all", "-i", inv, "-m", "ansible.builtin.ping"],
            netns=True, check=False, capture=True))]
        rows.append(timed("site first", lambda: demo.rollout(joined, check=False, capture=True), profile))
        rows.append(timed("site second", lambda: demo.rollout(joined, check=False, capture=True), profile))
        t0 = time.monotonic()
        with profiled(profile, "check"):
            report = demo.check(strict=False, capture=True)
        rows.append({"label": "check", "seconds": time.monotonic() - t0, "rc": report["returncode"],
                     "changed": {}, "passed": report["passed"],
                     "tail": "" if report["passed"] else str(report["failures"])[:3000]})
        return rows
    finally:
        demo.lab.down()


@contextlib.contextmanager
def quiet(log: Path):
    """The setup's tools print to this process's stdout; keep them in a log instead."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(log, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="rounds, each on a fresh lab; the best of each step is reported")
    ap.add_argument("--runtime", choices=("podman", "containerd"), default="podman",
                    help="the container hosts' runtime (as the demo's --runtime)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the N slowest tasks of each step (ansible-core's junit callback; last round)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--workdir", help="parent directory for the work directory (default: $TMPDIR or /tmp)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("rollout.py needs root (the lab uses namespaces)", file=sys.stderr)
        return 2

    from airgap.lab import Lab
    from airgap.lab.demo import Demo

    with c.Bench("rollout", args) as b:
        inventory_dir = b.path("inventory")
        inventory_dir.mkdir()
        (inventory_dir / "group_vars").symlink_to(c.REPO / "inventories" / "lab" / "group_vars")
        lab = Lab(b.path("lab"), name=f"airgap-lab-b{os.getpid()}", inventory=inventory_dir / "hosts.yml")
        demo = Demo(b.path("demo"), repo=c.REPO, lab=lab, log=lambda line: None, runtime=args.runtime)
        b.stack.callback(lab.down)
        c.log(f"setup: sample images, keys, trust policy, bundle 1.0.0, media parts (untimed; output in {b.path('setup.log')})")
        with quiet(b.path("setup.log")):
            try:
                demo.prepare()
                bundle = demo.build("bundle.yaml", "1.0.0")
            finally:
                demo.stop()
            media = demo.carry(bundle)
        rounds = []
        for i in range(max(1, args.repeat)):
            profile = b.path(f"profile-{i}") if args.profile else None
            with quiet(b.path("setup.log")):
                rounds.append(one_round(demo, media, bundle.name, profile))
        if args.profile:
            for label in ("site first", "site second", "check"):
                rows, totals = slowest(profile / label.replace(" ", "-"), args.profile)
                print(f"\n{label}: the {args.profile} slowest tasks (last round; {totals})")
                print(c.table(["task", "seconds", "hosts"], rows))

    best = {}
    for rows in rounds:
        for row in rows:
            if row["label"] not in best or row["seconds"] < best[row["label"]]["seconds"]:
                best[row["label"]] = row
    floor = best["floor"]["seconds"]
    table = []
    ok = True
    for label in ("floor", "site first", "site second", "check"):
        row = best[label]
        goal = GOALS.get(label)
        met = row["rc"] == 0 and (goal is None or row["seconds"] <= goal)
        if label == "site second":
            met = met and all(n == 0 for n in row["changed"].values())
        ok = ok and met
        changed = " ".join(f"{h}={n}" for h, n in row["changed"].items()) or "-"
        table.append([label, row["seconds"], f"{row['seconds'] / floor:.1f}x", changed,
                      f"<= {goal:.0f} s" if goal else "-", c.verdict(met) if goal else "-"])
        if row["rc"] != 0 and label != "check":
            print(f"{label} failed:\n{row['tail']}", file=sys.stderr)
    print(f"site.yml and check.yml on the 3-node lab ({args.runtime}), best of {len(rounds)} round(s) on fresh labs "
          f"({os.cpu_count()} cores):")
    print(c.table(["step", "seconds", "x floor", "changed (PLAY RECAP)", "goal", "verdict"], table))
    c.emit_json({"benchmark": "rollout", "runtime": args.runtime, "machine": c.machine_info(), "rounds": rounds,
                 "best": {k: {"seconds": round(v["seconds"], 2), "changed": v["changed"], "rc": v["rc"]}
                          for k, v in best.items()},
                 "goals": GOALS, "all_met": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
