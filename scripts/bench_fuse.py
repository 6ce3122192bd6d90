#!/usr/bin/env python3
"""The FUSE mount's throughput beside the same fio job on the local disk and the
native client's (`cistern bench files`), with the ratios.

Starts a local cluster (`cistern up`) in a scratch directory on the disk under
test, mounts it, and runs one fio job at a time (ioengine=psync, one request in
flight, direct I/O so neither side is served from the page cache):

  seq-write 1M, seq-read 1M, rand-read 4k, rand-read 64k, rand-write 64k

The local disk row is the machine's limit; the native client row is what the mount
adds its cost to. Figures are single runs on a shared machine: expect +-20-30%.

  python3 scripts/bench_fuse.py [--cistern-bin PATH] [--megabytes 256] [--seconds 10] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

JOBS = [
    # name, fio rw, block bytes
    ("seq-write", "write", 1 << 20),
    ("seq-read", "read", 1 << 20),
    ("rand-read", "randread", 4096),
    ("rand-read", "randread", 65536),
    ("rand-write", "randwrite", 65536),
]


def fio(directory: str, name: str, rw: str, bs: int, megabytes: int, seconds: float) -> tuple[float, float]:
    """(MB/s, op/s) of one fio job on a file `megabytes` long in `directory`."""
    args = ["fio", f"--name={name}", f"--directory={directory}", f"--filename=bench-{bs}", f"--rw={rw}", f"--bs={bs}",
            f"--size={megabytes}M", "--ioengine=psync", "--direct=1", "--output-format=json"]
    if rw.startswith("rand"):
        args += ["--time_based", f"--runtime={seconds}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"fio {name} in {directory} failed: {out.stderr[-2000:]}")
    job = json.loads(out.stdout)["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return side["bw_bytes"] / 1e6, side["iops"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cistern-bin", default=".build-release/release/cistern")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the scratch directory goes (the disk under test)")
    ap.add_argument("--megabytes", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if shutil.which("fio") is None:
        print("fio is not installed: apt-get install fio (scripts/deps.sh does)", file=sys.stderr)
        return 2
    if not os.path.exists("/dev/fuse"):
        print("no /dev/fuse: the kernel here offers no FUSE; nothing to measure", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="cistern-bench-fuse-", dir=a.dir)
    data, mnt, local = (os.path.join(work, p) for p in ("cluster", "mnt", "local"))
    os.makedirs(mnt)
    os.makedirs(local)
    binary = os.path.abspath(a.cistern_bin)
    mounted = False
    try:
        say = (lambda s: None) if a.json else (lambda s: print("...", s, file=sys.stderr))
        say("starting a local cluster (3 storage nodes, 3 replicas)")
        subprocess.run([binary, "up", "--data-dir", data], check=True, capture_output=True, timeout=300)
        say("native client (cistern bench files)")
        native = json.loads(subprocess.run([binary, "bench", "files", "--data-dir", data, "--megabytes", str(a.megabytes),
                                            "--seconds", str(a.seconds), "--json"], check=True, capture_output=True, text=True,
                                           timeout=1800).stdout)
        native_by = {(r["name"], r["blockBytes"]): r for r in native}
        subprocess.run([binary, "mount", mnt, "--data-dir", data, "--log", os.path.join(work, "mount.log")], check=True,
                       capture_output=True, timeout=150)
        mounted = True
        rows = []
        for name, rw, bs in JOBS:
            say(f"fio {name} {bs} B: local disk, then the mount")
            disk = fio(local, name, rw, bs, a.megabytes, a.seconds)
            mount = fio(mnt, name, rw, bs, a.megabytes, a.seconds)
            n = native_by.get((name, bs))
            rows.append({"job": name, "blockBytes": bs, "diskMBps": disk[0], "diskOps": disk[1], "mountMBps": mount[0],
                         "mountOps": mount[1], "nativeMBps": n["megabytesPerSecond"] if n else None,
                         "nativeOps": n["operationsPerSecond"] if n else None})
        if a.json:
            print(json.dumps(rows))
        else:
            print(f"FUSE mount beside the local disk and the native client ({a.megabytes} MiB file, one request in flight, direct I/O)")
            print(f"{'job':<11} {'block':>6} | {'disk MB/s':>9} {'mount MB/s':>10} {'native MB/s':>11} | {'mount/disk':>10} {'mount/native':>12}")
            for r in rows:
                bs = f"{r['blockBytes'] >> 10}K" if r["blockBytes"] < 1 << 20 else f"{r['blockBytes'] >> 20}M"
                nat = r["nativeMBps"] or 0
                print(f"{r['job']:<11} {bs:>6} | {r['diskMBps']:>9.1f} {r['mountMBps']:>10.1f} {nat:>11.1f} | "
                      f"{r['mountMBps'] / r['diskMBps']:>10.2f} {(r['mountMBps'] / nat if nat else float('nan')):>12.2f}")
            print("disk: the same fio job on the directory the cluster's data lives in (the machine's limit, one replica);"
                  " the cluster writes three replicas to that same disk.")
        return 0
    finally:
        if mounted:
            subprocess.run([binary, "umount", mnt, "--lazy"], capture_output=True, timeout=60)
            time.sleep(0.5)
        subprocess.run([binary, "down", "--data-dir", data], capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
