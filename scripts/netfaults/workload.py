#!/usr/bin/env python3
"""The client side of `make netfaults`: runs in the client's network namespace,
puts and gets KV pages in a loop against a cluster found by DNS names, and logs
every operation; stops when STOP_FILE appears, then reads back every acknowledged
page and writes a summary.

Usage: workload.py CLUSTER_YAML LOG_FILE STOP_FILE SUMMARY_FILE

Each log line: "<unix time at completion> <ok|err> <put|get> <seconds> <detail>".
Pages are a function of their key, so the read-back needs no copy of them."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

PAGE = 64 << 10
BATCH = 4


def page(key: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).integers(0, 256, size=PAGE, dtype=np.uint8)


def main() -> int:
    cluster, log_path, stop_file, summary_path = sys.argv[1:5]
    from cistern import Store

    store = Store(cluster, "netfaults", page_bytes=PAGE, capacity_pages=1 << 16, durability="durable", timeout_ms=20_000)
    deadline = time.monotonic() + 60
    while True:
        try:
            store.connect()
            break
        except Exception as e:  # the cluster may still be settling
            if time.monotonic() > deadline:
                raise SystemExit(f"workload: cannot connect to {cluster}: {e}")
            time.sleep(0.5)
    acked: list[str] = []
    dst = np.zeros((BATCH, PAGE), dtype=np.uint8)
    n = 0
    with open(log_path, "a", buffering=1) as log:
        while not os.path.exists(stop_file):
            keys = [f"p{n}-{i}" for i in range(BATCH)]
            n += 1
            src = np.stack([page(k) for k in keys])
            start = time.monotonic()
            try:
                codes = store.batch_put_from(keys, [src[i].ctypes.data for i in range(BATCH)], [PAGE] * BATCH)
                ok = all(c in (0, 1) for c in codes)
                detail = ",".join(map(str, codes))
            except Exception as e:
                ok, detail = False, repr(e)[:200].replace("\n", " ")
            log.write(f"{time.time():.3f} {'ok' if ok else 'err'} put {time.monotonic() - start:.4f} {detail}\n")
            if not ok:
                time.sleep(0.05)
                continue
            acked += keys
            start = time.monotonic()
            try:
                got = store.batch_get_into(keys, [dst[i].ctypes.data for i in range(BATCH)], [PAGE] * BATCH)
                ok = got == [PAGE] * BATCH and np.array_equal(src, dst)
                detail = ",".join(map(str, got)) + ("" if ok or got != [PAGE] * BATCH else " WRONG BYTES")
            except Exception as e:
                ok, detail = False, repr(e)[:200].replace("\n", " ")
            log.write(f"{time.time():.3f} {'ok' if ok else 'err'} get {time.monotonic() - start:.4f} {detail}\n")
    # Every acknowledged page must read back, byte for byte.
    lost, wrong = [], []
    for i in range(0, len(acked), 64):
        keys = acked[i:i + 64]
        out = np.zeros((len(keys), PAGE), dtype=np.uint8)
        for attempt in range(20):
            try:
                got = store.batch_get_into(keys, [out[j].ctypes.data for j in range(len(keys))], [PAGE] * len(keys))
                break
            except Exception:
                time.sleep(1)
        else:
            got = [-1] * len(keys)
        for j, k in enumerate(keys):
            if got[j] != PAGE:
                lost.append(f"{k}:{got[j]}")
            elif not np.array_equal(out[j], page(k)):
                wrong.append(k)
    store.close()
    with open(summary_path, "w") as f:
        json.dump({"acknowledged": len(acked), "lost": lost[:20], "lost_count": len(lost), "wrong": wrong[:20]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
