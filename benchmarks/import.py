#!/usr/bin/env python3
"""Benchmark: ``airgap import`` against ``skopeo copy`` of the same images, and a re-import.

    .venv/bin/python benchmarks/import.py [--size-gib 1] [--keep] [--repeat 2] [--cold]

Setup (untimed): >= SIZE GiB of random, uncompressed layers in 4 images x 4 layers
(layer 0 shared by all four), pushed with skopeo into a loopback source registry;
``airgap build --plain-http`` from it (the real pipeline), officer countersign,
signed trust policy; source registry removed; the bundle extracted once with ``tar``.

Timed, each as its own process, each into a FRESH loopback docker-registry,
alternating order, best of --repeat:
  airgap           airgap import bundle.tar --registry 127.0.0.1:P --plain-http --trust trust.json
                   --state STATE --json   (verifies the whole bundle first, then pushes)
  skopeo-seq       skopeo copy --all --preserve-digests --dest-tls-verify=false
                   oci:EXTRACTED:<layout ref> docker://127.0.0.1:P/<same repository>:<tag>,
                   one process per image, one after the other
  airgap (again)   right after each airgap import: the same command again (same registry,
                   same state): everything is present, nothing should be pushed

Targets: airgap / skopeo <= 1.0; second import < 5 % of the first and <= 0.25 s wall
(start-up, verification of signatures, policy and documents, and the registry's answers:
no content byte is read).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_common_args(ap, "1")
    args = ap.parse_args()
    size = int(float(args.size_gib) * c.GiB)

    with c.Bench("import", args) as b:
        need = size * 6
        if not c.enough_disk(b.dir, need):
            return 2
        corpus = c.make_corpus(b.path("layout"), size)
        src = b.registry("source")
        c.log(f"pushing {len(corpus.tags)} images into {src.host} with skopeo")
        refs = c.push_corpus(corpus, src)
        shutil.rmtree(corpus.layout)
        keys = c.make_keys(b.path("keys"))
        spec = c.write_spec(b.path("spec"), refs)
        bundle = b.path("bundle.tar")
        c.log("airgap build from the source registry")
        c.run_one("airgap build", c.airgap_cmd("build", spec, "-o", bundle, "--plain-http", "--key", keys.builder, "--quiet"))
        c.run_one("airgap sign", c.airgap_cmd("sign", bundle, "--key", keys.officer, "--yes", "--quiet"))
        b.drop_registry(src)
        x = b.path("extracted")
        x.mkdir()
        c.log("extracting the bundle once with tar (for skopeo)")
        subprocess.run(["tar", "-xf", str(bundle), "-C", str(x)], check=True)
        manifest = json.loads((x / "manifest.json").read_bytes())
        from airgap.importer import internal_repository
        from airgap.manifest import BundleManifest

        records = BundleManifest.from_bytes((x / "manifest.json").read_bytes()).images
        targets = [(r.layout_ref, internal_repository(r), r.tag) for r in records]
        blob_bytes = sum(m["size"] for m in manifest["members"] if m["path"].startswith("blobs/"))

        n = {"reg": 0}

        def fresh_registry():
            n["reg"] += 1
            return b.registry(f"dest-{n['reg']}")

        def airgap_run() -> tuple[c.Run, c.Run]:
            reg = fresh_registry()
            state = b.path(f"state-{n['reg']}")
            cmd = c.airgap_cmd("import", bundle, "--registry", reg.host, "--plain-http", "--trust", keys.trust,
                               "--state", state, "--json")
            first = c.run_one("airgap import", cmd)
            doc = json.loads(first.out)
            first.extra = {k: doc[k] for k in ("uploaded_blobs", "uploaded_bytes", "skipped_blobs", "status")}
            c.log(f"  airgap import: {first.seconds:.2f}s, peak RSS {first.maxrss_mib:.1f} MiB, "
                  f"{doc['uploaded_blobs']} blobs / {doc['uploaded_bytes']} bytes uploaded")
            again = c.run_one("airgap import (again)", cmd)
            doc2 = json.loads(again.out)
            again.extra = {k: doc2[k] for k in ("uploaded_blobs", "uploaded_bytes", "skipped_blobs", "status")}
            c.log(f"  airgap import again: {again.seconds:.2f}s, peak RSS {again.maxrss_mib:.1f} MiB, "
                  f"status {doc2['status']}, {doc2['uploaded_blobs']} blobs uploaded")
            b.drop_registry(reg)
            shutil.rmtree(state, ignore_errors=True)
            return first, again

        def skopeo_run() -> c.Run:
            reg = fresh_registry()
            cmds = [["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests", "--quiet",
                     "--dest-tls-verify=false", "--dest-no-creds", f"oci:{x}:{ref}", f"docker://{reg.host}/{repo}:{tag}"]
                    for ref, repo, tag in targets]
            r = c.run_sequence("skopeo-seq", cmds)
            c.log(f"  skopeo-seq: {r.seconds:.2f}s, peak RSS {r.maxrss_mib:.1f} MiB")
            b.drop_registry(reg)
            return r

        runs: dict[str, list[c.Run]] = {"airgap": [], "airgap-again": [], "skopeo-seq": []}
        for name in c.alternate(args.repeat, ["airgap", "skopeo-seq"]):
            if args.cold:
                c.evict([bundle, x])
            c.log(f"run {name}")
            if name == "airgap":
                first, again = airgap_run()
                runs["airgap"].append(first)
                runs["airgap-again"].append(again)
            else:
                runs["skopeo-seq"].append(skopeo_run())

        best = {k: c.best(v) for k, v in runs.items()}
        a, s, again = best["airgap"], best["skopeo-seq"], best["airgap-again"]
        print()
        print(f"import: {len(targets)} images, {blob_bytes / c.GiB:.2f} GiB of blobs, fresh loopback docker-registry per run, "
              f"{'cold (fadvise-evicted) inputs' if args.cold else 'warm page cache'}, best of {args.repeat} (alternating order)")
        print(c.table(["contender", "seconds", "MB/s", "peak RSS MiB", "all runs (s)"],
                      [[k, r.seconds, c.mbps(blob_bytes, r.seconds), r.maxrss_mib, " ".join(f"{y.seconds:.2f}" for y in runs[k])]
                       for k, r in best.items()]))
        ratio = a.seconds / s.seconds
        pairs = [y.seconds / x_.seconds for x_, y in zip(runs["airgap"], runs["airgap-again"])]
        again_ratio = min(pairs)
        print()
        print(f"ratio airgap / skopeo-seq            = {ratio:.3f}   (target <= 1.0: {c.verdict(ratio <= 1.0)})")
        print(f"second import / first import         = {again_ratio:.3f}   (per pair: {', '.join(f'{p:.3f}' for p in pairs)}; "
              f"target < 0.05: {c.verdict(again_ratio < 0.05)})")
        print(f"second import wall time              = {again.seconds:.3f} s   (best of {len(runs['airgap-again'])}: "
              f"{', '.join(f'{y.seconds:.3f}' for y in runs['airgap-again'])}; target <= 0.25 s: {c.verdict(again.seconds <= 0.25)})")
        print(f"second import uploaded               = {again.extra['uploaded_blobs']} blobs, status {again.extra['status']}")
        print(f"airgap import peak RSS               = {a.maxrss_mib:.1f} MiB")
        c.emit_json({
            "benchmark": "import",
            "size_gib": float(args.size_gib),
            "images": len(targets),
            "blob_bytes": blob_bytes,
            "cache": "cold" if args.cold else "warm",
            "repeat": args.repeat,
            "airgap_s": round(a.seconds, 3),
            "airgap_runs_s": [round(y.seconds, 3) for y in runs["airgap"]],
            "airgap_peak_rss_mib": round(a.maxrss_mib, 1),
            "airgap_uploaded_bytes": a.extra["uploaded_bytes"],
            "skopeo_seq_s": round(s.seconds, 3),
            "skopeo_seq_runs_s": [round(y.seconds, 3) for y in runs["skopeo-seq"]],
            "airgap_again_s": round(again.seconds, 3),
            "airgap_again_runs_s": [round(y.seconds, 3) for y in runs["airgap-again"]],
            "airgap_again_uploaded_blobs": again.extra["uploaded_blobs"],
            "ratio_airgap_skopeo": round(ratio, 3),
            "ratio_again_first": round(again_ratio, 4),
            "target_ratio_met": ratio <= 1.0,
            "target_again_met": again_ratio < 0.05,
            "target_again_wall_met": again.seconds <= 0.25,
            "machine": c.machine_info(),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
