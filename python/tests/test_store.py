"""The Python Store against a real local cluster: round trips on numpy arrays, torch
tensors and buffers; many threads; bad input gives exceptions with the library's
messages."""
import os
import subprocess
import sys
import threading
import textwrap

import numpy as np
import pytest

import cistern
from cistern import Store

PAGE = 64 << 10


def pages(count: int, seed: int, size: int = PAGE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size), dtype=np.uint8)


def test_batch_round_trip_by_address(store):
    src = pages(128, 1)
    keys = [f"addr-{i}" for i in range(128)]
    ptrs = [src[i].ctypes.data for i in range(128)]
    assert store.batch_put_from(keys, ptrs, [PAGE] * 128) == [0] * 128
    # A put of a stored key is a cheap success.
    assert store.batch_put_from(keys, ptrs, [PAGE] * 128) == [1] * 128
    dst = np.zeros_like(src)
    assert store.batch_get_into(keys, [dst[i].ctypes.data for i in range(128)], [PAGE] * 128) == [PAGE] * 128
    assert np.array_equal(src, dst)
    assert store.batch_is_exist(keys[:3] + ["nope"]) == [1, 1, 1, 0]
    present, hits = store.batch_exists(keys[:5] + ["nope"] + keys[5:7])
    assert hits == 5 and present == [True] * 5 + [False, True, True]
    u = store.usage()
    assert u.page_bytes == PAGE and u.stored_pages >= 128 and u.capacity_pages == 4096
    s = store.stats.snapshot()
    assert s["put_pages"] == 256 and s["get_pages"] == 128 and s["get_bytes"] == 128 * PAGE


def test_torch_tensors_and_buffers(store):
    import torch

    t = torch.arange(PAGE // 4, dtype=torch.float32)
    assert store.put("tensor", t) == 0
    back = torch.zeros_like(t)
    assert store.batch_get_into_buffers(["tensor"], [back]) == [PAGE]
    assert torch.equal(t, back)
    assert store.put("bytes", b"hello cistern") == 0
    assert store.get("bytes") == b"hello cistern"
    assert store.get("never-put") == b""
    ba = bytearray(100)
    assert store.batch_get_into_buffers(["bytes"], [ba]) == [13]
    assert bytes(ba[:13]) == b"hello cistern"
    with pytest.raises(cistern.InvalidArgument, match="not contiguous"):
        store.batch_put(["x"], [torch.zeros(8, 8).t()])


def test_remove_and_large_batches(store):
    # 1500 keys: more than one C batch; the Store splits it.
    keys = [f"many-{i}" for i in range(1500)]
    small = np.full((1500, 64), 7, dtype=np.uint8)
    assert store.batch_put_from(keys, [small[i].ctypes.data for i in range(1500)], [64] * 1500) == [0] * 1500
    present, hits = store.batch_exists(keys)
    assert hits == 1500
    assert store.batch_remove(keys[:1000]) == 1000
    assert store.remove(keys[1000]) == 0
    assert store.remove(keys[1000]) == -2
    assert store.batch_is_exist(keys[998:1003]) == [0, 0, 0, 1, 1]


def test_many_threads_at_once(store):
    errors = []

    def worker(t: int) -> None:
        try:
            for round_ in range(6):
                src = pages(16, 1000 * t + round_)
                keys = [f"thr-{t}-{round_}-{i}" for i in range(16)]
                assert store.batch_put_from(keys, [src[i].ctypes.data for i in range(16)], [PAGE] * 16) == [0] * 16
                dst = np.zeros_like(src)
                assert store.batch_get_into(keys, [dst[i].ctypes.data for i in range(16)], [PAGE] * 16) == [PAGE] * 16
                assert np.array_equal(src, dst)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def test_calls_release_the_gil(store):
    """While one thread waits inside the library, Python code runs in another."""
    src = pages(128, 5)
    keys = [f"gil-{i}" for i in range(128)]
    ticks = 0
    done = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    before = ticks
    for _ in range(3):
        store.batch_put_from(keys, [src[i].ctypes.data for i in range(128)], [PAGE] * 128)
        store.batch_remove(keys)
    done.set()
    t.join()
    assert ticks - before > 1000


def test_bad_input_raises_with_the_library_message(cluster, store, ns_name):
    with pytest.raises(cistern.NotFound, match="no KV namespace 'absent-ns'"):
        Store(cluster.data_dir, "absent-ns").connect()
    with pytest.raises(cistern.Mismatch, match="already exists with a different shape"):
        Store(cluster.data_dir, ns_name, page_bytes=PAGE * 2, capacity_pages=4096).connect()
    with pytest.raises(cistern.InvalidArgument, match="invalid namespace name"):
        Store(cluster.data_dir, "bad/name", page_bytes=PAGE, capacity_pages=10).connect()
    with pytest.raises(cistern.ConfigError, match="no such file or directory"):
        Store("/no/such/dir", "x").connect()
    with pytest.raises(cistern.InvalidArgument, match="no cluster given"):
        os.environ.pop("CISTERN_CLUSTER", None)
        Store(None, "x").connect()
    big = np.zeros(PAGE + 1, dtype=np.uint8)
    assert store.batch_put_from(["big"], [big.ctypes.data], [PAGE + 1]) == [-4]
    with pytest.raises(cistern.TooLarge, match="more than the namespace's page size of 65536 bytes"):
        store.put("big", big)
    with pytest.raises(cistern.InvalidArgument, match=r"ptrs\[0\] is NULL"):
        store.batch_put_from(["null"], [0], [PAGE])
    with pytest.raises(cistern.InvalidArgument, match=r"ptrs\[0\] is NULL"):
        store.batch_get_into(["null"], [None], [PAGE])
    with pytest.raises(cistern.InvalidArgument, match="longer than 1024 bytes"):
        store.batch_is_exist(["k" * 2000])
    with pytest.raises(cistern.InvalidArgument, match="empty"):
        store.put("", b"x")
    with pytest.raises(cistern.InvalidArgument, match="NUL"):
        store.batch_is_exist(["a\0b"])
    with pytest.raises(cistern.InvalidArgument, match="page_bytes"):
        Store(cluster.data_dir, "x", page_bytes=1 << 32, capacity_pages=1).connect()
    with pytest.raises(cistern.InvalidArgument, match="keys are str"):
        store.batch_is_exist([b"bytes-key"])
    with pytest.raises(cistern.InvalidArgument, match="differ in length"):
        store.batch_put_from(["a", "b"], [1], [1])
    store.put("short", b"abc" * 100)
    small = np.zeros(10, dtype=np.uint8)
    assert store.batch_get_into(["short"], [small.ctypes.data], [10]) == [-10]


def test_unreachable_and_stopped_clusters():
    with pytest.raises(cistern.Unavailable, match="no cluster manager answered at 127.0.0.1:9"):
        Store("mgmtd=1@127.0.0.1:9;meta=2@127.0.0.1:9", "x", timeout_ms=1500).connect()
    # Roles in any order.
    with pytest.raises(cistern.Unavailable, match="no cluster manager answered"):
        Store("meta=2@127.0.0.1:9;mgmtd=1@127.0.0.1:9", "x", timeout_ms=1500).connect()


def test_a_cluster_that_stops_gives_an_error_not_a_hang():
    from conftest import LocalCluster

    c = LocalCluster(storage_nodes=1).up()
    try:
        s = Store(c.data_dir, "stopping", page_bytes=4096, capacity_pages=64, timeout_ms=8000)
        s.put("k", b"v" * 100)
        assert s.get("k") == b"v" * 100
        c.down()
        with pytest.raises(cistern.CisternError) as e:
            s.put("k2", b"w" * 100)
            s.get("k2")
        assert isinstance(e.value, (cistern.Unavailable, cistern.IOFailure)), e.value
        assert "cluster" in str(e.value) or "storage" in str(e.value) or "index" in str(e.value)
        s.close()
    finally:
        c.remove()


def test_store_made_before_fork_works_in_the_child(cluster, ns_name):
    """A fresh process makes a Store, forks, and the child connects on first use."""
    script = textwrap.dedent(f"""
        import os, sys
        from cistern import Store
        s = Store({cluster.data_dir!r}, {ns_name!r}, page_bytes=4096, capacity_pages=64)
        pid = os.fork()
        if pid == 0:
            try:
                s.put("child-key", b"from the child")
                ok = s.get("child-key") == b"from the child"
            except BaseException as e:
                print("child failed:", e, file=sys.stderr)
                os._exit(1)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, "the child could not use the store"
        # The parent, which never connected before the fork, can connect now too.
        assert s.get("child-key") == b"from the child"
        # A child forked after the parent connected gets a clear error, not a hang.
        pid = os.fork()
        if pid == 0:
            try:
                s.get("child-key")
            except Exception as e:
                os._exit(3 if "fork" in str(e) else 4)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 3, os.WEXITSTATUS(status)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_tenants_through_the_c_library(cluster, store, ns_name, monkeypatch):
    """A tenant's token (CISTERN_TOKEN) reaches its own namespaces only: the admin's
    namespace and a made-up token give PermissionDenied with the servers' reason."""
    import json
    import urllib.request
    import uuid as _uuid

    def call(method, path, body):
        req = urllib.request.Request(cluster.master_url() + path, method=method, data=json.dumps(body).encode())
        req.add_header("Authorization", "Bearer " + cluster.admin_token())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"{}")

    tenant = "py" + _uuid.uuid4().hex[:8]
    call("POST", "/v1/tenants", {"name": tenant, "quotaBytes": 1 << 30, "quotaPages": 1 << 16})
    token = call("POST", f"/v1/tenants/{tenant}/tokens", {})["token"]
    store.put("admins-page", b"secret" * 100)

    monkeypatch.setenv("CISTERN_TOKEN", token)
    mine = Store(cluster.data_dir, f"{tenant}.kv", page_bytes=PAGE, capacity_pages=64)
    mine.connect()
    page = np.arange(PAGE, dtype=np.uint8)
    mine.put("k", page)
    out = np.zeros(PAGE, dtype=np.uint8)
    assert mine.batch_get_into(["k"], [out.ctypes.data], [PAGE]) == [PAGE]
    assert (out == page).all()
    mine.close()
    with pytest.raises(cistern.PermissionDenied, match="may use only namespaces named"):
        Store(cluster.data_dir, ns_name).connect()
    with pytest.raises(cistern.PermissionDenied):
        Store(cluster.data_dir, "other.kv", page_bytes=PAGE, capacity_pages=4).connect()
    monkeypatch.setenv("CISTERN_TOKEN", "cst_" + "0" * 40)
    with pytest.raises(cistern.PermissionDenied):
        Store(cluster.data_dir, f"{tenant}.kv").connect()
