#!/usr/bin/env python3
"""Read DIR/f00000..f{N-1} completely with THREADS threads (open, read, close each).

usage: fsread.py DIR N THREADS EXPECT_SIZE
Prints "n=N bytes=B secs=S ops_per_s=R errors=E"; exits 1 if any file failed or had the wrong size.
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

d, n, threads, expect = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def one(i):
    try:
        with open(f"{d}/f{i:05d}", "rb") as f:
            got = len(f.read())
        return got, got != expect
    except OSError as e:
        print(f"f{i:05d}: {e}", file=sys.stderr)
        return 0, True


t0 = time.perf_counter()
with ThreadPoolExecutor(threads) as ex:
    res = list(ex.map(one, range(n)))
dt = time.perf_counter() - t0
errors = sum(1 for _, bad in res if bad)
print(f"n={n} bytes={sum(b for b, _ in res)} secs={dt:.3f} ops_per_s={n / dt:.1f} errors={errors}")
sys.exit(1 if errors else 0)
