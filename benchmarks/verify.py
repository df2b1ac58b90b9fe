#!/usr/bin/env python3
"""Benchmark: ``airgap verify`` against the machine's sha256 limit and ``sha256sum -c``.

    .venv/bin/python benchmarks/verify.py [--sizes 2,8] [--keep] [--repeat 2] [--cold]
    (--size-gib N is accepted as a synonym for --sizes N)

For every size (GiB of layer data; 4 images x 4 random uncompressed layers, one shared):
build the bundle from a local OCI layout (``oci:layout:tag`` in the spec, no registry),
countersign it as officer (``airgap sign --yes``), write a signed trust policy, extract
the bundle once with ``tar`` for sha256sum.  Then, timed, each as its own process,
alternating order, best of --repeat:

  airgap          airgap verify bundle.tar --trust trust.json --quiet
  hashlib-limit   benchmarks/_hashlimit.py: hashlib.sha256 in a thread pool of os.cpu_count()
                  threads over exactly the byte ranges airgap hashes (every member between
                  manifest.json and signatures.json, offsets from Python's tarfile), os.preadv
                  into reused buffers: the machine's limit for "hash these bytes"
  sha256sum -c    coreutils, one process, over the extracted copy of the same members
  sha256sum -c xN the checksum list split into os.cpu_count() balanced lists, N processes

Targets: airgap throughput >= 0.92 x hashlib-limit (start-up included); airgap peak RSS < 100 MiB and about
the same for every size.  A size is skipped, with a message, if the disk cannot hold
layout + bundle + extracted copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

HERE = Path(__file__).resolve().parent


def balanced(items: list[tuple[str, int, str]], n: int) -> list[list[tuple[str, int, str]]]:
    bins: list[list] = [[] for _ in range(n)]
    load = [0] * n
    for it in sorted(items, key=lambda x: -x[1]):
        i = load.index(min(load))
        bins[i].append(it)
        load[i] += it[1]
    return [b for b in bins if b]


def run_size(b: c.Bench, keys: c.Keys, gib: float, args) -> dict | None:
    size = int(gib * c.GiB)
    d = b.path(f"size-{gib:g}")
    d.mkdir()
    free = c.free_bytes(d)
    need = int(size * 2.3) + 2 * c.GiB  # layout, then bundle; layout removed; then extracted copy
    if free < need:
        msg = f"SKIPPED {gib:g} GiB: needs ~{need / c.GiB:.1f} GiB free under {d}, only {free / c.GiB:.1f} GiB"
        print(msg)
        c.log(msg)
        return {"size_gib": gib, "skipped": msg}

    corpus = c.make_corpus(d / "layout", size)
    bundle = d / "bundle.tar"
    c.log(f"building the {gib:g} GiB bundle from the local layout")
    build_run = c.build_bundle_from_layout(d, corpus, keys, bundle, name=f"bench-{gib:g}".replace(".", "-"))
    c.log(f"  built in {build_run.seconds:.1f}s ({bundle.stat().st_size / c.GiB:.2f} GiB); removing the layout")
    shutil.rmtree(corpus.layout)

    # The byte ranges airgap hashes: every member between manifest.json and signatures.json.
    members = c.tar_members(bundle)
    assert members[0][0] == "manifest.json" and members[-1][0] == "signatures.json", members[:1] + members[-1:]
    manifest = json.loads(subprocess.run(["tar", "-xOf", str(bundle), "manifest.json"], check=True,
                                         capture_output=True).stdout)
    sha = {m["path"]: m["sha256"] for m in manifest["members"]}
    content = members[1:-1]
    ranges = [[name, off, sz, sha[name]] for name, off, sz in content]
    total = sum(sz for _, _, sz in content)
    (d / "ranges.json").write_text(json.dumps(ranges))

    x = d / "extracted"
    x.mkdir()
    c.log("extracting the bundle once with tar (for sha256sum)")
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(x)], check=True)
    items = [(name, sz, sha[name]) for name, _, sz in content]
    (x / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, _, h in items))
    parts = balanced(items, os.cpu_count() or 2)
    for i, part in enumerate(parts):
        (x / f"SHA256SUMS.{i}").write_text("".join(f"{h}  {n}\n" for n, _, h in part))

    contenders = {
        "airgap": lambda: c.run_one("airgap verify", c.airgap_cmd("verify", bundle, "--trust", keys.trust, "--quiet")),
        "hashlib-limit": lambda: c.run_one("hashlib-limit", [str(c.VENV_PY), str(HERE / "_hashlimit.py"), str(bundle),
                                                             str(d / "ranges.json")]),
        "sha256sum": lambda: c.run_one("sha256sum -c", ["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=x),
        f"sha256sum x{len(parts)}": lambda: c.run_group(
            "sha256sum -c parallel",
            [["sha256sum", "--quiet", "--strict", "-c", f"SHA256SUMS.{i}"] for i in range(len(parts))], cwd=x),
    }
    runs: dict[str, list[c.Run]] = {k: [] for k in contenders}
    for name in c.alternate(args.repeat, list(contenders)):
        if args.cold:
            c.evict([bundle, x])
        r = contenders[name]()
        c.log(f"  {gib:g} GiB {name}: {r.seconds:.2f}s, peak RSS {r.maxrss_mib:.1f} MiB")
        runs[name].append(r)
    best = {k: c.best(v) for k, v in runs.items()}
    a, lim, ss = best["airgap"], best["hashlib-limit"], best["sha256sum"]
    sp = best[f"sha256sum x{len(parts)}"]
    rows = [[k, r.seconds, c.mbps(total, r.seconds), r.maxrss_mib, " ".join(f"{y.seconds:.2f}" for y in runs[k])]
            for k, r in best.items()]
    print()
    print(f"verify, {gib:g} GiB of layers: bundle {bundle.stat().st_size} bytes, {len(content)} members hashed, "
          f"{total} bytes, {'cold (fadvise-evicted)' if args.cold else 'warm page cache'}, best of {args.repeat}")
    print(c.table(["contender", "seconds", "MB/s", "peak RSS MiB", "all runs (s)"], rows))
    r_lim = lim.seconds / a.seconds
    print(f"airgap throughput / hashlib-limit      = {r_lim:.3f}   (target >= 0.92: {c.verdict(r_lim >= 0.92)})")
    print(f"airgap throughput / sha256sum -c       = {ss.seconds / a.seconds:.3f}")
    print(f"airgap throughput / sha256sum -c x{len(parts)}    = {sp.seconds / a.seconds:.3f}")
    print(f"airgap peak RSS                        = {a.maxrss_mib:.1f} MiB (target < 100 MiB: {c.verdict(a.maxrss_mib < 100)})")
    out = {
        "size_gib": gib,
        "bundle_bytes": bundle.stat().st_size,
        "hashed_bytes": total,
        "members": len(content),
        "airgap_s": round(a.seconds, 3),
        "airgap_runs_s": [round(y.seconds, 3) for y in runs["airgap"]],
        "airgap_mbps": round(c.mbps(total, a.seconds), 1),
        "airgap_peak_rss_mib": round(a.maxrss_mib, 1),
        "hashlib_limit_s": round(lim.seconds, 3),
        "hashlib_limit_mbps": round(c.mbps(total, lim.seconds), 1),
        "sha256sum_s": round(ss.seconds, 3),
        "sha256sum_mbps": round(c.mbps(total, ss.seconds), 1),
        "sha256sum_parallel_s": round(sp.seconds, 3),
        "ratio_airgap_vs_limit": round(r_lim, 3),
        "ratio_airgap_vs_sha256sum": round(ss.seconds / a.seconds, 3),
        "ratio_airgap_vs_sha256sum_parallel": round(sp.seconds / a.seconds, 3),
        "target_ratio_met": r_lim >= 0.92,
        "target_rss_met": a.maxrss_mib < 100,
    }
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_common_args(ap, "")
    ap.add_argument("--sizes", default="2,8", help="comma-separated GiB sizes (default 2,8)")
    args = ap.parse_args()
    sizes = [float(s) for s in (args.size_gib or args.sizes).split(",") if s.strip()]

    results = []
    with c.Bench("verify", args) as b:
        keys = c.make_keys(b.path("keys"))
        for gib in sizes:
            results.append(run_size(b, keys, gib, args))
        done = [r for r in results if r and not r.get("skipped")]
        if len(done) > 1:
            print()
            print("across sizes")
            print(c.table(["GiB", "airgap s", "airgap MB/s", "limit MB/s", "sha256sum MB/s", "vs limit", "peak RSS MiB"],
                          [[f"{r['size_gib']:g}", r["airgap_s"], r["airgap_mbps"], r["hashlib_limit_mbps"],
                            r["sha256sum_mbps"], r["ratio_airgap_vs_limit"], r["airgap_peak_rss_mib"]] for r in done]))
            rss = [r["airgap_peak_rss_mib"] for r in done]
            spread = max(rss) / min(rss)
            print(f"peak RSS spread max/min = {spread:.3f} (roughly equal: {c.verdict(spread < 1.25)})")
        c.emit_json({
            "benchmark": "verify",
            "cache": "cold" if args.cold else "warm",
            "repeat": args.repeat,
            "sizes": results,
            "machine": c.machine_info(),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
