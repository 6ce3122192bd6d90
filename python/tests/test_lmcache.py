"""The LMCache remote storage plugin through LMCache's own storage backend creation
(lmcache 0.5.6, CPU): the plugin configured as vLLM's LMCache connector would be,
then put, contains (single and batched prefix) and get through RemoteBackend."""
import asyncio
import threading

import pytest
import torch

from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.storage_backend import CreateStorageBackends

from cistern.lmcache import CisternConnector

LAYERS, CHUNK, HEADS, HEAD_DIM = 2, 16, 4, 32


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    t.join(timeout=5)


def backends(cluster, ns, loop, **extra):
    ec = {"remote_storage_plugin.cistern.module_path": "cistern.lmcache",
          "remote_storage_plugin.cistern.class_name": "CisternConnector",
          "remote_storage_plugin.cistern.cluster": cluster.data_dir,
          "remote_storage_plugin.cistern.namespace": ns,
          "remote_storage_plugin.cistern.capacity_pages": 256}
    ec.update(extra)
    cfg = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=0.05,
                                            remote_storage_plugins=["cistern"], extra_config=ec)
    meta = LMCacheMetadata(model_name="Qwen/Qwen3-8B", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
                           kv_dtype=torch.bfloat16, kv_shape=(LAYERS, 2, CHUNK, HEADS, HEAD_DIM), chunk_size=CHUNK)
    return CreateStorageBackends(cfg, meta, loop)


def key(h: int) -> CacheEngineKey:
    return CacheEngineKey("Qwen/Qwen3-8B", 1, 0, h, torch.bfloat16)


def chunk(local_cpu, seed: int, tokens: int = CHUNK):
    obj = local_cpu.allocate([torch.Size((2, LAYERS, tokens, HEADS * HEAD_DIM))], [torch.bfloat16])
    g = torch.Generator().manual_seed(seed)
    obj.tensor.copy_(torch.randn(obj.tensor.shape, generator=g).to(torch.bfloat16))
    return obj


def test_put_contains_get_through_lmcache(cluster, ns_name, loop):
    bs = backends(cluster, ns_name, loop)
    assert "RemoteBackend-cistern" in bs, list(bs)
    remote, local = bs["RemoteBackend-cistern"], bs["LocalCPUBackend"]
    assert isinstance(remote.connection, CisternConnector) or "Cistern" in repr(remote.connection)
    keys = [key(1000 + i) for i in range(8)]
    objs = [chunk(local, i) for i in range(8)]
    expected = [o.tensor.clone() for o in objs]
    done = threading.Semaphore(0)
    remote.batched_submit_put_task(keys, objs, on_complete_callback=lambda k: done.release())
    for _ in keys:
        assert done.acquire(timeout=60), "the put did not complete"
    for k in keys:
        assert remote.contains(k), k
    assert not remote.contains(key(99))
    for k, want in zip(keys, expected):
        got = remote.get_blocking(k)
        assert got is not None and torch.equal(got.tensor, want)
        got.ref_count_down()
    # The batched prefix contains that LMCache's lookup uses: stops at the first miss.
    hits = asyncio.run_coroutine_threadsafe(remote.batched_async_contains("lookup-1", keys[:3] + [key(99)] + keys[3:]), loop).result(60)
    assert hits == 3
    conn = remote.connection
    while not isinstance(conn, CisternConnector):  # LMCache may wrap connectors (audit, instrumentation)
        conn = getattr(conn, "_connector", None) or getattr(conn, "connector")
    assert conn.batched_contains(keys) == 8
    assert conn.remove_sync(keys[0]) and not remote.contains(keys[0])
    for b in bs.values():
        b.close()


def test_partial_chunk_and_batched_get(cluster, ns_name, loop):
    bs = backends(cluster, ns_name, loop)
    remote, local = bs["RemoteBackend-cistern"], bs["LocalCPUBackend"]
    conn = remote.connection
    while not isinstance(conn, CisternConnector):
        conn = getattr(conn, "_connector", None) or getattr(conn, "connector")
    short = chunk(local, 7, tokens=5)  # the end of a prompt: 5 of 16 tokens
    want = short.tensor.clone()
    asyncio.run_coroutine_threadsafe(conn.batched_put([key(7)], [short]), loop).result(60)
    [got] = asyncio.run_coroutine_threadsafe(conn.batched_get([key(7)]), loop).result(60)
    assert got is not None and got.tensor.shape == want.shape and torch.equal(got.tensor, want)
    got.ref_count_down()
    prefix = asyncio.run_coroutine_threadsafe(conn.batched_get_non_blocking("l", [key(7), key(8), key(7)]), loop).result(60)
    assert len(prefix) == 1
    for o in prefix:
        o.ref_count_down()
    assert asyncio.run_coroutine_threadsafe(conn.ping(), loop).result(60) == 0
    # LMCache's health check puts new bytes under one fixed key and reads them back.
    probe = CacheEngineKey(model_name="test", world_size=1, worker_id=0, chunk_hash=0, dtype=torch.bfloat16)
    for seed in (1, 2):
        obj = chunk(local, 100 + seed)
        want = obj.tensor.clone()
        asyncio.run_coroutine_threadsafe(conn.batched_put([probe], [obj]), loop).result(60)
        [got] = asyncio.run_coroutine_threadsafe(conn.batched_get([probe]), loop).result(60)
        assert got is not None and torch.equal(got.tensor, want), "the second health probe read the first's bytes"
        got.ref_count_down()
    for b in bs.values():
        b.close()


def test_missing_cluster_is_a_clear_error(loop, monkeypatch):
    monkeypatch.delenv("CISTERN_CLUSTER", raising=False)
    cfg = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=0.05)
    meta = LMCacheMetadata(model_name="m", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
                           kv_dtype=torch.bfloat16, kv_shape=(LAYERS, 2, CHUNK, HEADS, HEAD_DIM), chunk_size=CHUNK)
    bs = CreateStorageBackends(cfg, meta, loop)
    with pytest.raises(ValueError, match="no Cistern cluster configured"):
        CisternConnector(loop, bs["LocalCPUBackend"], cfg)
    layerwise = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=0.05, use_layerwise=True,
                                                  extra_config={"remote_storage_plugin.cistern.cluster": "/nowhere"})
    with pytest.raises(ValueError, match="use_layerwise: false"):
        CisternConnector(loop, bs["LocalCPUBackend"], layerwise)
    for b in bs.values():
        b.close()
