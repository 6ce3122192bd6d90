"""SGLang HiCache L3 backend on Cistern.

Loaded by SGLang as a dynamic storage backend::

    python -m sglang.launch_server ... --enable-hierarchical-cache --page-size 64 \\
        --hicache-mem-layout page_first --hicache-storage-backend dynamic \\
        --hicache-storage-backend-extra-config '{"backend_name": "cistern",
            "module_path": "cistern.sglang", "class_name": "CisternHiCacheStorage",
            "interface_v1": 1, "cluster": "/var/lib/cistern/cluster.yaml",
            "capacity_pages": 1000000}'

Configuration, first found wins per key: the extra config; the JSON or YAML file named
by ``extra_config["config_file"]`` or ``$CISTERN_SGLANG_CONFIG``; the environment
(``CISTERN_CLUSTER``, ``CISTERN_NAMESPACE``, ``CISTERN_CAPACITY_PAGES``,
``CISTERN_DURABILITY``, ``CISTERN_TIMEOUT_MS``). Keys:

- ``cluster``: a cluster.yaml, a ``cistern up`` data directory, or
  ``mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT`` (required).
- ``namespace``: the KV namespace (default: ``sglang-<model>-<page bytes>``); every
  rank of a deployment whose objects have the same size uses the same one.
- ``capacity_pages`` (default 262144) and ``durability`` (``cache``, the default, or
  ``durable``): used when the namespace is created.
- ``page_bytes``: the namespace's page size; by default one K (or V, or MLA) object of
  a page of the registered host pool.
- ``timeout_ms``: the bound of every call (default 30000).

Keys are SGLang's page hashes with suffixes that keep ranks and K/V apart: MHA
``{hash}_{tp_rank}_{tp_size}_k`` and ``_v`` (plus ``_pp{rank}`` with pipeline
parallelism), MLA ``{hash}_mla_k`` written by the storage writer rank only (all
ranks read it); without ``interface_v1`` one object per page, ``..._page``. A set of a stored key is a cheap success: Cistern's put skips it
without moving data.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import torch

from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig, HiCacheStorageExtraInfo

from . import _native as n
from .store import Store

logger = logging.getLogger(__name__)

try:  # the real metrics type when SGLang's observability module imports here
    from sglang.srt.observability.metrics_collector import StorageMetrics
except Exception:  # pragma: no cover - depends on SGLang's optional dependencies
    @dataclass
    class StorageMetrics:  # type: ignore[no-redef]
        prefetch_pgs: List[int] = field(default_factory=list)
        backup_pgs: List[int] = field(default_factory=list)
        prefetch_bandwidth: List[float] = field(default_factory=list)
        backup_bandwidth: List[float] = field(default_factory=list)

DEFAULT_CAPACITY_PAGES = 262_144
_ENV = {
    "cluster": "CISTERN_CLUSTER",
    "namespace": "CISTERN_NAMESPACE",
    "capacity_pages": "CISTERN_CAPACITY_PAGES",
    "durability": "CISTERN_DURABILITY",
    "timeout_ms": "CISTERN_TIMEOUT_MS",
    "page_bytes": "CISTERN_PAGE_BYTES",
}
# Keys SGLang itself reads from (or adds to) the extra config.
_SGLANG_KEYS = {"interface_v2", "file_storage_path", "prefetch_threshold", "prefetch_timeout_base", "prefetch_timeout_per_ki_token",
                "hicache_storage_pass_prefix_keys", "backend_name", "module_path", "class_name", "interface_v1", "config_file", "allocator", "extra_backend_tag"}


def load_config(extra_config: Optional[dict]) -> dict:
    """The backend's settings: extra config, then a file, then the environment."""
    extra = dict(extra_config or {})
    path = extra.get("config_file") or os.environ.get("CISTERN_SGLANG_CONFIG")
    from_file: dict = {}
    if path:
        with open(path) as f:
            text = f.read()
        try:
            from_file = json.loads(text)
        except json.JSONDecodeError:
            import yaml  # YAML is optional: only for YAML files

            from_file = yaml.safe_load(text) or {}
        if not isinstance(from_file, dict):
            raise ValueError(f"{path}: expected a mapping of cistern settings")
    out: dict = {}
    for key, env in _ENV.items():
        if key in extra:
            out[key] = extra[key]
        elif key in from_file:
            out[key] = from_file[key]
        elif os.environ.get(env):
            out[key] = os.environ[env]
    unknown = set(extra) - set(_ENV) - _SGLANG_KEYS
    if unknown:
        raise ValueError(f"unknown cistern settings in the extra config: {sorted(unknown)}; known: {sorted(_ENV)}")
    if not out.get("cluster"):
        raise ValueError("no Cistern cluster configured: set \"cluster\" in --hicache-storage-backend-extra-config "
                         "(a cluster.yaml, a `cistern up` data directory, or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT) or CISTERN_CLUSTER")
    return out


def _namespace_for(model: Optional[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model or "model").strip("-.") or "model"
    return ("sglang-" + name)[:200]


class CisternHiCacheStorage(HiCacheStorage):
    """An SGLang HiCache storage backend on a Cistern KV namespace."""

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None):
        self.storage_config = storage_config
        self.kwargs = kwargs or {}
        self.settings = load_config(storage_config.extra_config if storage_config else None)
        self.is_mla = bool(storage_config.is_mla_model)
        self.is_writer = bool(storage_config.is_storage_writer)
        self.tp_rank, self.tp_size = storage_config.tp_rank, storage_config.tp_size
        # Without interface_v1 SGLang moves whole flat pages (K and V of every layer) as tensors.
        self.zero_copy = bool((storage_config.extra_config or {}).get("interface_v1"))
        pp = f"_pp{storage_config.pp_rank}" if storage_config.pp_size > 1 else ""
        dcp = f"_dcp{storage_config.dcp_rank}" if storage_config.dcp_size > 1 else ""
        # Context-parallel ranks hold different slices of a page.
        cp = f"_cp{storage_config.attn_cp_rank}" if storage_config.attn_cp_size > 1 else ""
        rank = f"{pp}{dcp}{cp}_mla" if self.is_mla else f"_{self.tp_rank}_{self.tp_size}{pp}{cp}"
        self.objects_per_page = 1 if self.is_mla else 2
        if not self.zero_copy:
            self.suffixes: Tuple[str, ...] = (f"{rank}_page",)
        elif self.is_mla:
            self.suffixes = (f"{rank}_k",)
        else:
            self.suffixes = (f"{rank}_k", f"{rank}_v")
        self._namespace_setting = self.settings.get("namespace")
        self.namespace = str(self._namespace_setting or "")
        self.model_name = storage_config.model_name
        self.capacity_pages = int(self.settings.get("capacity_pages") or DEFAULT_CAPACITY_PAGES)
        self.durability = str(self.settings.get("durability") or "cache")
        self.timeout_ms = int(self.settings.get("timeout_ms") or 30_000)
        self.page_bytes = int(self.settings.get("page_bytes") or 0)
        self.mem_pool_host: Any = None
        # `clear()` moves every rank to a new key generation (see _generation_marker).
        self.generation = 0
        self._store: Optional[Store] = None
        self._lock = threading.Lock()
        self._metrics_lock = threading.Lock()
        self.prefetch_pgs: List[int] = []
        self.backup_pgs: List[int] = []
        self.prefetch_bandwidth: List[float] = []
        self.backup_bandwidth: List[float] = []
        if self.page_bytes:
            self._open()  # fail at start, not at the first batch, when the cluster is wrong

    # -- setup ----------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        if not self.page_bytes:
            # One object of one page: what a key holds (K, V or the MLA latent).
            probe = torch.arange(0, mem_pool_host.page_size, dtype=torch.int64)
            ptrs, sizes = mem_pool_host.get_page_buffer_meta(probe)
            per = self.objects_per_page
            if len(sizes) != per:
                raise RuntimeError(f"the host pool gives {len(sizes)} buffers per page; Cistern's backend needs {per} "
                                   f"({'MLA' if self.is_mla else 'K and V'}): use --hicache-mem-layout page_first")
            self.page_bytes = int(max(sizes)) if self.zero_copy else int(sum(sizes))
        self._open()

    def register_mem_host_pool_v2(self, host_pool: Any, host_pool_name: Any) -> None:
        raise NotImplementedError(
            f"the Cistern HiCache backend stores the KV pool only; this model also has the host pool '{host_pool_name}' "
            "(Mamba, SWA, DSA or a draft model), which needs SGLang's v2 storage interface: use a model without extra pools "
            "or another backend for now")

    def _open(self) -> Store:
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None:
                if not self.page_bytes:
                    raise RuntimeError("the Cistern backend has no page size yet: register the host pool first or set page_bytes")
                if not self.namespace:
                    # One namespace per model and page size: ranks whose objects differ in
                    # size (TP sizes, dtypes, uneven pipeline stages) get their own.
                    self.namespace = _namespace_for(f"{self.model_name}-{self.page_bytes}")
                s = Store(str(self.settings["cluster"]), self.namespace, page_bytes=self.page_bytes,
                          capacity_pages=self.capacity_pages, durability=self.durability, timeout_ms=self.timeout_ms)
                s.connect()
                self._store = s
                self.generation = self._current_generation(s)
                logger.info("cistern: namespace %s, %d-byte pages, %s", self.namespace, self.page_bytes, s.usage())
        return self._store

    @property
    def store(self) -> Store:
        return self._open()

    # -- generations: what `clear()` does ----------------------------------------------

    @staticmethod
    def _generation_marker(generation: int) -> str:
        return f"__cistern_sglang_cleared_{generation}"

    def _current_generation(self, store: Store) -> int:
        """The number of clears so far: the markers present in a row from 1."""
        generation = 0
        while True:
            probes = [self._generation_marker(g) for g in range(generation + 1, generation + 65)]
            hits = store.batch_exists(probes)[1]
            generation += hits
            if hits < len(probes):
                return generation

    def _prefix(self) -> str:
        return f"g{self.generation}-" if self.generation else ""

    def _keys(self, keys: List[str]) -> List[str]:
        prefix = self._prefix()
        return [prefix + k + s for k in keys for s in self.suffixes]

    def _page_meta(self, keys: List[str], host_indices: torch.Tensor) -> Tuple[List[int], List[int]]:
        ptrs, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        want = len(keys) * len(self.suffixes)
        if len(ptrs) != want:
            raise RuntimeError(f"get_page_buffer_meta gave {len(ptrs)} buffers for {len(keys)} pages; expected {want} "
                               "(use --hicache-mem-layout page_first or page_first_direct)")
        return [int(p) for p in ptrs], [int(s) for s in sizes]

    def _group(self, results: List[int], ok) -> List[bool]:
        per = len(self.suffixes)
        return [all(ok(r) for r in results[i:i + per]) for i in range(0, len(results), per)]

    # -- zero-copy interface (interface_v1) -------------------------------------------

    def batch_exists(self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        if not keys:
            return 0
        # The next generation's marker rides along: another rank's clear shows up here.
        store = self.store
        marker, *present = store.batch_exists([self._generation_marker(self.generation + 1)] + self._keys(keys))[0]
        if marker:
            self.generation = self._current_generation(store)
            return 0
        per = len(self.suffixes)
        for page in range(len(keys)):
            if not all(present[page * per:(page + 1) * per]):
                return page
        return len(keys)

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        if not keys:
            return []
        if not self.is_writer:
            return [True] * len(keys)  # MLA: one rank writes what every rank reads
        ptrs, sizes = self._page_meta(keys, host_indices)
        start = time.perf_counter()
        results = self.store.batch_put_from(self._keys(keys), ptrs, sizes)
        self._record(self.backup_pgs, self.backup_bandwidth, len(keys), sum(sizes), time.perf_counter() - start)
        return self._group(results, lambda r: r >= 0)

    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        if not keys:
            return []
        ptrs, sizes = self._page_meta(keys, host_indices)
        start = time.perf_counter()
        results = self.store.batch_get_into(self._keys(keys), ptrs, sizes)
        self._record(self.prefetch_pgs, self.prefetch_bandwidth, len(keys), sum(sizes), time.perf_counter() - start)
        # A page is loaded only if every object came back whole.
        full = [r == s for r, s in zip(results, sizes)]
        per = len(self.suffixes)
        return [all(full[i:i + per]) for i in range(0, len(full), per)]

    # -- tensor interface (without interface_v1) ----------------------------------------

    def _legacy_key(self, key: str) -> str:
        return self._prefix() + key + self.suffixes[0]

    def _legacy_store(self, value_bytes: int) -> Store:
        if not self.page_bytes:
            self.page_bytes = value_bytes
        return self.store

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        return self.batch_set([key], [value] if value is not None else None, target_location, target_sizes)

    def batch_set(self, keys: List[str], values: Optional[Any] = None, target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        if not keys:
            return True
        if not self.is_writer:
            return True
        if values is None:
            raise ValueError("batch_set needs values (tensors); the zero-copy path is batch_set_v1 with interface_v1")
        tensors = [v.contiguous() for v in values]
        nbytes = [t.numel() * t.element_size() for t in tensors]
        store = self._legacy_store(max(nbytes))
        start = time.perf_counter()
        results = store.batch_put_from([self._legacy_key(k) for k in keys], [t.data_ptr() for t in tensors], nbytes)
        self._record(self.backup_pgs, self.backup_bandwidth, len(keys), sum(nbytes), time.perf_counter() - start)
        return all(r >= 0 for r in results)

    def get(self, key: str, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> Optional[torch.Tensor]:
        got = self.batch_get([key], [target_location] if target_location is not None else None, target_sizes)
        return got[0]

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None) -> List[Optional[torch.Tensor]]:
        if not keys:
            return []
        if target_locations is None:
            size = self.page_bytes or self.store.page_bytes
            targets = [torch.empty(size, dtype=torch.uint8) for _ in keys]
        else:
            targets = list(target_locations)
        nbytes = [t.numel() * t.element_size() for t in targets]
        store = self._legacy_store(max(nbytes))
        start = time.perf_counter()
        results = store.batch_get_into([self._legacy_key(k) for k in keys], [t.data_ptr() for t in targets], nbytes)
        self._record(self.prefetch_pgs, self.prefetch_bandwidth, len(keys), sum(r for r in results if r > 0), time.perf_counter() - start)
        out: List[Optional[torch.Tensor]] = []
        for t, r, size in zip(targets, results, nbytes):
            if r == size or (target_locations is None and r >= 0):
                out.append(t if target_locations is not None else t[:r])
            else:
                out.append(None)
        return out

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    # -- housekeeping -------------------------------------------------------------------

    def clear(self) -> None:
        """Forgets every stored page, for every rank and engine on the namespace: keys
        move to a new generation (marked in the namespace, seen by other ranks at their
        next exists), so older pages are never hit again; they stay until eviction
        reclaims their slots."""
        store = self.store
        generation = self._current_generation(store) + 1
        if store.batch_put([self._generation_marker(generation)], [b"\x01"])[0] < 0:
            raise RuntimeError(f"cistern: could not record the clear: {n.last_error()}")
        self.generation = generation
        with self._metrics_lock:
            self.prefetch_pgs.clear()
            self.backup_pgs.clear()
            self.prefetch_bandwidth.clear()
            self.backup_bandwidth.clear()

    def _record(self, pages: List[int], bandwidth: List[float], count: int, nbytes: int, seconds: float) -> None:
        with self._metrics_lock:
            pages.append(count)
            bandwidth.append(nbytes / seconds / 1e9 if seconds > 0 else 0.0)  # GB/s, as SGLang's other backends
            if len(pages) > 10_000:  # bounded until get_stats drains it
                del pages[:5_000]
                del bandwidth[:5_000]

    def get_stats(self) -> Any:
        m = StorageMetrics()
        with self._metrics_lock:
            m.prefetch_pgs.extend(self.prefetch_pgs)
            m.backup_pgs.extend(self.backup_pgs)
            m.prefetch_bandwidth.extend(self.prefetch_bandwidth)
            m.backup_bandwidth.extend(self.backup_bandwidth)
            self.prefetch_pgs.clear()
            self.backup_pgs.clear()
            self.prefetch_bandwidth.clear()
            self.backup_bandwidth.clear()
        return m

    def usage(self):
        return self.store.usage()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


__all__ = ["CisternHiCacheStorage", "load_config"]
