"""Audit sinks beyond standard error: the shared store, a local file, and a spool.

- ``StoreAuditLog(store)`` appends each event to the store's audit stream (a Redis
  stream in production: every worker and host writes to the one stream). Appends are
  idempotent by ``event_id``, so a retry or a replay never duplicates an event.
  ``StoreUnavailable`` propagates.
- ``FileAuditLog(path)`` appends one JSON line per event with one ``write`` on an
  ``O_APPEND`` descriptor, then ``fdatasync``; it rotates by size and by UTC day to
  ``path.YYYYMMDD-HHMMSS`` (the time of the file's last write), by an atomic rename
  under an exclusive ``flock`` on ``path.lock``, so several processes may share one
  path. Every write holds that lock too: a write that fails half-way (disk full) is cut
  back off, so no torn line is ever left for the next one to run into. The writers of a
  path share its rotation count and size through the lock file, so a write needs no
  ``stat`` of the path (see the class). Any ``OSError`` becomes ``AuditUnavailable``
  naming the file and the reason (``ENOSPC`` ...).
- ``SpoolingAuditLog(sink, spool_path)`` tries ``sink``; when it fails, the event is
  appended (fsynced) to a local spool file and the request still succeeds. Before any
  later event reaches the sink, the spool is replayed into it in order, so every
  writer's events keep their order; the spool is emptied once all are accepted. If the
  spool cannot be written either, ``record`` raises and the request is denied.

There is no ``DenyingAuditLog``: "deny when the sink fails" is any sink used directly,
since every sink raises when it cannot take an event and the token service then fails
the request (no decision goes unrecorded).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import mmap
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol, runtime_checkable

from authsvc.audit import AuditLog, fileio
from authsvc.errors import ServiceUnavailable
from authsvc.store import Store

__all__ = [
    "AuditUnavailable",
    "BatchAuditLog",
    "FileAuditLog",
    "SpoolingAuditLog",
    "StoreAuditLog",
]

MiB = 1024 * 1024
DAY = 86400

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class AuditUnavailable(ServiceUnavailable):
    """An audit sink could not take an event (503; the request is denied)."""

    reason = "AUDIT_UNAVAILABLE"


@runtime_checkable
class BatchAuditLog(Protocol):
    """A sink that also takes several events at once (one round trip, one fsync).

    ``record_many`` takes all the events, in order, or raises: ``ValueError`` or
    ``TypeError`` when it took none of them (one is invalid), anything else when it
    may have taken some or all (so they are sent again, and taken once).
    """

    def record(self, event: Mapping[str, Any]) -> None: ...

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None: ...


def _encode_line(event: Mapping[str, Any]) -> bytes:
    """One compact JSON line; ValueError if the event is not a JSON object value."""
    line = getattr(event, "line", None)
    if isinstance(line, bytes):
        return line  # encoded by the chain while hashing it
    try:
        return (_ENCODER.encode(dict(event)) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit event is not JSON: {exc}") from exc


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    return f"{reason} ({name})" if name else reason


def _append_all(fd: int, data: bytes, *, sync: bool) -> None:
    """Write all of ``data`` at the end of ``fd`` (and fdatasync it when ``sync``), or
    cut what was written of it back off and raise: neither a torn line nor one that is
    not on disk is left for the next write to follow. The caller holds the file's lock,
    so nobody wrote after it. (Only regular files can be cut; on others the cut fails
    quietly.)"""
    written = 0
    try:
        written = fileio.write(fd, data)  # all of it, but for a full disk or a signal
        while written < len(data):
            more = os.write(fd, memoryview(data)[written:])
            if more <= 0:  # pragma: no cover - a regular file never returns 0 here
                raise OSError(errno.EIO, "write wrote nothing")
            written += more
        if sync:
            _sync(fd)
    except OSError:
        if written:
            with suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
        raise


def _sync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _sync_dir(path: str) -> None:
    """Make a rename or a creation in ``path``'s directory durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileLock:
    """A lock for the threads of this process and, by ``flock``, for other processes.

    The lock file is opened on first use (so a sink on a missing directory fails when it
    is used, with the reason, not when it is built) and kept open. ``with lock:`` holds
    both (a class of its own, not a generator: it is taken once per write on the token
    path).

    ``shared=True``: the lock file's first 16 bytes are also mapped into memory
    (``MAP_SHARED``), as two unsigned 64-bit counters every process using the lock sees
    (``self.shared``); read and write them only while holding the lock. A lock file of
    an older version (empty) is extended; processes that only take the lock ignore them.
    """

    def __init__(self, path: str, *, shared: bool = False) -> None:
        self.path = path
        self.threads = threading.Lock()
        self._fd: int | None = None
        self._share = shared
        self._map: mmap.mmap | None = None
        self.shared = _unmapped()

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            if not fileio.try_flock(self._fd):
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # another process holds it: wait
        except BaseException:
            self.threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            assert self._fd is not None
            fileio.unlock(self._fd)
        finally:
            self.threads.release()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if self._share:
                if os.fstat(fd).st_size < _SHARED_BYTES:  # (two doing it at once: the same)
                    os.ftruncate(fd, _SHARED_BYTES)
                self._map = mmap.mmap(fd, _SHARED_BYTES)
                self.shared = memoryview(self._map).cast("Q")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def close(self) -> None:
        with self.threads:
            if self._map is not None:
                self.shared.release()
                self.shared = _unmapped()
                self._map.close()
                self._map = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


#: The file lock's shared page: the rotation count and the file's size (see FileAuditLog).
_SHARED_BYTES = 16
_GENERATION, _SIZE = 0, 1
#: No size bound (a file that is not a regular one is never rotated).
_NO_BOUND = 1 << 64


def _unmapped() -> memoryview:
    """The counters of a lock whose file is not mapped (before it is opened, after it is
    closed): this process's own, as the mapped ones read."""
    return memoryview(bytearray(_SHARED_BYTES)).cast("Q")


# -- the store ----------------------------------------------------------------------


class StoreAuditLog:
    """Appends events to the store's audit stream (idempotent by ``event_id``).

    The stream keeps about ``max_len`` events (Redis trims approximately) and none
    older than ``retention_seconds`` (by the store's clock); ``retention_seconds=None``
    trims by length only.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_len: int = 1_000_000,
        retention_seconds: int | None = 30 * DAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, not {max_len}")
        self._store = store
        self._max_len = max_len
        self._retention = retention_seconds
        self._clock = clock

    def record(self, event: Mapping[str, Any]) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Append ``events`` in one round trip; events already there count as taken."""
        min_time_ms = None
        if self._retention is not None:
            min_time_ms = max(0, int((self._clock() - self._retention) * 1000))
        self._store.append_audit(events, max_len=self._max_len, min_time_ms=min_time_ms)


# -- a local file -------------------------------------------------------------------


class FileAuditLog:
    """JSON Lines in ``path``: O_APPEND, one write per record, fdatasync, rotation.

    What a write needs to know of the file (that ``path`` is still the file it has open,
    its size, its last write's day) costs no system call while nothing changes:

    - the writers of one path (every process, every instance) keep two counters in the
      lock file's shared page (``_FileLock(shared=True)``), updated under the lock: the
      number of rotations, so that a rotation by any of them is seen at the next write,
      and the file's size, which each write adds to;
    - ``stat`` of the path, which also notices a file moved or deleted by hand (or
      rotated by something else), is looked at once ``RECHECK_SECONDS`` have passed
      since the last look, before any rotation, and when the counters say the file was
      rotated. It also corrects the size (a writer killed between its write and the
      count).

    A file moved or deleted by hand is so noticed within ``RECHECK_SECONDS``; the events
    written in between went to the file that was moved (or deleted). Measured under
    load: the ``stat`` per write cost 3% of token throughput (bench/README.md).
    """

    #: How often a writer looks at the path itself (see above).
    RECHECK_SECONDS = 0.01

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * MiB,
        rotate_daily: bool = True,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.path = os.fspath(path)
        self._max_bytes = max_bytes
        self._rotate_daily = rotate_daily
        self._fsync = fsync
        self._clock = clock
        self._lock = _FileLock(self.path + ".lock", shared=True)
        self._fd: int | None = None
        self._opened = (-1, -1)  # (st_dev, st_ino) of the file self._fd is
        self._info: fileio.FileInfo | None = None  # that file at the last look
        self._generation = -1  # the rotation count when the file was last looked at
        self._look_at = 0.0  # time.monotonic() from which the path is looked at again
        # While a write keeps the file under these (its size plus the write; the clock)
        # it is not due for rotation; set with _info (see _bounds).
        self._size_bound = 0
        self._day_bounds = (0.0, 0.0)
        self._stat = fileio.FileStat(self.path)
        #: Rotated files this instance produced (newest last); for tools and tests.
        self.rotated: list[str] = []

    def record(self, event: Mapping[str, Any]) -> None:
        self._append(_encode_line(event))

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """All ``events`` in one write and one fdatasync (they rotate as one block)."""
        data = _encode_line(events[0]) if len(events) == 1 else b"".join(map(_encode_line, events))
        if data:
            self._append(data)

    def close(self) -> None:
        with self._lock.threads:
            self._close_fd()
        self._lock.close()

    def _append(self, data: bytes) -> None:
        adding = len(data)
        try:
            with self._lock:
                shared = self._lock.shared
                fd = self._fd
                day_from, day_to = self._day_bounds
                # The common case, in one test: nothing to look at, nothing due.
                look = (
                    fd is None
                    or time.monotonic() >= self._look_at
                    or shared[_GENERATION] != self._generation
                )
                if (
                    look
                    or shared[_SIZE] + adding > self._size_bound
                    or not day_from <= self._clock() < day_to
                ):
                    fd = self._ready(shared, adding, look=look)
                assert fd is not None  # (with none open, look is true)
                _append_all(fd, data, sync=self._fsync)
                shared[_SIZE] += adding
        except OSError as exc:
            raise AuditUnavailable(
                f"the audit file {self.path} cannot be written: {_describe(exc)}",
                reason="AUDIT_UNAVAILABLE",
            ) from exc

    # -- under the lock --------------------------------------------------------------

    def _ready(self, shared: memoryview, adding: int, *, look: bool) -> int:
        """The descriptor to add ``adding`` bytes to: the path looked at first when
        ``look``, and rotated first when due."""
        fd, info = self._current_fd(shared, look=look)
        if self._due(info, shared[_SIZE], adding):
            fd, info = self._current_fd(shared, look=True)  # sure, before renaming
            if self._due(info, shared[_SIZE], adding):
                self._rotate(info, shared)
                fd, _ = self._current_fd(shared, look=True)
        return fd

    def _bounds(self, info: fileio.FileInfo) -> None:
        """What ``_append`` tests instead of ``_due``: the size a write may bring the
        file to, and the clock's range, within which ``_due`` is false for ``info``."""
        regular = stat.S_ISREG(info.mode)
        self._size_bound = self._max_bytes if regular else _NO_BOUND
        if regular and self._rotate_daily:
            day = info.mtime // DAY * DAY
            self._day_bounds = (day, day + DAY)
        else:
            self._day_bounds = (-math.inf, math.inf)

    def _current_fd(self, shared: memoryview, *, look: bool) -> tuple[int, fileio.FileInfo]:
        """Our descriptor and the file as last looked at; with ``look``, the path is
        looked at first (one ``statx``) and reopened when it is no longer the file we
        have open (rotated, moved or deleted). ``_append`` says when to look: with no
        file open, when the rotation count moved, once ``RECHECK_SECONDS`` have passed
        since the last look; ``_ready`` also before a rotation."""
        if not look:
            assert self._fd is not None and self._info is not None  # (set together)
            return self._fd, self._info
        self._look_at = time.monotonic() + self.RECHECK_SECONDS
        self._generation = shared[_GENERATION]
        if self._fd is not None:
            on_disk = self._stat.now()
            if on_disk is not None and (on_disk.dev, on_disk.ino) == self._opened:
                self._info = on_disk
                self._bounds(on_disk)
                shared[_SIZE] = on_disk.size  # what the kernel says, whoever wrote
                return self._fd, on_disk
            self._close_fd()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        info = fileio.FileInfo.of(os.fstat(self._fd))
        self._opened = (info.dev, info.ino)
        self._info = info
        self._bounds(info)
        shared[_SIZE] = info.size
        return self._fd, info

    def _close_fd(self) -> None:
        self._info = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _due(self, info: fileio.FileInfo, size: int, adding: int) -> bool:
        """Whether to rotate before adding ``adding`` bytes to a file of ``size`` bytes.

        ``info.mtime`` may be a moment old, so a day that looks past is looked at again
        before rotating; it is never later than the file's last write, so a day that
        looks current is."""
        if not stat.S_ISREG(info.mode) or size == 0:
            return False
        if size + adding > self._max_bytes:
            return True
        if self._rotate_daily:
            return int(info.mtime // DAY) != int(self._clock() // DAY)
        return False

    def _rotate(self, info: fileio.FileInfo, shared: memoryview) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(info.mtime))
        target = f"{self.path}.{stamp}"
        n = 0
        while os.path.lexists(target):  # several rotations within one second
            n += 1
            target = f"{self.path}.{stamp}.{n}"
        os.rename(self.path, target)
        shared[_GENERATION] += 1  # every writer of the path reopens it at its next write
        self._close_fd()
        self.rotated.append(target)
        if self._fsync:
            _sync_dir(self.path)


# -- the spool ----------------------------------------------------------------------


class SpoolingAuditLog:
    """``sink`` first; a local spool file when it fails; the spool replayed in order.

    ``record`` returns once the event is in the sink or fsynced in the spool, and raises
    ``AuditUnavailable`` when neither can take it (``ValueError`` for an event without a
    string ``event_id`` or that is not JSON, or that the sink refuses with ``ValueError``
    or ``TypeError``: such an event is never spooled). While the spool holds events, every
    new one goes behind them: first the spool is replayed (in batches of
    ``replay_batch`` when the sink has ``record_many``), and only when it is empty does
    the event go to the sink, else it is spooled too. After a failure the sink is not
    tried again for ``retry_interval`` seconds (events go straight to the spool), so an
    unreachable sink (a 2 s timeout) does not slow every request; ``replay()`` tries at
    once. Replay is idempotent with ``StoreAuditLog`` (by ``event_id``): a crash between
    the sink's accepting and the spool's emptying duplicates nothing.

    The spool may be shared by several processes (``flock`` on ``spool_path.lock``);
    each writer's events still keep their order. When the sink takes events, the
    happy path costs one ``stat`` of the spool file.
    """

    def __init__(
        self,
        sink: AuditLog,
        spool_path: str | os.PathLike[str],
        *,
        retry_interval: float = 1.0,
        replay_batch: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(getattr(sink, "record", None)):
            raise TypeError("sink must have a record(event) method")
        self._sink = sink
        self._batch_sink: BatchAuditLog | None = sink if isinstance(sink, BatchAuditLog) else None
        self.spool_path = os.fspath(spool_path)
        self._retry_interval = retry_interval
        self._replay_batch = max(1, replay_batch)
        self._clock = clock
        self._lock = _FileLock(self.spool_path + ".lock")
        self._state = threading.Lock()
        self._last_error: str | None = None
        self._last_failure: float | None = None
        self._spooled_total = 0
        self._replayed_total = 0
        self._skipped_lines = 0
        # (inode, size counted, lines) of the spool, so status() counts only new bytes.
        self._count: tuple[int, int, int] = (0, 0, 0)

    # -- the AuditLog interface -------------------------------------------------------

    def record(self, event: Mapping[str, Any]) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """The events to the sink (in one ``record_many`` when it has one), or else all
        of them to the spool in one fsynced write.

        With a sink without ``record_many``, the events go one at a time, each as
        ``record`` would send it.
        """
        if self._batch_sink is None and len(events) > 1:
            for event in events:
                self.record_many([event])
            return
        # A bad event is refused here and never spooled, where it would block the replay.
        lines: list[bytes] = []
        for event in events:
            event_id = event.get("event_id")
            if not isinstance(event_id, str) or not event_id:
                raise ValueError("audit event has no string event_id")
            lines.append(_encode_line(event))
        if not lines:
            return
        tried = False
        if self._spool_size() == 0 and not self._backing_off():
            tried = True
            try:
                self._to_sink(events)
            except (ValueError, TypeError):
                raise  # the sink refuses the events themselves: spooling would not help
            except Exception as exc:
                self._failed(exc)
            else:
                if self._last_error is not None:
                    self._succeeded()
                return
        with self._held():
            if self._replay_locked(force=False) and not tried and not self._backing_off():
                try:
                    self._to_sink(events)
                except (ValueError, TypeError):
                    raise
                except Exception as exc:
                    self._failed(exc)
                else:
                    self._succeeded()
                    return
            self._spool_locked(b"".join(lines), len(lines))

    def replay(self) -> bool:
        """Replay the spool into the sink now; True when it is empty afterwards."""
        with self._held():
            return self._replay_locked(force=True)

    def status(self) -> dict[str, Any]:
        """For /readyz: degraded (the spool holds events or the last try failed),
        spooled (events waiting in the spool), last_error, and running totals."""
        spooled = self._count_lines()
        with self._state:
            last_error = self._last_error
            return {
                "degraded": spooled > 0 or last_error is not None,
                "spooled": spooled,
                "last_error": last_error,
                "spool": self.spool_path,
                "spooled_total": self._spooled_total,
                "replayed_total": self._replayed_total,
                "skipped_lines": self._skipped_lines,
            }

    def close(self) -> None:
        self._lock.close()

    # -- helpers ----------------------------------------------------------------------

    def _to_sink(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self._batch_sink is not None:
            self._batch_sink.record_many(events)
        else:
            (event,) = events
            self._sink.record(event)

    @contextmanager
    def _held(self) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OSError) -> AuditUnavailable:
        with self._state:
            sink_error = self._last_error or "unknown"
        return AuditUnavailable(
            f"the audit sink failed ({sink_error}) and the spool {self.spool_path} "
            f"cannot be written: {_describe(exc)}",
            reason="AUDIT_UNAVAILABLE",
        )

    def _spool_size(self) -> int:
        try:
            info = os.stat(self.spool_path)
        except FileNotFoundError:
            return 0
        except OSError:
            return 1  # cannot tell: take the careful path, which reports the reason
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def _backing_off(self) -> bool:
        with self._state:
            failed_at = self._last_failure
        return failed_at is not None and self._clock() - failed_at < self._retry_interval

    def _failed(self, exc: BaseException) -> None:
        with self._state:
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._last_failure = self._clock()

    def _succeeded(self) -> None:
        with self._state:
            self._last_error = None
            self._last_failure = None

    def _spool_locked(self, lines: bytes, count: int) -> None:
        """Append ``count`` lines to the spool and fsync them (under the lock)."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        created = not os.path.lexists(self.spool_path)
        fd = os.open(self.spool_path, flags, 0o600)
        try:
            info = os.fstat(fd)
            start = _complete_lines_end(fd, info.st_size)
            if start != info.st_size:  # a torn line from a crash: never acknowledged
                os.ftruncate(fd, start)
            _append_all(fd, lines, sync=True)
        finally:
            os.close(fd)
        if created:
            _sync_dir(self.spool_path)
        with self._state:
            self._spooled_total += count

    def _replay_locked(self, *, force: bool) -> bool:
        """Send the spooled events to the sink, oldest first (under the lock).

        Returns True when the spool is empty. On a failure the events not yet accepted
        stay, by an atomic rewrite of the spool (fsynced before its rename).
        """
        data = _read_spool(self.spool_path)
        if not data:
            return True
        if not force and self._backing_off():
            return False
        events: list[dict[str, Any]] = []
        skipped = 0
        for line in data.split(b"\n")[:-1]:  # a torn tail (never acknowledged) is dropped
            try:
                event = json.loads(line) if line else None
            except ValueError:
                event = None
            if isinstance(event, dict):
                events.append(event)
            else:
                skipped += 1
        done = 0
        try:
            while done < len(events):
                if self._batch_sink is not None:
                    chunk = events[done : done + self._replay_batch]
                    self._batch_sink.record_many(chunk)
                    done += len(chunk)
                else:
                    self._sink.record(events[done])
                    done += 1
        except Exception as exc:
            self._failed(exc)
            if done or skipped:
                _replace(self.spool_path, b"".join(_encode_line(e) for e in events[done:]))
                self._replayed(done, skipped)
            return False
        fd = os.open(self.spool_path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, 0)
            _sync(fd)
        finally:
            os.close(fd)
        self._replayed(done, skipped)
        self._succeeded()
        return True

    def _replayed(self, done: int, skipped: int) -> None:
        """Count what left the spool; its line count starts over (it was rewritten)."""
        with self._state:
            self._replayed_total += done
            self._skipped_lines += skipped
            self._count = (0, 0, 0)

    def _count_lines(self) -> int:
        """Complete lines in the spool, counting only what was appended since last time."""
        try:
            fd = os.open(self.spool_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        except OSError:
            return 0
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return 0
            with self._state:
                inode, counted, lines = self._count
            if inode != info.st_ino or counted > info.st_size or counted == 0:
                counted, lines = 0, 0
            os.lseek(fd, counted, os.SEEK_SET)
            while counted < info.st_size:
                chunk = os.read(fd, min(MiB, info.st_size - counted))
                if not chunk:
                    break
                counted += len(chunk)
                lines += chunk.count(b"\n")
            with self._state:
                self._count = (info.st_ino, counted, lines)
            return lines
        finally:
            os.close(fd)


def _read_spool(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b""
        chunks: list[bytes] = []
        remaining = info.st_size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 16 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _complete_lines_end(fd: int, size: int) -> int:
    """The offset just after the last newline in the first ``size`` bytes (0 if none)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 64 * 1024)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _replace(path: str, data: bytes) -> None:
    """Atomically make ``path`` hold ``data``: a temporary file, fsync, rename, fsync."""
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _append_all(fd, data, sync=True)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _sync_dir(path)
