#!/usr/bin/env python3
"""Mooncake Store put/get throughput on loopback, for `cistern bench kv` to print
beside Cistern and redis. Starts `mooncake_master` (with its HTTP metadata server)
from the installed wheel, sets up one MooncakeDistributedStore client that holds the
global segment (one copy, in memory, TCP transport), registers numpy buffers and
times `batch_put_from` / `batch_get_into` of `--pages` pages in batches of
`--batch`, with `--streams` threads (the binding releases the GIL). Prints one JSON
object. Run by `cistern bench kv` from the virtual environment
`scripts/deps.sh --bench` creates."""
import argparse, json, os, socket, subprocess, sys, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--page-bytes", type=int, required=True)
    ap.add_argument("--pages", type=int, required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--streams", type=int, default=1)
    a = ap.parse_args()

    import numpy as np
    import mooncake
    from mooncake.store import MooncakeDistributedStore

    pkg = os.path.dirname(mooncake.__file__)
    libs = os.path.join(os.path.dirname(pkg), "mooncake_transfer_engine_non_cuda.libs")
    rpc, http = free_port(), free_port()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([pkg, libs, env.get("LD_LIBRARY_PATH", "")])
    master = subprocess.Popen(
        [os.path.join(pkg, "mooncake_master"), f"--port={rpc}", "--enable_http_metadata_server=true",
         f"--http_metadata_server_port={http}", "--eviction_high_watermark_ratio=0.95"],
        cwd=pkg, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(rpc, 20) or not wait_port(http, 20):
            raise RuntimeError("mooncake_master did not start")
        total = a.pages * a.page_bytes
        store = MooncakeDistributedStore()
        segment = total + (256 << 20)
        rc = store.setup("127.0.0.1", f"http://127.0.0.1:{http}/metadata", segment, 512 << 20, "tcp", "", f"127.0.0.1:{rpc}")
        if rc != 0:
            raise RuntimeError(f"setup returned {rc}")
        per_stream = a.pages // a.streams
        sources = [np.full(a.batch * a.page_bytes, 7 + s, dtype=np.uint8) for s in range(a.streams)]
        targets = [np.zeros(a.batch * a.page_bytes, dtype=np.uint8) for _ in range(a.streams)]
        for buf in sources + targets:
            if store.register_buffer(buf.ctypes.data, buf.nbytes) != 0:
                raise RuntimeError("register_buffer failed")
        errors = []

        def run(kind, s):
            src, dst = sources[s], targets[s]
            for b in range(0, per_stream, a.batch):
                n = min(a.batch, per_stream - b)
                keys = [f"s{s}p{b + i}" for i in range(n)]
                if kind == "put":
                    ptrs = [src.ctypes.data + i * a.page_bytes for i in range(n)]
                    res = store.batch_put_from(keys, ptrs, [a.page_bytes] * n)
                    bad = [r for r in res if r != 0]
                else:
                    ptrs = [dst.ctypes.data + i * a.page_bytes for i in range(n)]
                    res = store.batch_get_into(keys, ptrs, [a.page_bytes] * n)
                    bad = [r for r in res if r != a.page_bytes]
                if bad:
                    errors.append(f"{kind}: {bad[0]}")
                    return

        out = {"page_bytes": a.page_bytes, "pages": per_stream * a.streams, "streams": a.streams,
               "config": "mooncake_master + one client holding the global segment, TCP transport, one copy in memory"}
        for kind in ("put", "get"):
            threads = [threading.Thread(target=run, args=(kind, s)) for s in range(a.streams)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out[f"{kind}_bytes_per_second"] = per_stream * a.streams * a.page_bytes / (time.perf_counter() - start)
        out["errors"] = errors[:5]
        print(json.dumps(out))
    finally:
        master.terminate()
        try:
            master.wait(5)
        except subprocess.TimeoutExpired:
            master.kill()


if __name__ == "__main__":
    sys.exit(main())
