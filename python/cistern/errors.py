"""Exceptions of the cistern package: one class per libcistern error code, each
carrying the library's message (which names the problem and the fix)."""
from __future__ import annotations

from . import _native as n


class CisternError(Exception):
    """A call to the cluster failed; `code` is the libcistern code (negative)."""

    code: int = n.EINTERNAL

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgument(CisternError, ValueError):
    code = n.EINVAL


class NotFound(CisternError, KeyError):
    code = n.ENOTFOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Unavailable(CisternError, ConnectionError):
    code = n.EUNAVAILABLE


class TooLarge(CisternError, ValueError):
    code = n.ETOOLARGE


class Full(CisternError):
    code = n.EFULL


class ConfigError(CisternError):
    code = n.ECONFIG


class Forked(CisternError):
    code = n.EFORK


class IOFailure(CisternError, IOError):
    code = n.EIO


class Mismatch(CisternError):
    code = n.EMISMATCH


class BufferTooSmall(CisternError, ValueError):
    code = n.ESMALL


class NoSpace(CisternError, OSError):
    """A replica's disk or the metadata store is full; the message names the
    target, node and path (or the store's file). Retrying fails alike until space
    is freed or storage is added."""

    code = n.ENOSPACE


class PermissionDenied(CisternError, PermissionError):
    """The token is missing, unknown or revoked (pass one with CISTERN_TOKEN or
    CISTERN_TOKEN_FILE), or its tenant may not use this namespace (a tenant T
    uses namespaces named 'T.NAME')."""

    code = n.EPERM


_BY_CODE = {c.code: c for c in (InvalidArgument, NotFound, Unavailable, TooLarge, Full, ConfigError, Forked, IOFailure, Mismatch, BufferTooSmall, NoSpace, PermissionDenied)}


def error_for(code: int, message: str | None = None) -> CisternError:
    """The exception for `code`, with `message` or the thread's last library error."""
    text = message if message is not None else n.last_error()
    if not text:
        text = n.code_name(code)
    cls = _BY_CODE.get(code, CisternError)
    return cls(text, code) if cls is CisternError else cls(text)


def check(code: int) -> None:
    if code != n.OK:
        raise error_for(code)
