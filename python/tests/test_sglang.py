"""A contract test against SGLang's own code (sglang 0.5.23): the real HiCacheStorage
ABC and StorageBackendFactory build Cistern's backend as a `dynamic` backend, and the
test drives it as SGLang's cache controller does: 128-page batches, prefix exists,
zero-copy set then get through a host pool with `get_page_buffer_meta`'s page-first
pointer layout, byte-for-byte checks, TP ranks, MLA, the tensor interface, and
eviction under capacity reported as misses."""
import hashlib
import json

import pytest
import torch

import sglang_env

sglang_env.install()

from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig  # noqa: E402
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory  # noqa: E402

from cistern.sglang import CisternHiCacheStorage  # noqa: E402

BATCH = 128  # SGLang's STORAGE_BATCH_SIZE


class FakeMHAHostPool:
    """An MHA host pool with SGLang's page_first layout: kv_buffer is
    (2, tokens, layers, heads, head_dim); a page's K (and V) bytes for every layer
    are one contiguous object, at the offsets MHATokenToKVPoolHost computes."""

    layout = "page_first"

    def __init__(self, pages: int, page_size: int = 16, layer_num: int = 2, head_num: int = 4, head_dim: int = 64, dtype=torch.bfloat16, seed: int = 0):
        self.page_size, self.layer_num, self.head_num, self.head_dim, self.dtype = page_size, layer_num, head_num, head_dim, dtype
        self.size = pages * page_size
        g = torch.Generator().manual_seed(seed)
        self.kv_buffer = torch.randn((2, self.size, layer_num, head_num, head_dim), generator=g).to(dtype)

    def get_ksize_per_token(self) -> int:
        return self.layer_num * self.head_num * self.head_dim * self.dtype.itemsize

    def get_page_buffer_meta(self, indices):
        assert len(indices) % self.page_size == 0
        base = self.kv_buffer.data_ptr()
        item = self.dtype.itemsize
        v_offset = self.layer_num * self.size * self.head_num * self.head_dim * item
        ptrs = []
        indices = indices.tolist()
        for i in range(0, len(indices), self.page_size):
            k = base + indices[i] * self.layer_num * self.head_num * self.head_dim * item
            ptrs += [k, k + v_offset]
        element = self.layer_num * item * self.page_size * self.head_num * self.head_dim
        return ptrs, [element] * len(ptrs)

    def page(self, page: int) -> torch.Tensor:
        return self.kv_buffer[:, page * self.page_size:(page + 1) * self.page_size].clone()


class FakeMLAHostPool(FakeMHAHostPool):
    """An MLA host pool: kv_buffer is (tokens, layers, 1, kv_lora_rank + rope); one
    object per page."""

    def __init__(self, pages: int, page_size: int = 16, layer_num: int = 2, dim: int = 576, seed: int = 0):
        self.page_size, self.layer_num, self.dim, self.dtype = page_size, layer_num, dim, torch.bfloat16
        self.size = pages * page_size
        g = torch.Generator().manual_seed(seed)
        self.kv_buffer = torch.randn((self.size, layer_num, 1, dim), generator=g).to(self.dtype)

    def get_page_buffer_meta(self, indices):
        base = self.kv_buffer.data_ptr()
        item = self.dtype.itemsize
        indices = indices.tolist()
        ptrs = [base + indices[i] * self.layer_num * self.dim * item for i in range(0, len(indices), self.page_size)]
        return ptrs, [self.layer_num * self.page_size * self.dim * item] * len(ptrs)

    def page(self, page: int) -> torch.Tensor:
        return self.kv_buffer[page * self.page_size:(page + 1) * self.page_size].clone()


def page_keys(count: int, salt: str = "") -> list:
    """Chained SHA-256 page hashes, as SGLang's get_hash_str makes them."""
    keys, prev = [], salt.encode()
    for i in range(count):
        prev = hashlib.sha256(prev + i.to_bytes(4, "little")).hexdigest().encode()
        keys.append(prev.decode())
    return keys


def indices_for(pages: range, page_size: int) -> torch.Tensor:
    return torch.cat([torch.arange(p * page_size, (p + 1) * page_size, dtype=torch.int64) for p in pages])


def config(cluster, ns, tp_rank=0, tp_size=1, mla=False, v1=True, **extra) -> HiCacheStorageConfig:
    ec = {"backend_name": "cistern", "module_path": "cistern.sglang", "class_name": "CisternHiCacheStorage",
          "cluster": cluster.data_dir, "namespace": ns, "capacity_pages": 4096}
    if v1:
        ec["interface_v1"] = 1
    ec.update(extra)
    return HiCacheStorageConfig(tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
                                is_mla_model=mla, enable_storage_metrics=True, is_page_first_layout=True, model_name="Qwen/Qwen3-8B",
                                extra_config=ec)


def make(cfg, pool) -> CisternHiCacheStorage:
    backend = StorageBackendFactory.create_backend("dynamic", cfg, pool)
    assert isinstance(backend, CisternHiCacheStorage) and isinstance(backend, HiCacheStorage)
    backend.register_mem_pool_host(pool)  # as the cache controller does
    backend.on_host_pools_registered()
    return backend


def test_zero_copy_batches_through_the_factory(cluster, ns_name):
    src = FakeMHAHostPool(pages=2 * BATCH, seed=1)
    b = make(config(cluster, ns_name), src)
    assert b.page_bytes == 2 * 16 * 4 * 64 * 2  # one K object of a page
    keys = page_keys(2 * BATCH)
    first, second = keys[:BATCH], keys[BATCH:]
    assert b.batch_exists(first) == 0
    assert b.batch_set_v1(first, indices_for(range(0, BATCH), 16)) == [True] * BATCH
    assert b.batch_set_v1(second, indices_for(range(BATCH, 2 * BATCH), 16)) == [True] * BATCH
    # A set of stored keys is a cheap success.
    assert b.batch_set_v1(first, indices_for(range(0, BATCH), 16)) == [True] * BATCH
    # Prefix exists: SGLang stops at the first miss.
    assert b.batch_exists(first) == BATCH
    assert b.batch_exists(first[:10] + page_keys(1, "miss") + first[10:20]) == 10
    # Get into another host pool, at other host indices, byte for byte.
    dst = FakeMHAHostPool(pages=2 * BATCH, seed=2)
    dst.kv_buffer.zero_()
    b.register_mem_pool_host(dst)
    assert b.batch_get_v1(second, indices_for(range(0, BATCH), 16)) == [True] * BATCH
    assert b.batch_get_v1(first, indices_for(range(BATCH, 2 * BATCH), 16)) == [True] * BATCH
    for p in range(BATCH):
        assert torch.equal(dst.page(p), src.page(BATCH + p)), f"page {p}"
        assert torch.equal(dst.page(BATCH + p), src.page(p)), f"page {BATCH + p}"
    # A missing page reads as False; SGLang stops loading there.
    assert b.batch_get_v1(page_keys(2, "absent"), indices_for(range(0, 2), 16)) == [False, False]
    stats = b.get_stats()
    assert sum(stats.backup_pgs) == 3 * BATCH and sum(stats.prefetch_pgs) == 2 * BATCH + 2
    assert all(bw > 0 for bw in stats.prefetch_bandwidth)
    assert b.get_stats().backup_pgs == []  # drained
    b.close()


def test_tensor_parallel_ranks_and_kv_stay_apart(cluster, ns_name):
    keys = page_keys(32, "tp")
    pools = [FakeMHAHostPool(pages=32, seed=10 + r) for r in range(2)]
    ranks = [make(config(cluster, ns_name, tp_rank=r, tp_size=2), pools[r]) for r in range(2)]
    for r in range(2):
        assert ranks[r].batch_set_v1(keys, indices_for(range(32), 16)) == [True] * 32
    for r in range(2):
        back = FakeMHAHostPool(pages=32)
        back.kv_buffer.zero_()
        ranks[r].register_mem_pool_host(back)
        assert ranks[r].batch_get_v1(keys, indices_for(range(32), 16)) == [True] * 32
        assert torch.equal(back.kv_buffer, pools[r].kv_buffer), f"rank {r} read another rank's pages"
    # K and V are separate objects: the V of page 0 is not the K.
    assert not torch.equal(pools[0].kv_buffer[0, :16], pools[0].kv_buffer[1, :16])


def test_mla_has_one_writer_and_every_rank_reads(cluster, ns_name):
    keys = page_keys(BATCH, "mla")
    writer_pool = FakeMLAHostPool(pages=BATCH, seed=3)
    other_pool = FakeMLAHostPool(pages=BATCH, seed=4)
    writer = make(config(cluster, ns_name, tp_rank=0, tp_size=2, mla=True), writer_pool)
    other = make(config(cluster, ns_name, tp_rank=1, tp_size=2, mla=True), other_pool)
    assert writer.storage_config.is_storage_writer and not other.storage_config.is_storage_writer
    # The non-writer's set is a success that writes nothing.
    assert other.batch_set_v1(keys, indices_for(range(BATCH), 16)) == [True] * BATCH
    assert writer.batch_exists(keys) == 0
    assert writer.batch_set_v1(keys, indices_for(range(BATCH), 16)) == [True] * BATCH
    assert other.batch_exists(keys) == BATCH
    other_pool.kv_buffer.zero_()
    assert other.batch_get_v1(keys, indices_for(range(BATCH), 16)) == [True] * BATCH
    assert torch.equal(other_pool.kv_buffer, writer_pool.kv_buffer)


def test_tensor_interface_without_v1(cluster, ns_name):
    pool = FakeMHAHostPool(pages=8, seed=5)
    b = make(config(cluster, ns_name, v1=False), pool)
    assert b.page_bytes == 2 * (2 * 16 * 4 * 64 * 2)  # a whole flat page
    keys = page_keys(8, "legacy")
    flats = [pool.page(p).flatten().contiguous() for p in range(8)]
    assert b.batch_set(keys, flats) is True
    assert b.set(keys[0], flats[0]) is True
    assert b.exists(keys[3]) and not b.exists(page_keys(1, "nope")[0])
    assert b.batch_exists(keys) == 8
    targets = [torch.zeros_like(f) for f in flats]
    got = b.batch_get(keys, targets)
    assert all(torch.equal(g, f) for g, f in zip(got, flats))
    one = b.get(keys[2], torch.zeros_like(flats[2]))
    assert torch.equal(one, flats[2])
    assert b.get(page_keys(1, "nope")[0], torch.zeros_like(flats[0])) is None


def test_eviction_under_capacity_reads_as_misses(cluster, ns_name):
    # 64 slots hold 32 MHA pages (K and V): writing 128 pages evicts the oldest.
    pool = FakeMHAHostPool(pages=BATCH, seed=6)
    b = make(config(cluster, ns_name, capacity_pages=64), pool)
    keys = page_keys(BATCH, "evict")
    for start in range(0, BATCH, 16):
        assert b.batch_set_v1(keys[start:start + 16], indices_for(range(start, start + 16), 16)) == [True] * 16
    assert b.batch_exists(keys[:16]) == 0, "the oldest pages should have been evicted"
    assert b.batch_exists(keys[-16:]) == 16
    back = FakeMHAHostPool(pages=BATCH)
    back.kv_buffer.zero_()
    b.register_mem_pool_host(back)
    results = b.batch_get_v1(keys, indices_for(range(BATCH), 16))
    assert results[:16] == [False] * 16 and results[-16:] == [True] * 16
    for p, ok in enumerate(results):
        if ok:
            assert torch.equal(back.page(p), pool.page(p)), f"page {p} came back wrong"
    assert b.usage().stored_pages <= 64


def test_config_from_file_and_environment(cluster, ns_name, tmp_path, monkeypatch):
    f = tmp_path / "cistern.json"
    f.write_text(json.dumps({"cluster": cluster.data_dir, "capacity_pages": 128}))
    cfg = config(cluster, ns_name)
    del cfg.extra_config["cluster"]
    del cfg.extra_config["capacity_pages"]
    cfg.extra_config["config_file"] = str(f)
    b = make(cfg, FakeMHAHostPool(pages=4))
    assert b.capacity_pages == 128 and b.usage().capacity_pages == 128
    monkeypatch.setenv("CISTERN_CLUSTER", cluster.data_dir)
    cfg2 = config(cluster, ns_name + "-env")
    del cfg2.extra_config["cluster"]
    assert make(cfg2, FakeMHAHostPool(pages=4)).batch_exists(page_keys(1)) == 0
    bad = config(cluster, ns_name)
    bad.extra_config["clustr"] = "typo"
    with pytest.raises(ValueError, match="unknown cistern settings"):
        StorageBackendFactory.create_backend("dynamic", bad, None)


def test_clear_forgets_pages_for_every_rank(cluster, ns_name):
    pools = [FakeMHAHostPool(pages=16, seed=20 + r) for r in range(2)]
    ranks = [make(config(cluster, ns_name, tp_rank=r, tp_size=2), pools[r]) for r in range(2)]
    keys = page_keys(16, "clear")
    for r in range(2):
        assert ranks[r].batch_set_v1(keys, indices_for(range(16), 16)) == [True] * 16
        assert ranks[r].batch_exists(keys) == 16
    ranks[0].clear()
    assert ranks[0].batch_exists(keys) == 0
    # The other rank sees the clear at its next exists, with no extra round trip.
    assert ranks[1].batch_exists(keys) == 0
    assert ranks[1].batch_exists(keys) == 0
    # A backend attached later starts in the new generation too.
    late = make(config(cluster, ns_name, tp_rank=1, tp_size=2), FakeMHAHostPool(pages=16))
    assert late.generation == ranks[1].generation == 1 and late.batch_exists(keys) == 0
    # And the cache works again after the clear.
    assert ranks[1].batch_set_v1(keys, indices_for(range(16), 16)) == [True] * 16
    back = FakeMHAHostPool(pages=16)
    back.kv_buffer.zero_()
    late.register_mem_pool_host(back)
    assert late.batch_get_v1(keys, indices_for(range(16), 16)) == [True] * 16
    assert torch.equal(back.kv_buffer, pools[1].kv_buffer)


def test_default_namespace_and_extra_pools(cluster):
    cfg = config(cluster, "unused")
    del cfg.extra_config["namespace"]
    b = make(cfg, FakeMHAHostPool(pages=4))
    assert b.namespace == f"sglang-Qwen-Qwen3-8B-{b.page_bytes}"
    with pytest.raises(NotImplementedError, match="stores the KV pool only"):
        b.register_mem_host_pool_v2(object(), "mamba")
