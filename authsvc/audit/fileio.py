"""The audit file's short system calls, made without letting go of the GIL.

Every ``os``/``fcntl`` call releases the GIL around its system call, so that other
threads run meanwhile. For a call of a microsecond that is a loss when threads wait for
the GIL, as a gunicorn worker's request threads do under load: the caller hands the
GIL over, and then waits behind the other threads to get it back. Measured in a worker
with 8 threads under load, the file sink's five such calls per write (flock, stat,
fstat, write, unlock) cost ~60 us of CPU per token, and with these calls ~20 us.

Made through ``ctypes.PyDLL``, whose calls keep the GIL:

- ``try_flock``: ``flock`` with ``LOCK_NB``; when it would block (another process
  writes), the caller waits in ``fcntl.flock``, which lets go of the GIL;
- ``unlock``;
- ``write``: a ``write(2)`` to a regular file copies into the page cache; the sink's
  ``fdatasync`` (``fsync: true``) stays an ``os`` call, which lets go of the GIL;
- ``FileStat.now``: ``statx(2)`` of a path, into a buffer of the caller's.

Where the C library lacks them (not glibc 2.28+ on Linux), ``AVAILABLE`` is False and
each falls back to the ``os`` call, with the same results and errors; so does
``FileStat`` where the kernel or a seccomp profile refuses ``statx``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from typing import Any, NamedTuple

__all__ = ["AVAILABLE", "FileInfo", "FileStat", "try_flock", "unlock", "write"]

_AT_FDCWD = -100
_STATX_BASIC_STATS = 0x7FF


#: The fields of ``struct statx`` (linux/stat.h, one layout on every architecture) that
#: are read, from ``stx_mode`` at byte 28: stx_mode (u16), stx_ino and stx_size (u64),
#: stx_mtime's tv_sec (s64) and tv_nsec (u32) at 112, stx_dev_major and _minor (u32)
#: at 136. One ``unpack_from``: cheaper than a ctypes Structure's field by field.
_STATX_FIELDS = struct.Struct("<H2xQQ64xqI4x8xII")
_STATX_FIELDS_AT = 28
_STATX_SIZE = 256


class _Libc(NamedTuple):
    flock: Any
    write: Any
    statx: Any


def _bind() -> _Libc | None:
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        calls = _Libc(libc.flock, libc.write, libc.statx)
    except (OSError, AttributeError):
        return None
    # flock and statx take ints (statx's mask, 0x7FF, fits an int), a bytes path and a
    # buffer, which ctypes passes as they are: no argtypes, whose conversions cost a
    # quarter of a microsecond per call. write's count is a size_t: it keeps them.
    calls.flock.restype = ctypes.c_int
    calls.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    calls.write.restype = ctypes.c_ssize_t
    calls.statx.restype = ctypes.c_int
    return calls


_CALLS = _bind()
#: Whether the calls below keep the GIL (else they are the ``os`` calls).
AVAILABLE = _CALLS is not None
#: statx(2) refused by the kernel (before Linux 4.11: ENOSYS) or by a container's
#: seccomp profile (older Docker profiles: EPERM); ``os.stat`` then does the work.
_STATX_REFUSED = frozenset({errno.ENOSYS, errno.EPERM})


def _error(*filename: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), *filename)


def try_flock(fd: int) -> bool:
    """Take ``fd``'s exclusive ``flock`` if no other holder has it: False if one has."""
    if _CALLS is None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    while _CALLS.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
        code = ctypes.get_errno()
        if code == errno.EWOULDBLOCK:
            return False
        if code != errno.EINTR:
            raise _error()
    return True


def unlock(fd: int) -> None:
    if _CALLS is None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    while _CALLS.flock(fd, fcntl.LOCK_UN) != 0:
        if ctypes.get_errno() != errno.EINTR:
            raise _error()


def write(fd: int, data: bytes) -> int:
    """One ``write(2)`` of ``data``: the bytes written (perhaps fewer)."""
    if _CALLS is None:
        return os.write(fd, data)
    while True:
        written: int = _CALLS.write(fd, data, len(data))
        if written >= 0:
            return written
        if ctypes.get_errno() != errno.EINTR:
            raise _error()


class FileInfo(NamedTuple):
    """What the audit file's writer needs of a ``stat``."""

    dev: int
    ino: int
    mode: int
    size: int
    mtime: float

    @classmethod
    def of(cls, info: os.stat_result) -> FileInfo:
        return cls(info.st_dev, info.st_ino, info.st_mode, info.st_size, info.st_mtime)


class FileStat:
    """``stat`` of one path, again and again, into one buffer (not shared between
    threads: the caller holds a lock while it uses it)."""

    __slots__ = ("_buffer", "_path", "_statx", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._path = os.fsencode(path)
        self._buffer = ctypes.create_string_buffer(_STATX_SIZE)
        self._statx = None if _CALLS is None else _CALLS.statx

    def now(self) -> FileInfo | None:
        """The path's file now; None if there is none (other errors raise ``OSError``)."""
        buffer = self._buffer
        while self._statx is not None and self._statx(
            _AT_FDCWD, self._path, 0, _STATX_BASIC_STATS, buffer
        ):
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return None
            if code in _STATX_REFUSED:
                self._statx = None  # for good: the os call below, from now on
            elif code != errno.EINTR:
                raise _error(self.path)
        if self._statx is None:
            try:
                return FileInfo.of(os.stat(self.path))
            except FileNotFoundError:
                return None
        mode, ino, size, sec, nsec, major, minor = _STATX_FIELDS.unpack_from(
            buffer, _STATX_FIELDS_AT
        )
        # st_mtime as os.stat computes it
        return FileInfo(os.makedev(major, minor), ino, mode, size, sec + nsec * 1e-9)
