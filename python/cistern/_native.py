"""Loads libcistern and declares its C functions (see cistern.h).

ctypes releases the GIL for the length of every call, so many Python threads can
wait on the cluster at once.
"""
from __future__ import annotations

import ctypes
import os
import threading
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Optional

ABI_VERSION = 1

OK = 0
EINVAL = -1
ENOTFOUND = -2
EUNAVAILABLE = -3
ETOOLARGE = -4
EFULL = -5
ECONFIG = -6
EFORK = -7
EIO = -8
EMISMATCH = -9
ESMALL = -10
EINTERNAL = -11
ENOSPACE = -12
EPERM = -13

PUT_STORED = 0
PUT_EXISTED = 1

DURABILITY = {"default": 0, "cache": 1, "durable": 2}
BATCH_KEYS_MAX = 1024


class Usage(ctypes.Structure):
    _fields_ = [
        ("size", c_uint64),
        ("capacity_pages", c_uint64),
        ("stored_pages", c_uint64),
        ("reserved_pages", c_uint64),
        ("free_pages", c_uint64),
        ("high_water_pages", c_uint64),
        ("page_bytes", c_uint64),
        ("durability", c_uint64),
    ]


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    repo = here.parent.parent
    return [
        here / "_lib" / "libcistern.so",
        repo / ".build-ffi" / "release" / "libCisternFFI.so",
        repo / ".build" / "release" / "libCisternFFI.so",
        repo / ".build" / "debug" / "libCisternFFI.so",
    ]


def library_path() -> Path:
    """Where libcistern is loaded from: $CISTERN_LIBRARY, the wheel's copy, or a build
    in the repository this package was installed from (editable installs)."""
    explicit = os.environ.get("CISTERN_LIBRARY")
    if explicit:
        p = Path(explicit)
        if not p.exists():
            raise OSError(f"CISTERN_LIBRARY={explicit}: no such file; point it at libcistern.so (or unset it)")
        return p
    candidates = _candidates()
    if candidates[0].exists():
        return candidates[0]
    # An editable install: the newest build of the repository.
    built = [p for p in candidates[1:] if p.exists()]
    if built:
        return max(built, key=lambda p: p.stat().st_mtime)
    raise OSError(
        "libcistern.so not found: install the cistern wheel (make python-wheel), or build the library "
        "(swift build --product CisternFFI) in the repository this package comes from, or set CISTERN_LIBRARY"
    )


_lib: Optional[ctypes.CDLL] = None
_lock = threading.Lock()


def lib() -> ctypes.CDLL:
    """The loaded library (loaded on first use, once per process)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            _lib = _declare(ctypes.CDLL(str(library_path())))
    return _lib


def _declare(l: ctypes.CDLL) -> ctypes.CDLL:
    keys = POINTER(c_char_p)
    l.cistern_abi_version.argtypes = []
    l.cistern_abi_version.restype = c_int32
    version = l.cistern_abi_version()
    if version != ABI_VERSION:
        raise OSError(f"libcistern has ABI version {version}; this package needs {ABI_VERSION}: install matching versions")
    l.cistern_last_error.argtypes = []
    l.cistern_last_error.restype = c_char_p
    l.cistern_strerror.argtypes = [c_int32]
    l.cistern_strerror.restype = c_char_p
    l.cistern_connect.argtypes = [c_char_p, c_int32, POINTER(c_void_p)]
    l.cistern_connect.restype = c_int32
    l.cistern_close.argtypes = [c_void_p]
    l.cistern_close.restype = c_int32
    l.cistern_ns_open.argtypes = [c_void_p, c_char_p, c_uint32, c_uint64, c_int32, POINTER(c_void_p)]
    l.cistern_ns_open.restype = c_int32
    l.cistern_ns_close.argtypes = [c_void_p]
    l.cistern_ns_close.restype = c_int32
    l.cistern_batch_exists.argtypes = [c_void_p, keys, c_size_t, POINTER(c_uint8), POINTER(c_size_t)]
    l.cistern_batch_exists.restype = c_int32
    l.cistern_batch_put_from.argtypes = [c_void_p, keys, POINTER(c_void_p), POINTER(c_size_t), c_size_t, POINTER(c_int32)]
    l.cistern_batch_put_from.restype = c_int32
    l.cistern_batch_get_into.argtypes = [c_void_p, keys, POINTER(c_void_p), POINTER(c_size_t), c_size_t, POINTER(c_int64)]
    l.cistern_batch_get_into.restype = c_int32
    l.cistern_batch_delete.argtypes = [c_void_p, keys, c_size_t, POINTER(c_size_t)]
    l.cistern_batch_delete.restype = c_int32
    l.cistern_ns_usage.argtypes = [c_void_p, POINTER(Usage)]
    l.cistern_ns_usage.restype = c_int32
    return l


def code_name(code: int) -> str:
    return lib().cistern_strerror(code).decode()


def last_error() -> str:
    m = lib().cistern_last_error()
    return m.decode("utf-8", "replace") if m else ""
