"""`Store`: a KV namespace of a Cistern cluster, with an API in the spirit of Mooncake
Store's Python API (`setup`, `put`, `get`, `batch_put_from`, `batch_get_into`,
`batch_is_exist`, `remove`), on raw addresses, numpy arrays, torch tensors and
Python buffers."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from ctypes import c_char_p, c_int32, c_int64, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from . import _native as n
from .errors import CisternError, Forked, InvalidArgument, check, error_for


@dataclass(frozen=True)
class Usage:
    """How a namespace's page slots are used."""

    capacity_pages: int
    stored_pages: int
    reserved_pages: int
    free_pages: int
    high_water_pages: int
    page_bytes: int
    durability: str


@dataclass
class Stats:
    """What this Store moved, for dashboards and SGLang's `get_stats`."""

    put_pages: int = 0
    put_bytes: int = 0
    put_seconds: float = 0.0
    get_pages: int = 0
    get_bytes: int = 0
    get_seconds: float = 0.0
    get_misses: int = 0
    exists_calls: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_put(self, pages: int, nbytes: int, seconds: float, failures: int) -> None:
        with self._lock:
            self.put_pages += pages
            self.put_bytes += nbytes
            self.put_seconds += seconds
            self.failures += failures

    def add_get(self, pages: int, nbytes: int, seconds: float, misses: int, failures: int) -> None:
        with self._lock:
            self.get_pages += pages
            self.get_bytes += nbytes
            self.get_seconds += seconds
            self.get_misses += misses
            self.failures += failures

    def snapshot(self) -> dict:
        with self._lock:
            d = {k: getattr(self, k) for k in ("put_pages", "put_bytes", "put_seconds", "get_pages", "get_bytes", "get_seconds", "get_misses", "exists_calls", "failures")}
        d["put_mb_per_s"] = d["put_bytes"] / d["put_seconds"] / 1e6 if d["put_seconds"] > 0 else 0.0
        d["get_mb_per_s"] = d["get_bytes"] / d["get_seconds"] / 1e6 if d["get_seconds"] > 0 else 0.0
        return d


def buffer_of(obj: Any, size: Optional[int] = None, writable: bool = False) -> Tuple[int, int, Any]:
    """(address, bytes, object to keep alive) of a buffer: an int address (with
    `size`), a numpy array, a torch tensor (CPU, contiguous), or a Python buffer
    (bytes only when not `writable`)."""
    if isinstance(obj, int):
        if size is None:
            raise InvalidArgument("a raw address needs a size")
        if obj == 0 and size > 0:
            raise InvalidArgument("the address is NULL (0) but the size is %d" % size)
        return obj, size, None
    if hasattr(obj, "data_ptr") and hasattr(obj, "element_size"):  # torch.Tensor
        if getattr(obj, "device", None) is not None and str(obj.device) != "cpu":
            raise InvalidArgument(f"the tensor is on {obj.device}; Cistern reads and writes host memory (move it to the CPU or use a pinned host pool)")
        if not obj.is_contiguous():
            raise InvalidArgument("the tensor is not contiguous; pass tensor.contiguous()")
        nbytes = obj.numel() * obj.element_size()
        return obj.data_ptr(), nbytes if size is None else min(size, nbytes), obj
    if hasattr(obj, "__array_interface__") and hasattr(obj, "ctypes"):  # numpy.ndarray
        if not obj.flags["C_CONTIGUOUS"]:
            raise InvalidArgument("the array is not C-contiguous; pass numpy.ascontiguousarray(a)")
        if writable and not obj.flags["WRITEABLE"]:
            raise InvalidArgument("the array is read-only")
        return obj.ctypes.data, obj.nbytes if size is None else min(size, obj.nbytes), obj
    if isinstance(obj, bytes):
        if writable:
            raise InvalidArgument("bytes are immutable; read into a bytearray, a numpy array or a tensor")
        p = ctypes.cast(c_char_p(obj), c_void_p).value or 0
        return p, len(obj) if size is None else min(size, len(obj)), obj
    try:
        view = memoryview(obj)
    except TypeError:
        raise InvalidArgument(f"cannot use a {type(obj).__name__} as a buffer; pass an address and size, a numpy array, a torch tensor or a bytearray") from None
    if view.readonly:
        if writable:
            raise InvalidArgument("the buffer is read-only")
        data = bytes(view)
        p = ctypes.cast(c_char_p(data), c_void_p).value or 0
        return p, len(data), data
    arr = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(arr), view.nbytes if size is None else min(size, view.nbytes), (view, arr)


def _keys(keys: Sequence[str]) -> Any:
    arr = (c_char_p * len(keys))()
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise InvalidArgument(f"keys[{i}] is a {type(k).__name__}; keys are str")
        if "\0" in k:
            raise InvalidArgument(f"keys[{i}] contains a NUL character, which C strings cannot carry")
        arr[i] = k.encode("utf-8")
    return arr


def _chunks(count: int) -> Iterable[Tuple[int, int]]:
    for start in range(0, count, n.BATCH_KEYS_MAX):
        yield start, min(count, start + n.BATCH_KEYS_MAX)


class Store:
    """One KV namespace of a Cistern cluster.

    ``Store(cluster, namespace, page_bytes=..., capacity_pages=...)`` connects on
    first use (so a Store made before ``fork`` works in the child); ``setup`` or
    ``connect`` connects now. `cluster` is a path to ``cluster.yaml``, a data directory
    of ``cistern up``, or ``mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT``; it defaults to
    ``$CISTERN_CLUSTER``. With ``page_bytes=0`` the namespace must exist; otherwise it is
    created with that shape if missing.

    Batch calls return one code per key, as Mooncake Store does: ``batch_put_from``
    0 (stored; 1 if it was already stored) or a negative code; ``batch_get_into`` the
    bytes read or a negative code (``-2``: not stored). A failure of the whole call
    (a stopped cluster, an unknown namespace, a NULL address) raises a ``CisternError``
    subclass carrying the library's message. Every call releases the GIL.
    """

    def __init__(self, cluster: Optional[str] = None, namespace: Optional[str] = None, *, page_bytes: int = 0,
                 capacity_pages: int = 0, durability: str = "cache", timeout_ms: int = 30_000):
        self._cluster = cluster
        self._namespace = namespace
        self._page_bytes = page_bytes
        self._capacity_pages = capacity_pages
        self._durability = durability
        self._timeout_ms = timeout_ms
        self._store: Optional[int] = None
        self._ns: Optional[int] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        self.page_bytes = page_bytes
        self.stats = Stats()

    # -- connection ---------------------------------------------------------------

    def setup(self, cluster: Optional[str] = None, namespace: Optional[str] = None, page_bytes: Optional[int] = None,
              capacity_pages: Optional[int] = None, durability: Optional[str] = None, timeout_ms: Optional[int] = None) -> int:
        """Sets what to connect to and connects now; returns 0 (raises on failure)."""
        if cluster is not None:
            self._cluster = cluster
        if namespace is not None:
            self._namespace = namespace
        if page_bytes is not None:
            self._page_bytes = page_bytes
        if capacity_pages is not None:
            self._capacity_pages = capacity_pages
        if durability is not None:
            self._durability = durability
        if timeout_ms is not None:
            self._timeout_ms = timeout_ms
        self.connect()
        return 0

    def connect(self) -> None:
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> None:
        if self._ns is not None:
            if self._pid != os.getpid():
                raise Forked(f"this Store connected in process {self._pid} and is used in process {os.getpid()}, forked after it: "
                             "libcistern's threads do not survive a fork; use Cistern only in processes started fresh "
                             "(multiprocessing 'spawn') or forked before the first use of any Store")
            return
        cluster = self._cluster or os.environ.get("CISTERN_CLUSTER")
        if not cluster:
            raise InvalidArgument("no cluster given: pass Store(cluster=...) (a cluster.yaml, a `cistern up` data directory, "
                                  "or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT) or set CISTERN_CLUSTER")
        namespace = self._namespace or os.environ.get("CISTERN_NAMESPACE") or "default"
        if self._durability not in n.DURABILITY:
            raise InvalidArgument(f"durability '{self._durability}' is unknown; use 'cache' or 'durable'")
        if not 0 <= self._page_bytes < 1 << 32 or not 0 <= self._capacity_pages < 1 << 64:
            raise InvalidArgument(f"page_bytes ({self._page_bytes}) must be in 0...2^32-1 and capacity_pages ({self._capacity_pages}) in 0...2^64-1")
        lib = n.lib()
        store = c_void_p()
        check(lib.cistern_connect(cluster.encode(), int(self._timeout_ms), ctypes.byref(store)))
        ns = c_void_p()
        rc = lib.cistern_ns_open(store, namespace.encode(), int(self._page_bytes), int(self._capacity_pages),
                                 n.DURABILITY[self._durability], ctypes.byref(ns))
        if rc != n.OK:
            err = error_for(rc)
            lib.cistern_close(store)
            raise err
        self._store, self._ns, self._pid = store.value, ns.value, os.getpid()
        self._namespace = namespace
        self.page_bytes = self.usage().page_bytes

    def _handle(self) -> int:
        ns = self._ns
        if ns is not None and self._pid == os.getpid():
            return ns
        with self._lock:
            self._connect_locked()
            assert self._ns is not None
            return self._ns

    @property
    def namespace(self) -> Optional[str]:
        return self._namespace

    def close(self) -> None:
        """Closes the connection (the namespace and its pages stay)."""
        with self._lock:
            if self._store is not None and self._pid == os.getpid():
                n.lib().cistern_close(self._store)
            self._store = self._ns = None

    def __enter__(self) -> "Store":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- batched, on caller memory --------------------------------------------------

    def _batches(self, call: Any, result_type: Any, keys: Sequence[str], ptrs: Sequence[int], sizes: Sequence[int]) -> Iterable[Tuple[int, int, List[int], float]]:
        """Runs `call` (batch_put_from or batch_get_into of the library) over `keys` in
        library-sized batches; yields each batch's range, codes and seconds."""
        if not (len(keys) == len(ptrs) == len(sizes)):
            raise InvalidArgument(f"keys, ptrs and sizes differ in length ({len(keys)}, {len(ptrs)}, {len(sizes)})")
        handle = self._handle()
        for a, b in _chunks(len(keys)):
            count = b - a
            results = (result_type * count)()
            start = time.perf_counter()
            check(call(handle, _keys(keys[a:b]), (c_void_p * count)(*ptrs[a:b]), (c_size_t * count)(*sizes[a:b]), count, results))
            yield a, b, list(results), time.perf_counter() - start

    def batch_put_from(self, keys: Sequence[str], ptrs: Sequence[int], sizes: Sequence[int]) -> List[int]:
        """Stores pages from raw addresses; one code per key (0 stored, 1 already
        stored, negative: see cistern.h)."""
        out: List[int] = []
        for a, b, codes, seconds in self._batches(n.lib().cistern_batch_put_from, c_int32, keys, ptrs, sizes):
            stored = sum(s for s, c in zip(sizes[a:b], codes) if c == n.PUT_STORED)
            self.stats.add_put(sum(1 for c in codes if c >= 0), stored, seconds, sum(1 for c in codes if c < 0))
            out += codes
        return out

    def batch_get_into(self, keys: Sequence[str], ptrs: Sequence[int], sizes: Sequence[int]) -> List[int]:
        """Reads pages into raw addresses; one result per key: bytes read, or a
        negative code (-2 not stored, -10 buffer too small, -8 read failed)."""
        out: List[int] = []
        for _, _, codes, seconds in self._batches(n.lib().cistern_batch_get_into, c_int64, keys, ptrs, sizes):
            self.stats.add_get(sum(1 for c in codes if c >= 0), sum(c for c in codes if c > 0), seconds,
                               sum(1 for c in codes if c == n.ENOTFOUND), sum(1 for c in codes if c < 0 and c != n.ENOTFOUND))
            out += codes
        return out

    def batch_exists(self, keys: Sequence[str]) -> Tuple[List[bool], int]:
        """Each key's presence, and how many keys from the first are present in a row."""
        handle = self._handle()
        lib = n.lib()
        present: List[bool] = []
        hits_total = 0
        prefix_open = True
        for a, b in _chunks(len(keys)):
            count = b - a
            flags = (c_uint8 * count)()
            hits = c_size_t()
            check(lib.cistern_batch_exists(handle, _keys(keys[a:b]), count, flags, ctypes.byref(hits)))
            present += [bool(f) for f in flags]
            if prefix_open:
                hits_total += hits.value
                prefix_open = hits.value == count
        with self.stats._lock:
            self.stats.exists_calls += 1
        return present, hits_total

    def batch_is_exist(self, keys: Sequence[str]) -> List[int]:
        """1 or 0 per key (Mooncake's shape)."""
        return [1 if p else 0 for p in self.batch_exists(keys)[0]]

    def is_exist(self, key: str) -> int:
        return self.batch_is_exist([key])[0]

    def batch_remove(self, keys: Sequence[str]) -> int:
        """Removes keys; returns how many were stored."""
        handle = self._handle()
        lib = n.lib()
        total = 0
        for a, b in _chunks(len(keys)):
            deleted = c_size_t()
            check(lib.cistern_batch_delete(handle, _keys(keys[a:b]), b - a, ctypes.byref(deleted)))
            total += deleted.value
        return total

    def remove(self, key: str) -> int:
        """Removes a key: 0 if it was stored, -2 (not found) if not."""
        return 0 if self.batch_remove([key]) == 1 else n.ENOTFOUND

    def usage(self) -> Usage:
        handle = self._handle()
        u = n.Usage()
        u.size = ctypes.sizeof(n.Usage)
        check(n.lib().cistern_ns_usage(handle, ctypes.byref(u)))
        return Usage(u.capacity_pages, u.stored_pages, u.reserved_pages, u.free_pages, u.high_water_pages, u.page_bytes,
                     "durable" if u.durability == 2 else "cache")

    # -- single keys and Python objects ----------------------------------------------

    def put_from(self, key: str, ptr: int, size: int) -> int:
        return self.batch_put_from([key], [ptr], [size])[0]

    def get_into(self, key: str, ptr: int, size: int) -> int:
        return self.batch_get_into([key], [ptr], [size])[0]

    def batch_put(self, keys: Sequence[str], values: Sequence[Any]) -> List[int]:
        """Stores pages given as numpy arrays, torch tensors or buffers."""
        bufs = [buffer_of(v) for v in values]
        return self.batch_put_from(keys, [b[0] for b in bufs], [b[1] for b in bufs])

    def batch_get_into_buffers(self, keys: Sequence[str], targets: Sequence[Any]) -> List[int]:
        """Reads pages into numpy arrays, torch tensors or writable buffers."""
        bufs = [buffer_of(t, writable=True) for t in targets]
        return self.batch_get_into(keys, [b[0] for b in bufs], [b[1] for b in bufs])

    def put(self, key: str, value: Any) -> int:
        """Stores one page (bytes, a buffer, a numpy array or a torch tensor); returns 0
        (stored or already stored) or raises with the library's message."""
        addr, size, keep = buffer_of(value)
        code = self.batch_put_from([key], [addr], [size])[0]
        del keep
        if code < 0:
            raise error_for(code)
        return 0

    def get(self, key: str) -> bytes:
        """One page's bytes; b"" if the key is not stored (Mooncake's convention)."""
        size = self.page_bytes or self.usage().page_bytes
        buf = bytearray(size)
        addr, _, keep = buffer_of(buf, writable=True)
        code = self.batch_get_into([key], [addr], [size])[0]
        del keep
        if code == n.ENOTFOUND:
            return b""
        if code < 0:
            raise error_for(code)
        return bytes(buf[:code])

    def get_buffer(self, key: str) -> Optional[memoryview]:
        data = self.get(key)
        return memoryview(data) if data else None
