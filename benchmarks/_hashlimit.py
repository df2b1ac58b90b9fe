#!/usr/bin/env python3
"""The machine's sha256 limit over given byte ranges of one file (helper for verify.py).

    python benchmarks/_hashlimit.py FILE RANGES.json [--workers N] [--chunk BYTES]

RANGES.json is a list of [name, offset, size, sha256hex].  Every range is hashed
with hashlib.sha256 in a thread pool (hashlib releases the GIL on large updates),
largest range first, reading with os.preadv into one reusable buffer per thread
(no per-chunk allocation): the least a Python program can spend to hash these
bytes.  Exits 1 if any digest differs.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("ranges")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--chunk", type=int, default=1 << 20)
    args = ap.parse_args()
    with open(args.ranges) as f:
        ranges = json.load(f)
    ranges.sort(key=lambda r: -r[2])
    fd = os.open(args.file, os.O_RDONLY)
    local = threading.local()

    def one(r) -> str | None:
        name, offset, size, want = r
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(args.chunk)
        view = memoryview(buf)
        h = hashlib.sha256()
        pos, end = offset, offset + size
        while pos < end:
            n = os.preadv(fd, [view[: min(args.chunk, end - pos)]], pos)
            if n <= 0:
                raise OSError(f"short read at {pos}")
            h.update(view[:n])
            pos += n
        return None if h.hexdigest() == want else name

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        bad = [x for x in pool.map(one, ranges) if x]
    dt = time.perf_counter() - t0
    total = sum(r[2] for r in ranges)
    print(json.dumps({"bytes": total, "seconds": dt, "workers": args.workers, "mismatch": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
