#!/usr/bin/env python3
"""Benchmark: site.yml (first and second run) and check.yml on the 3-node lab.

    .venv/bin/python benchmarks/rollout.py [--repeat 1] [--keep] [--workdir DIR]

Setup (untimed): the sample images, demo keys and trust policy, bundle 1.0.0
built and countersigned (airgap.lab.demo.Demo, the demo's own steps), cut into
media parts; per repeat a FRESH lab (`airgap lab`, registry-1 + node-1 + node-2)
and the parts verified and joined inside it.

Timed, each as its own process, in this order on that fresh lab:
  floor        ansible all -m ansible.builtin.ping   (one module run on every host:
               the least any playbook costs here; the ratios below are against it)
  site first   ansible-playbook site.yml             (empty site: everything is made)
  site second  ansible-playbook site.yml             (converged: nothing may change)
  check        ansible-playbook check.yml            (read-only proof, all PASS)

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOALS = {"site first": 60.0, "site second": 15.0, "check": 15.0}


def recap(output: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def timed(label: str, fn) -> dict:
    c.log(f"{label} ...")
    t0 = time.monotonic()
    proc = fn()
    seconds = time.monotonic() - t0
    counts = recap(proc.stdout or "")
    c.log(f"{label}: {seconds:.1f} s, exit {proc.returncode}")
    return {"label": label, "seconds": seconds, "rc": proc.returncode,
            "changed": {h: n["changed"] for h, n in sorted(counts.items())},
            "tail": "" if proc.returncode == 0 else (proc.stdout or "")[-3000:]}


def one_round(demo, bundle_media: Path, bundle_name: str) -> list[dict]:
    demo.lab_up(fresh=True)
    try:
        joined = demo.join_inside(bundle_media, bundle_name)
        inv = str(demo.inventory_path())
        rows = [timed("floor", lambda: demo.run(
            [str(demo.venv_bin / "ansible"), "all", "-i", inv, "-m", "ansible.builtin.ping"],
            netns=True, check=False, capture=True))]
        rows.append(timed("site first", lambda: demo.rollout(joined, check=False, capture=True)))
        rows.append(timed("site second", lambda: demo.rollout(joined, check=False, capture=True)))
        t0 = time.monotonic()
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
        demo = Demo(b.path("demo"), repo=c.REPO, lab=lab, log=lambda line: None)
        b.stack.callback(lab.down)
        c.log(f"setup: sample images, keys, trust policy, bundle 1.0.0, media parts (untimed; output in {b.path('setup.log')})")
        with quiet(b.path("setup.log")):
            try:
                demo.start_source_registry()
                demo.make_images()
                demo.make_keys()
                demo.make_trust()
                bundle = demo.build("bundle.yaml", "1.0.0")
            finally:
                demo.stop()
            media = demo.carry(bundle)
        rounds = []
        for _ in range(max(1, args.repeat)):
            with quiet(b.path("setup.log")):
                rounds.append(one_round(demo, media, bundle.name))

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
    print(f"site.yml and check.yml on the 3-node lab, best of {len(rounds)} round(s) on fresh labs "
          f"({os.cpu_count()} cores):")
    print(c.table(["step", "seconds", "x floor", "changed (PLAY RECAP)", "goal", "verdict"], table))
    c.emit_json({"benchmark": "rollout", "machine": c.machine_info(), "rounds": rounds,
                 "best": {k: {"seconds": round(v["seconds"], 2), "changed": v["changed"], "rc": v["rc"]}
                          for k, v in best.items()},
                 "goals": GOALS, "all_met": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
