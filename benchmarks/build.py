#!/usr/bin/env python3
"""Benchmark: ``airgap build`` against ``skopeo copy`` pulling the same images.

    .venv/bin/python benchmarks/build.py [--size-gib 1] [--keep] [--repeat 2] [--cold] [--jobs 4]

Setup (untimed): >= SIZE GiB of random, uncompressed layers in 4 images x 4 layers
(layer 0 shared by all four), pushed with skopeo into a loopback docker-registry.

Timed, each as its own process, alternating order, best of --repeat:
  airgap        airgap build spec -o out.tar --plain-http --key builder.key --json
                (pulls every blob once, writes the signed tar, fsyncs it)
  skopeo-seq    skopeo copy --all docker://REG/bench/imgN:1.0 oci:DIR:imgN, one process per
                image, one after the other, all into the same OCI layout (as a user would)
  skopeo-par    the same four copies at once, each into its own layout (concurrent
                writers would race on one index.json)
skopeo does not fsync its output; airgap does.  The "+sync" column adds the time of
the ``sync`` that makes skopeo's output as durable as airgap's.

Targets: airgap / skopeo-seq <= 1.0; airgap peak RSS < 150 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def skopeo_pull(ref: str, dest: Path, tag: str) -> list[str]:
    return ["skopeo", "--insecure-policy", "copy", "--all", "--quiet", "--src-tls-verify=false", "--src-no-creds",
            f"docker://{ref}", f"oci:{dest}:{tag}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_common_args(ap, "1")
    ap.add_argument("--jobs", type=int, default=None, help="pass -j N to airgap build (default: airgap's default)")
    ap.add_argument("--no-parallel", action="store_true", help="skip the parallel skopeo variant")
    args = ap.parse_args()
    size = int(float(args.size_gib) * c.GiB)

    with c.Bench("build", args) as b:
        need = size * 4.5
        if not c.enough_disk(b.dir, need):
            return 2
        corpus = c.make_corpus(b.path("layout"), size)
        src = b.registry("source")
        c.log(f"pushing {len(corpus.tags)} images into {src.host} with skopeo")
        t0 = time.perf_counter()
        refs = c.push_corpus(corpus, src)
        c.log(f"pushed in {time.perf_counter() - t0:.1f}s; removing the local layout")
        shutil.rmtree(corpus.layout)
        keys = c.make_keys(b.path("keys"))
        spec = c.write_spec(b.path("spec"), refs)
        out = b.path("out", "bundle.tar")
        out.parent.mkdir()
        sk_seq = b.path("skopeo-seq")
        sk_par = b.path("skopeo-par")
        storage = src.storage

        def airgap_run() -> c.Run:
            cmd = c.airgap_cmd("build", spec, "-o", out, "--plain-http", "--key", keys.builder, "--json")
            if args.jobs:
                cmd += ["-j", str(args.jobs)]
            r = c.run_one("airgap", cmd)
            import json

            doc = json.loads(r.out)
            r.extra["blob_bytes"] = doc["blob_bytes"]
            r.extra["bundle_bytes"] = out.stat().st_size
            return r

        def skopeo_seq() -> c.Run:
            r = c.run_sequence("skopeo-seq", [skopeo_pull(ref, sk_seq, tag) for ref, tag in zip(refs, corpus.tags)])
            t = time.perf_counter()
            os.sync()
            r.extra["sync_s"] = time.perf_counter() - t
            r.extra["bytes"] = sum(f.stat().st_size for f in sk_seq.rglob("*") if f.is_file())
            return r

        def skopeo_par() -> c.Run:
            sk_par.mkdir()
            r = c.run_group("skopeo-par", [skopeo_pull(ref, sk_par / tag, tag) for ref, tag in zip(refs, corpus.tags)])
            t = time.perf_counter()
            os.sync()
            r.extra["sync_s"] = time.perf_counter() - t
            r.extra["bytes"] = sum(f.stat().st_size for f in sk_par.rglob("*") if f.is_file())
            return r

        contenders = {"airgap": airgap_run, "skopeo-seq": skopeo_seq}
        if not args.no_parallel:
            contenders["skopeo-par"] = skopeo_par
        runs: dict[str, list[c.Run]] = {k: [] for k in contenders}
        for name in c.alternate(args.repeat, list(contenders)):
            for p in (out, sk_seq, sk_par):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            os.sync()
            if args.cold:
                c.evict([storage])
            c.log(f"run {name}")
            r = contenders[name]()
            c.log(f"  {name}: {r.seconds:.2f}s, peak RSS {r.maxrss_mib:.1f} MiB")
            runs[name].append(r)

        best = {k: c.best(v) for k, v in runs.items()}
        a = best["airgap"]
        s = best["skopeo-seq"]
        rows = []
        for k, r in best.items():
            sync_s = r.extra.get("sync_s", 0.0)
            rows.append([k, r.seconds, r.seconds + sync_s, c.mbps(corpus.layer_bytes, r.seconds), r.maxrss_mib,
                         " ".join(f"{x.seconds:.2f}" for x in runs[k])])
        print()
        print(f"airgap build vs skopeo copy: {len(refs)} images, {corpus.layers} unique layers, "
              f"{corpus.layer_bytes / c.GiB:.2f} GiB unique layer bytes, loopback docker-registry, "
              f"{'cold (fadvise-evicted) registry storage' if args.cold else 'warm page cache'}, "
              f"best of {args.repeat} (alternating order)")
        print(c.table(["contender", "seconds", "s (+sync)", "MB/s", "peak RSS MiB", "all runs (s)"], rows))
        ratio = a.seconds / s.seconds
        ratio_sync = a.seconds / (s.seconds + s.extra["sync_s"])
        print()
        print(f"ratio airgap / skopeo-seq          = {ratio:.3f}   (target <= 1.0: {c.verdict(ratio <= 1.0)})")
        print(f"ratio airgap / (skopeo-seq + sync) = {ratio_sync:.3f}   (airgap fsyncs its output, skopeo does not)")
        if "skopeo-par" in best:
            p = best["skopeo-par"]
            print(f"ratio airgap / skopeo-par          = {a.seconds / p.seconds:.3f}")
        print(f"airgap peak RSS                    = {a.maxrss_mib:.1f} MiB   (target < 150 MiB: {c.verdict(a.maxrss_mib < 150)})")
        print(f"bundle: {a.extra['bundle_bytes']} bytes, {a.extra['blob_bytes']} blob bytes pulled")

        c.emit_json({
            "benchmark": "build",
            "size_gib": float(args.size_gib),
            "images": len(refs),
            "unique_layers": corpus.layers,
            "layer_bytes": corpus.layer_bytes,
            "cache": "cold" if args.cold else "warm",
            "repeat": args.repeat,
            "airgap_s": round(a.seconds, 3),
            "airgap_runs_s": [round(r.seconds, 3) for r in runs["airgap"]],
            "airgap_peak_rss_mib": round(a.maxrss_mib, 1),
            "skopeo_seq_s": round(s.seconds, 3),
            "skopeo_seq_runs_s": [round(r.seconds, 3) for r in runs["skopeo-seq"]],
            "skopeo_seq_sync_s": round(s.extra["sync_s"], 3),
            "skopeo_seq_peak_rss_mib": round(s.maxrss_mib, 1),
            "skopeo_par_s": round(best["skopeo-par"].seconds, 3) if "skopeo-par" in best else None,
            "ratio_airgap_skopeo_seq": round(ratio, 3),
            "ratio_airgap_skopeo_seq_sync": round(ratio_sync, 3),
            "ratio_airgap_skopeo_par": round(a.seconds / best["skopeo-par"].seconds, 3) if "skopeo-par" in best else None,
            "target_ratio_met": ratio <= 1.0,
            "target_rss_met": a.maxrss_mib < 150,
            "machine": c.machine_info(),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
