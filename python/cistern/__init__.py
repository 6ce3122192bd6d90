"""Cistern's Python client: a KVCache store for LLM inference.

    from cistern import Store
    store = Store("/tmp/cistern", "llama", page_bytes=64 << 10, capacity_pages=100_000)
    store.batch_put_from(keys, ptrs, sizes)     # raw addresses, as Mooncake Store
    store.batch_get_into(keys, ptrs, sizes)

Connectors: `cistern.sglang.CisternHiCacheStorage` (SGLang HiCache, dynamic backend)
and `cistern.lmcache.CisternConnector` (LMCache remote storage plugin, for vLLM).
"""
from .errors import (BufferTooSmall, CisternError, ConfigError, Forked, Full, InvalidArgument, IOFailure, Mismatch,
                     NoSpace, NotFound, PermissionDenied, TooLarge, Unavailable)
from .store import Stats, Store, Usage, buffer_of

__all__ = ["Store", "Usage", "Stats", "buffer_of", "CisternError", "InvalidArgument", "NotFound", "Unavailable", "TooLarge",
           "Full", "ConfigError", "Forked", "IOFailure", "Mismatch", "BufferTooSmall", "NoSpace", "PermissionDenied"]
__version__ = "0.1.0"
