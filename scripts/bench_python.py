#!/usr/bin/env python3
"""The Python API benchmark: `Store.batch_put_from` / `batch_get_into` of batches of
128 pages (64 KiB and 1 MiB) on a real local cluster (`cistern up`, release build),
beside Mooncake Store's Python API (`scripts/bench_mooncake.py`, in .venv-bench) on the
same page sizes and counts, in the same run. Prints a table with the ratios.

    make bench-python
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from cistern import Store  # noqa: E402

BATCH = 128


def bench_cistern(data_dir: str, page_bytes: int, pages: int, streams: int, durability: str, rounds: int) -> dict:
    ns = f"bench-{page_bytes}-{streams}-{durability}-{os.getpid()}-{time.monotonic_ns()}"
    store = Store(data_dir, ns, page_bytes=page_bytes, capacity_pages=pages * rounds * 2 + 1024, durability=durability, timeout_ms=120_000)
    store.connect()
    per_stream = pages // streams
    sources = [np.random.default_rng(s).integers(0, 256, size=BATCH * page_bytes, dtype=np.uint8) for s in range(streams)]
    targets = [np.zeros(BATCH * page_bytes, dtype=np.uint8) for _ in range(streams)]
    errors = []
    best = {"put": 0.0, "get": 0.0}

    def run(kind: str, s: int, r: int) -> None:
        src, dst = sources[s], targets[s]
        for b in range(0, per_stream, BATCH):
            n = min(BATCH, per_stream - b)
            keys = [f"r{r}s{s}p{b + i}" for i in range(n)]
            if kind == "put":
                res = store.batch_put_from(keys, [src.ctypes.data + i * page_bytes for i in range(n)], [page_bytes] * n)
                bad = [x for x in res if x != 0]
            else:
                res = store.batch_get_into(keys, [dst.ctypes.data + i * page_bytes for i in range(n)], [page_bytes] * n)
                bad = [x for x in res if x != page_bytes]
            if bad:
                errors.append(f"{kind}: {bad[0]}")
                return
            if kind == "get" and not np.array_equal(dst[: n * page_bytes], src[: n * page_bytes]):
                errors.append("get: bytes differ")
                return

    # Each round writes fresh keys (a put of a stored key is skipped, which would flatter puts).
    for r in range(rounds):
        for kind in ("put", "get"):
            threads = [threading.Thread(target=run, args=(kind, s, r)) for s in range(streams)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best[kind] = max(best[kind], per_stream * streams * page_bytes / (time.perf_counter() - start))
    store.close()
    return {"put_bytes_per_second": best["put"], "get_bytes_per_second": best["get"], "errors": errors[:5]}


def bench_mooncake(page_bytes: int, pages: int, streams: int) -> dict:
    py = ROOT / ".venv-bench" / "bin" / "python"
    if not py.exists():
        return {"errors": ["Mooncake Store is not installed (scripts/deps.sh --bench)"]}
    out = subprocess.run([str(py), str(ROOT / "scripts" / "bench_mooncake.py"), "--page-bytes", str(page_bytes), "--pages", str(pages),
                          "--streams", str(streams)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"errors": [out.stderr.strip()[-300:]]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cistern-bin", default=str(ROOT / ".build-release" / "release" / "cistern"))
    ap.add_argument("--rounds", type=int, default=2, help="runs per cell; the best is reported")
    a = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="cistern-bench-py-")
    up = subprocess.run([a.cistern_bin, "up", "--data-dir", data_dir, "--storage-nodes", "3", "--targets-per-node", "4"], capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stdout, up.stderr, file=sys.stderr)
        return 1
    rows = []
    try:
        for page_bytes, pages in ((64 << 10, 1024), (1 << 20, 256)):
            for streams in (1, 4):
                c = bench_cistern(data_dir, page_bytes, pages, streams, "cache", a.rounds)
                d = bench_cistern(data_dir, page_bytes, pages, streams, "durable", 1)
                m = bench_mooncake(page_bytes, pages, streams)
                rows.append((page_bytes, streams, c, d, m))
    finally:
        subprocess.run([a.cistern_bin, "down", "--data-dir", data_dir], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)

    def mb(x):
        return f"{x / 1e6:7.0f}" if x else "      -"

    def ratio(x, y):
        return f"{x / y:5.2f}x" if x and y else "    -"

    print("Python API, batches of 128 pages, loopback; cistern: 3 storage nodes x 4 targets, chains of 3 (cache durability unless noted);")
    print("Mooncake Store: mooncake_master + one client holding the segment, TCP transport, one copy in memory. MB/s.")
    print(f"{'page':>6} {'streams':>7} | {'cistern put':>11} {'durable put':>11} {'mooncake put':>12} {'vs mc':>6} | {'cistern get':>11} {'mooncake get':>12} {'vs mc':>6}")
    for page_bytes, streams, c, d, m in rows:
        label = f"{page_bytes >> 10}K" if page_bytes < (1 << 20) else f"{page_bytes >> 20}M"
        print(f"{label:>6} {streams:>7} | {mb(c.get('put_bytes_per_second')):>11} {mb(d.get('put_bytes_per_second')):>11} {mb(m.get('put_bytes_per_second')):>12} "
              f"{ratio(c.get('put_bytes_per_second'), m.get('put_bytes_per_second')):>6} | {mb(c.get('get_bytes_per_second')):>11} "
              f"{mb(m.get('get_bytes_per_second')):>12} {ratio(c.get('get_bytes_per_second'), m.get('get_bytes_per_second')):>6}")
        for who, r in (("cistern", c), ("cistern durable", d), ("mooncake", m)):
            if r.get("errors"):
                print(f"    {who}: {r['errors'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
