"""LMCache remote storage plugin on Cistern, so vLLM (through its built-in
LMCacheConnectorV1) and SGLang (``--enable-lmcache``) reach a Cistern cluster.

LMCache configuration (YAML, ``LMCACHE_CONFIG_FILE``)::

    chunk_size: 256
    local_cpu: true
    max_local_cpu_size: 5            # GB; LMCache needs a local CPU buffer > 0
    remote_storage_plugins: [cistern]
    extra_config:
      remote_storage_plugin.cistern.module_path: cistern.lmcache
      remote_storage_plugin.cistern.class_name: CisternConnector
      remote_storage_plugin.cistern.cluster: /var/lib/cistern/cluster.yaml
      remote_storage_plugin.cistern.capacity_pages: 100000   # chunks, at creation
      # optional: .namespace (default lmcache-<model>-<fmt>), .durability (cache|durable), .timeout_ms

Each LMCache chunk is one Cistern page of the chunk's full size (the namespace's page
size is LMCache's ``full_chunk_size_bytes``); a chunk shorter than full (the end of a
prompt) is stored short and read back with its length. Chunks are stored as raw bytes,
without LMCache's remote metadata header: the shape and dtype come from the engine's
own metadata, as in LMCache's zero-copy Mooncake path. Keys are
``CacheEngineKey.to_string()`` (model, world size, worker id, hash, dtype), so ranks and
models stay apart.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, List, Optional

from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector

from . import _native as n
from .store import Store

logger = logging.getLogger(__name__)

PLUGIN = "cistern"
DEFAULT_CAPACITY_PAGES = 65_536


def _setting(config: Any, name: str, env: Optional[str] = None) -> Optional[str]:
    extra = getattr(config, "extra_config", None) or {}
    for key in (f"remote_storage_plugin.{PLUGIN}.{name}", f"cistern.{name}"):
        if key in extra and extra[key] not in (None, ""):
            return str(extra[key])
    if env and os.environ.get(env):
        return os.environ[env]
    return None


class CisternConnector(RemoteConnector):
    """A LMCache ``RemoteConnector`` with batched get, put and prefix contains."""

    def __init__(self, loop: asyncio.AbstractEventLoop, local_cpu_backend: Any, config: Any = None):
        config = config or local_cpu_backend.config
        super().__init__(config, local_cpu_backend.metadata)
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self.config = config
        cluster = _setting(config, "cluster", "CISTERN_CLUSTER")
        if not cluster:
            raise ValueError(f"no Cistern cluster configured: set extra_config remote_storage_plugin.{PLUGIN}.cluster "
                             "(a cluster.yaml, a `cistern up` data directory, or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT) or CISTERN_CLUSTER")
        # Chunks are stored as raw bytes of a full-chunk shape: per-layer objects and
        # LMCache's compressing serializers do not fit that and are refused here.
        if getattr(config, "use_layerwise", False):
            raise ValueError("the Cistern connector stores whole chunks: set use_layerwise: false")
        serde = getattr(config, "remote_serde", "naive")
        if serde not in (None, "naive"):
            raise ValueError(f"the Cistern connector stores raw chunk bytes: set remote_serde: naive (not {serde!r})")
        metadata = local_cpu_backend.metadata
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", str(getattr(metadata, "model_name", "model"))).strip("-.") or "model"
        # One namespace per model, format and chunk size (the page size is fixed per namespace).
        default_ns = f"lmcache-{model}-{'mla' if getattr(metadata, 'use_mla', False) else 'kv'}-{self.full_chunk_size_bytes}"[:200]
        self.namespace = _setting(config, "namespace", "CISTERN_NAMESPACE") or default_ns
        self.store = Store(cluster, self.namespace, page_bytes=self.full_chunk_size_bytes,
                           capacity_pages=int(_setting(config, "capacity_pages", "CISTERN_CAPACITY_PAGES") or DEFAULT_CAPACITY_PAGES),
                           durability=_setting(config, "durability", "CISTERN_DURABILITY") or "cache",
                           timeout_ms=int(_setting(config, "timeout_ms", "CISTERN_TIMEOUT_MS") or self._default_timeout_ms(config)))
        self.store.connect()  # a wrong cluster fails at start, with the library's message
        logger.info("cistern: LMCache chunks of %d bytes in namespace %s", self.full_chunk_size_bytes, self.namespace)

    @staticmethod
    def _default_timeout_ms(config: Any) -> int:
        # Below LMCache's own wait for a blocking get, so the library answers first.
        blocking = float(getattr(config, "blocking_timeout_secs", 10) or 10)
        return int(max(1.0, min(30.0, blocking - 1.0)) * 1000)

    # -- contains -------------------------------------------------------------------------

    async def exists(self, key: Any) -> bool:
        return await asyncio.to_thread(self.exists_sync, key)

    def exists_sync(self, key: Any) -> bool:
        return self.store.is_exist(key.to_string()) == 1

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: List[Any]) -> int:
        if not keys:
            return 0
        return self.store.batch_exists([k.to_string() for k in keys])[1]

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(self, lookup_id: str, keys: List[Any], pin: bool = False) -> int:
        """How many keys from the first are stored (one index round trip)."""
        return await asyncio.to_thread(self.batched_contains, keys)

    # -- get ------------------------------------------------------------------------------

    def support_batched_get(self) -> bool:
        return True

    async def get(self, key: Any) -> Optional[Any]:
        return (await self.batched_get([key]))[0]

    async def batched_get(self, keys: List[Any]) -> List[Optional[Any]]:
        task = asyncio.ensure_future(asyncio.to_thread(self._get_sync, keys))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # LMCache gave up waiting; the read still finishes in its thread: release what
            # it filled then, or the local CPU buffer leaks.
            task.add_done_callback(self._release_late)
            raise

    @staticmethod
    def _release_late(task: "asyncio.Future[List[Optional[Any]]]") -> None:
        if task.cancelled() or task.exception() is not None:
            return
        for obj in task.result():
            if obj is not None:
                obj.ref_count_down()

    def _get_sync(self, keys: List[Any]) -> List[Optional[Any]]:
        if not keys:
            return []
        objs: List[Optional[Any]] = [self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes, self.meta_fmt) for _ in keys]
        live = [i for i, o in enumerate(objs) if o is not None]
        if len(live) < len(keys):
            logger.warning("cistern: the local CPU buffer could not hold %d of %d chunks", len(keys) - len(live), len(keys))
        out: List[Optional[Any]] = [None] * len(keys)
        if not live:
            return out
        try:
            results = self.store.batch_get_into([keys[i].to_string() for i in live], [objs[i].data_ptr for i in live],
                                                [objs[i].get_size() for i in live])
        except Exception:
            for i in live:
                objs[i].ref_count_down()
            raise
        for i, got in zip(live, results):
            obj = objs[i]
            if got <= 0:
                if got != n.ENOTFOUND:
                    logger.warning("cistern: chunk %s not read (code %d)", keys[i].to_string(), got)
                obj.ref_count_down()
                continue
            try:
                out[i] = self.reshape_partial_chunk(obj, got)
            except ValueError as e:
                logger.error("cistern: chunk %s has %d bytes, not a whole number of tokens: %s", keys[i].to_string(), got, e)
                obj.ref_count_down()
        return out

    def support_batched_get_non_blocking(self) -> bool:
        return True

    async def batched_get_non_blocking(self, lookup_id: str, keys: List[Any]) -> List[Any]:
        """The chunks from the first up to the first miss (the rest are released)."""
        got = await self.batched_get(keys)
        prefix: List[Any] = []
        for obj in got:
            if obj is None:
                break
            prefix.append(obj)
        for obj in got[len(prefix):]:
            if obj is not None:
                obj.ref_count_down()
        return prefix

    # -- put ------------------------------------------------------------------------------

    def support_batched_put(self) -> bool:
        return True

    async def put(self, key: Any, memory_obj: Any) -> None:
        await self.batched_put([key], [memory_obj])

    async def batched_put(self, keys: List[Any], memory_objs: List[Any]) -> None:
        await asyncio.to_thread(self._put_sync, keys, memory_objs)

    @staticmethod
    def _is_health_probe(key: Any) -> bool:
        # LMCache's remote health check puts fresh bytes under one fixed key and expects
        # to read them back; every other key names its content (a chunk hash).
        return getattr(key, "model_name", None) == "test" and getattr(key, "chunk_hash", None) == 0

    def _put_sync(self, keys: List[Any], memory_objs: List[Any]) -> None:
        if not keys:
            return
        # A put of a stored key is skipped (content-addressed keys hold the same bytes),
        # except the health probe, which must be replaced.
        probes = [k.to_string() for k in keys if self._is_health_probe(k)]
        if probes:
            self.store.batch_remove(probes)
        results = self.store.batch_put_from([k.to_string() for k in keys], [o.data_ptr for o in memory_objs],
                                            [o.get_size() for o in memory_objs])
        failed = [(k.to_string(), r) for k, r in zip(keys, results) if r < 0]
        if failed:
            # LMCache treats a failed remote put as a cache miss later: say why, once per batch.
            logger.warning("cistern: %d of %d chunks not stored (first: %s, code %d: %s)", len(failed), len(keys), failed[0][0],
                           failed[0][1], n.last_error())

    # -- the rest -------------------------------------------------------------------------

    def remove_sync(self, key: Any) -> bool:
        return self.store.remove(key.to_string()) == 0

    async def list(self) -> List[str]:
        # Cistern's KV index answers lookups by key; it does not enumerate a namespace.
        # LMCache calls list() only from its file-system chunk loader.
        raise NotImplementedError("the Cistern connector cannot list keys: its KV index looks keys up but does not enumerate them")

    def support_ping(self) -> bool:
        return True

    async def ping(self) -> int:
        try:
            await asyncio.to_thread(self.store.usage)
            return 0
        except Exception as e:  # LMCache expects an error code, not an exception
            logger.warning("cistern: ping failed: %s", e)
            return 1

    async def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"<CisternConnector namespace={self.namespace}>"
