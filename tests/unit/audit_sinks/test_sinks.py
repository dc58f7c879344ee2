"""Audit sinks: the store's stream, a rotating file, and the spool in front of either.

The fault tests start a redis-server of their own (append-only file, ``appendfsync
always``, in the test's directory) so that they can kill it and start it again on the
same port with its data: acknowledged events survive, and the spool must fill the gap
without a duplicate.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from authsvc.audit.schema import uuid7
from authsvc.audit.sinks import (
    AuditUnavailable,
    FileAuditLog,
    SpoolingAuditLog,
    StoreAuditLog,
)
from authsvc.errors import StoreUnavailable
from authsvc.store import Store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from tests.redis_server import DurableRedis


def _event(writer: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "schema": "authsvc.audit/1",
        "event_id": uuid7(),
        "time": int(time.time() * 1000),
        "type": "token.issue",
        "outcome": "success",
        "writer": writer,
        "seq": seq,
        "chain": {"prev": "0" * 64, "hash": secrets.token_hex(32)},
        **extra,
    }


def _lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a torn line"
    return [json.loads(line) for line in data.decode().splitlines()]


def _rotation_order(path: Path) -> list[Path]:
    """Rotated files oldest first (``.N`` suffixes compared as numbers), then ``path``."""

    def key(p: Path) -> tuple[str, int]:
        stamp, _, n = p.name[len(path.name) + 1 :].partition(".")
        return stamp, int(n or 0)

    rotated = [p for p in path.parent.glob(path.name + ".*") if p.name != path.name + ".lock"]
    return sorted(rotated, key=key) + ([path] if path.exists() else [])


# -- StoreAuditLog ------------------------------------------------------------------


class _CapturingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int | None]] = []

    def append_audit(
        self, events: Sequence[Mapping[str, Any]], *, max_len: int, min_time_ms: int | None
    ) -> int:
        self.calls.append((max_len, min_time_ms))
        return super().append_audit(events, max_len=max_len, min_time_ms=min_time_ms)


def test_store_audit_log_appends_once_per_event_id() -> None:
    store = _CapturingStore()
    sink = StoreAuditLog(store, max_len=50, retention_seconds=3600, clock=lambda: 10_000.5)
    event = _event("w", 1)
    sink.record(event)
    sink.record(event)  # a retry of an event already taken is not an error
    sink.record_many([_event("w", 2), _event("w", 3)])

    assert [e["seq"] for _, e in store.read_audit()] == [1, 2, 3]
    assert store.calls == [(50, (10_000_500 - 3_600_000))] * 3


def test_store_audit_log_without_retention_trims_by_length_only() -> None:
    store = _CapturingStore()
    StoreAuditLog(store, max_len=3, retention_seconds=None).record_many(
        [_event("w", n) for n in range(5)]
    )
    assert store.calls == [(3, None)]
    assert [e["seq"] for _, e in store.read_audit()] == [2, 3, 4]


def test_store_audit_log_defaults() -> None:
    store = _CapturingStore()
    StoreAuditLog(store, clock=lambda: 40 * 86400.0).record(_event("w", 1))
    assert store.calls == [(1_000_000, 10 * 86400 * 1000)]


# -- FileAuditLog -------------------------------------------------------------------


def test_file_sink_appends_one_compact_json_line_per_event_and_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path)
    events = [_event("w", n, note="é") for n in range(3)]
    for event in events:
        sink.record(event)
    sink.record_many([_event("w", 3), _event("w", 4)])  # one write, one sync
    sink.close()

    assert _lines(path) == [*events, *_lines(path)[3:]]
    assert [e["seq"] for e in _lines(path)] == [0, 1, 2, 3, 4]
    first = path.read_bytes().split(b"\n")[0]
    assert b", " not in first and b": " not in first and "é".encode() in first
    assert len(syncs) == 4
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def _failing_sync(monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    """The next ``failures`` fdatasync calls fail with EIO (a disk that lost the data)."""
    real = os.fdatasync
    left = [failures]

    def fdatasync(fd: int) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)


def test_a_line_that_could_not_be_synced_is_cut_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, so the chain sends it again: left in the file, it would be there twice."""
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path)
    sink.record(_event("w", 1))
    _failing_sync(monkeypatch, 1)
    with pytest.raises(AuditUnavailable, match=r"cannot be written: .*\(EIO\)"):
        sink.record_many([_event("w", 2), _event("w", 3)])
    assert _file_seqs(path) == [1]
    sink.record(_event("w", 2))
    assert _file_seqs(path) == [1, 2]


def test_a_spooled_line_that_could_not_be_synced_is_cut_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_path = tmp_path / "spool.jsonl"
    sink = _FlakySink()
    sink.down = True
    spool = SpoolingAuditLog(sink, spool_path)
    spool.record(_event("w", 1))
    _failing_sync(monkeypatch, 1)
    with pytest.raises(AuditUnavailable, match=r"the spool .* cannot be written: .*\(EIO\)"):
        spool.record(_event("w", 2))
    assert _file_seqs(spool_path) == [1]


def test_file_sink_without_fsync_does_not_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd))
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    sink = FileAuditLog(tmp_path / "audit.log", fsync=False)
    sink.record(_event("w", 1))
    assert syncs == []


def test_file_sink_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path, max_bytes=700)
    events = [_event("w", n) for n in range(20)]  # about 300 bytes each
    for event in events:
        sink.record(event)
    sink.close()

    files = _rotation_order(path)
    assert len(files) == 10  # two events a file
    assert [p.name for p in files[:-1]] == [os.path.basename(p) for p in sink.rotated]
    for rotated in files[:-1]:
        assert rotated.stat().st_size <= 700
        stamp = rotated.name.split(".")[2]
        assert len(stamp) == 15 and stamp[8] == "-" and stamp.replace("-", "").isdigit()
    assert [e for p in files for e in _lines(p)] == events


def test_an_event_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path, max_bytes=100)
    sink.record(_event("w", 1, blob="x" * 500))
    sink.record(_event("w", 2, blob="x" * 500))
    files = _rotation_order(path)
    assert [[e["seq"] for e in _lines(p)] for p in files] == [[1], [2]]


def test_file_sink_rotates_when_the_day_changes(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    today = FileAuditLog(path)
    today.record(_event("w", 1))
    written_at = path.stat().st_mtime
    tomorrow = FileAuditLog(path, clock=lambda: time.time() + 86400)
    tomorrow.record(_event("w", 2))
    today.record(_event("w", 3))  # follows the rotation another writer made
    undaily = FileAuditLog(path, rotate_daily=False, clock=lambda: time.time() + 86400)
    undaily.record(_event("w", 4))

    [rotated] = tomorrow.rotated
    assert rotated == f"{path}.{time.strftime('%Y%m%d-%H%M%S', time.gmtime(written_at))}"
    assert [e["seq"] for e in _lines(Path(rotated))] == [1]
    assert [e["seq"] for e in _lines(path)] == [2, 3, 4]


def test_one_writer_rotates_when_its_clock_passes_midnight_between_looks(
    tmp_path: Path,
) -> None:
    """With the path's next look an hour away, a write still rotates the file when the
    day of the file's last write is not the clock's (passed, or set back)."""
    path = tmp_path / "audit.log"
    shift = [0.0]
    sink = FileAuditLog(path, clock=lambda: time.time() + shift[0])
    sink.RECHECK_SECONDS = 3600
    sink.record(_event("w", 1))
    sink.record(_event("w", 2))
    shift[0] = 86400.0  # tomorrow: the file was last written yesterday
    sink.record(_event("w", 3))
    shift[0] = 0.0  # (the new file's time is the real one: today again)
    sink.record(_event("w", 4))
    shift[0] = -86400.0  # yesterday
    sink.record(_event("w", 5))

    assert [_file_seqs(Path(p)) for p in sink.rotated] == [[1, 2], [3, 4]]
    assert _file_seqs(path) == [5]


def test_a_file_that_is_not_a_regular_one_is_never_rotated(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.symlink_to(os.devnull)
    sink = FileAuditLog(path, max_bytes=100, fsync=False, clock=lambda: time.time() + 86400)
    for seq in range(1, 5):  # about 300 bytes each
        sink.record(_event("w", seq))
    sink.close()

    assert sink.rotated == []
    assert path.is_symlink() and os.readlink(path) == os.devnull


def _file_seqs(path: Path) -> list[int]:
    return [e["seq"] for e in _lines(path)] if path.exists() else []


def test_a_rotation_by_another_writer_and_its_writes_are_seen_at_once(tmp_path: Path) -> None:
    """Through the lock file's shared counters, not a look at the path: with the look
    an hour away, each writer still counts the other's bytes and follows its rotation."""
    path = tmp_path / "audit.log"
    first, second = FileAuditLog(path, max_bytes=700), FileAuditLog(path, max_bytes=700)
    for sink in (first, second):
        sink.RECHECK_SECONDS = 3600
    for seq in range(1, 9):  # about 300 bytes each: two to a file
        (first if seq % 2 else second).record(_event("w", seq))

    files = _rotation_order(path)
    assert [[e["seq"] for e in _lines(p)] for p in files] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert (len(first.rotated), second.rotated) == (3, [])  # 3, 5 and 7 rotated
    assert (tmp_path / "audit.log.lock").stat().st_size == 16


def test_a_file_moved_by_hand_takes_the_writes_until_the_path_is_looked_at(
    tmp_path: Path,
) -> None:
    path, moved = tmp_path / "audit.log", tmp_path / "moved.log"
    sink = FileAuditLog(path)
    sink.RECHECK_SECONDS = 3600
    sink.record(_event("w", 1))
    os.rename(path, moved)
    sink.record(_event("w", 2))  # within RECHECK_SECONDS: to the file it has open
    assert (_file_seqs(moved), _file_seqs(path)) == ([1, 2], [])

    sink.RECHECK_SECONDS = 0.01
    sink.record(_event("w", 3))  # (the next look is due: an hour was set at the last)
    sink._look_at = 0.0  # as if RECHECK_SECONDS had passed
    sink.record(_event("w", 4))
    assert (_file_seqs(moved), _file_seqs(path)) == ([1, 2, 3], [4])


def test_a_file_deleted_by_hand_is_made_again_after_the_recheck(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path)
    sink.record(_event("w", 1))
    os.unlink(path)
    time.sleep(sink.RECHECK_SECONDS * 2)
    sink.record(_event("w", 2))
    assert _file_seqs(path) == [2]


def test_a_size_miscounted_is_put_right_at_the_next_look(tmp_path: Path) -> None:
    """A writer killed between its write and its count leaves the shared size short;
    the next look at the path sets it from the file."""
    path = tmp_path / "audit.log"
    sink = FileAuditLog(path, max_bytes=700)
    sink.record(_event("w", 1))
    sink.record(_event("w", 2))
    with sink._lock:
        sink._lock.shared[1] = 0  # the size counter: as if neither write had been counted
    sink._look_at = 0.0
    sink.record(_event("w", 3))  # looked at: 600-odd bytes, so 3 goes to a new file
    assert [[e["seq"] for e in _lines(p)] for p in _rotation_order(path)] == [[1, 2], [3]]


def test_a_lock_file_of_an_older_version_is_extended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    (tmp_path / "audit.log.lock").write_bytes(b"")  # what earlier versions left
    sink = FileAuditLog(path)
    sink.record(_event("w", 1))
    sink.close()
    assert (tmp_path / "audit.log.lock").read_bytes()[8:] == path.stat().st_size.to_bytes(
        8, sys.byteorder
    )


def _write_events(path: str, writer: str, count: int, max_bytes: int) -> None:
    """One process's share of the concurrent-writers test (run under spawn)."""
    sink = FileAuditLog(path, max_bytes=max_bytes)
    for seq in range(1, count + 1):
        sink.record(_event(writer, seq, padding="p" * (seq % 37)))
    sink.close()


def test_two_processes_share_one_file_and_its_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    count = 300
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_events, args=(str(path), f"proc-{n}", count, 4000))
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]

    files = _rotation_order(path)
    assert len(files) > 10
    events = [e for p in files for e in _lines(p)]  # every line is whole JSON
    assert len(events) == 2 * count
    for writer in ("proc-0", "proc-1"):
        assert [e["seq"] for e in events if e["writer"] == writer] == list(range(1, count + 1))
    for rotated in files[:-1]:
        assert rotated.stat().st_size <= 4000
    writers = {frozenset(e["writer"] for e in _lines(p)) for p in files}
    assert frozenset({"proc-0", "proc-1"}) in writers  # they did interleave


def test_a_full_disk_fails_the_record_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")  # every write: ENOSPC, from the kernel
    sink = FileAuditLog(path)
    with pytest.raises(AuditUnavailable) as caught:
        sink.record(_event("w", 1))

    assert caught.value.status == 503
    assert caught.value.reason == "AUDIT_UNAVAILABLE"
    assert f"the audit file {path} cannot be written" in caught.value.message
    assert "(ENOSPC)" in caught.value.message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC


@pytest.mark.parametrize("case", ["missing directory", "parent is a file", "read-only"])
def test_an_unwritable_path_fails_the_record_with_the_reason(tmp_path: Path, case: str) -> None:
    if case == "missing directory":
        path, code = tmp_path / "nowhere" / "audit.log", "ENOENT"
    elif case == "parent is a file":
        (tmp_path / "file").write_text("")
        path, code = tmp_path / "file" / "audit.log", "ENOTDIR"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        (tmp_path / "ro").mkdir(mode=0o500)
        path, code = tmp_path / "ro" / "audit.log", "EACCES"
    with pytest.raises(AuditUnavailable, match=rf"cannot be written: .*\({code}\)"):
        FileAuditLog(path).record(_event("w", 1))


def test_a_write_that_fails_half_way_leaves_no_torn_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel write part of a line, then refuse (EFBIG)."""
    path = tmp_path / "audit.log"
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        from authsvc.audit.sinks import AuditUnavailable, FileAuditLog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        sink = FileAuditLog({str(path)!r}, rotate_daily=False)
        written = 0
        try:
            for n in range(100):
                sink.record({{"event_id": str(n), "seq": n, "pad": "x" * 100}})
                written += 1
        except AuditUnavailable as exc:
            print(json.dumps({{"written": written, "error": exc.message}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    outcome = json.loads(done.stdout)
    assert "(EFBIG)" in outcome["error"]
    assert outcome["written"] == 7  # 7 lines of 136 bytes fit in 1000; the 8th did not
    assert [e["seq"] for e in _lines(path)] == list(range(7))  # no torn 8th line


# -- SpoolingAuditLog ---------------------------------------------------------------


class _FlakySink:
    """Takes events into a list; raises while ``down`` or once ``accept`` runs out."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.down = False
        self.calls = 0
        self.accept: int | None = None

    def record(self, event: Mapping[str, Any]) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("redis at 127.0.0.1:1 did not answer: refused")
        if self.accept is not None:
            if self.accept == 0:
                raise StoreUnavailable("gone again")
            self.accept -= 1
        self.events.append(dict(event))


class _FlakyBatchSink(_FlakySink):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.batches.append(len(events))
        if self.down:
            raise StoreUnavailable("down")
        self.events.extend(dict(e) for e in events)


def _seqs(events: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(e["seq"]) for e in events]


def test_events_go_straight_to_a_working_sink(tmp_path: Path) -> None:
    sink = _FlakySink()
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl")
    for n in range(3):
        spool.record(_event("w", n))
    assert _seqs(sink.events) == [0, 1, 2]
    assert not (tmp_path / "spool.jsonl").exists()
    assert spool.status() == {
        "degraded": False,
        "spooled": 0,
        "last_error": None,
        "spool": str(tmp_path / "spool.jsonl"),
        "spooled_total": 0,
        "replayed_total": 0,
        "skipped_lines": 0,
    }


def test_failed_events_are_spooled_then_replayed_in_order_before_new_ones(
    tmp_path: Path,
) -> None:
    sink = _FlakySink()
    spool_path = tmp_path / "spool.jsonl"
    spool = SpoolingAuditLog(sink, spool_path, retry_interval=0)
    spool.record(_event("w", 1))
    sink.down = True
    for n in range(2, 6):
        spool.record(_event("w", n))  # accepted: durably spooled

    status = spool.status()
    assert status["degraded"] is True
    assert status["spooled"] == 4
    assert "StoreUnavailable: redis at 127.0.0.1:1 did not answer" in status["last_error"]
    assert _seqs(_lines(spool_path)) == [2, 3, 4, 5]

    sink.down = False
    spool.record(_event("w", 6))
    assert _seqs(sink.events) == [1, 2, 3, 4, 5, 6]
    assert spool_path.read_bytes() == b""
    status = spool.status()
    assert (status["degraded"], status["spooled"], status["last_error"]) == (False, 0, None)
    assert (status["spooled_total"], status["replayed_total"]) == (4, 4)


def test_replay_drains_the_spool_without_a_new_event(tmp_path: Path) -> None:
    sink = _FlakySink()
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl", retry_interval=3600)
    sink.down = True
    spool.record(_event("w", 1))
    spool.record(_event("w", 2))
    assert spool.replay() is False  # replay() ignores the back-off, and fails
    sink.down = False
    assert spool.replay() is True
    assert spool.replay() is True
    assert _seqs(sink.events) == [1, 2]
    assert spool.status()["degraded"] is False


def test_a_replay_that_fails_part_way_keeps_only_the_rest(tmp_path: Path) -> None:
    sink = _FlakySink()
    spool_path = tmp_path / "spool.jsonl"
    spool = SpoolingAuditLog(sink, spool_path, retry_interval=0)
    sink.down = True
    for n in range(1, 6):
        spool.record(_event("w", n))
    sink.down, sink.accept = False, 2
    spool.record(_event("w", 6))  # replays 1, 2; fails on 3; 6 goes behind the rest

    assert _seqs(sink.events) == [1, 2]
    assert _seqs(_lines(spool_path)) == [3, 4, 5, 6]
    assert spool.status()["spooled"] == 4
    sink.accept = None
    assert spool.replay() is True
    assert _seqs(sink.events) == [1, 2, 3, 4, 5, 6]  # nothing twice, nothing skipped


def test_replay_uses_record_many_in_batches(tmp_path: Path) -> None:
    sink = _FlakyBatchSink()
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl", retry_interval=0, replay_batch=3)
    sink.down = True
    for n in range(10):
        spool.record(_event("w", n))
    sink.down = False
    sink.batches.clear()
    spool.record(_event("w", 10))
    assert sink.batches == [3, 3, 3, 1, 1]  # the ten spooled, three at a time; then the new one
    assert _seqs(sink.events) == list(range(11))


def test_record_many_is_one_batch_to_the_sink_or_one_write_to_the_spool(tmp_path: Path) -> None:
    sink = _FlakyBatchSink()
    spool_path = tmp_path / "spool.jsonl"
    spool = SpoolingAuditLog(sink, spool_path, retry_interval=0)
    spool.record_many([_event("w", n) for n in range(4)])
    assert sink.batches == [4]
    sink.down = True
    spool.record_many([_event("w", n) for n in range(4, 7)])
    assert _seqs(_lines(spool_path)) == [4, 5, 6]
    status = spool.status()
    assert (status["spooled"], status["spooled_total"]) == (3, 3)
    assert status["last_error"] == "StoreUnavailable: down"
    sink.down = False
    spool.record_many([_event("w", 7), _event("w", 8)])
    assert _seqs(sink.events) == list(range(9))  # the spool first, then the new batch
    assert not spool_path.read_bytes()


def test_record_many_refuses_a_batch_with_an_invalid_event_before_sending_any(
    tmp_path: Path,
) -> None:
    sink = _FlakyBatchSink()
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl", retry_interval=0)
    bad = {"seq": 2, "writer": "w"}
    with pytest.raises(ValueError, match="no string event_id"):
        spool.record_many([_event("w", 1), bad])
    assert sink.batches == [] and sink.events == []


class _LostReply:
    """A StoreAuditLog whose first batch lands but whose answer is lost."""

    def __init__(self, inner: StoreAuditLog) -> None:
        self.inner = inner
        self.lose = 1

    def record(self, event: Mapping[str, Any]) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.inner.record_many(events)
        if self.lose:
            self.lose -= 1
            raise StoreUnavailable("connection reset after the script ran")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def audit_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url: str = request.getfixturevalue("redis_server_url")
    store = RedisStore.from_url(url, prefix=f"audit-sinks-{secrets.token_hex(4)}:")
    yield store
    store.close()


def test_a_replay_whose_answer_was_lost_duplicates_nothing(
    tmp_path: Path, audit_store: Store
) -> None:
    store = audit_store
    sink = _FlakySink()
    spool_path = tmp_path / "spool.jsonl"
    first = SpoolingAuditLog(sink, spool_path, retry_interval=0)
    sink.down = True
    events = [_event("w", n) for n in range(1, 51)]
    for event in events:
        first.record(event)

    # The process restarts with the store as its sink; its first replay lands in the
    # store but the answer is lost, so the whole spool stays and is sent again.
    lossy = _LostReply(StoreAuditLog(store))
    second = SpoolingAuditLog(lossy, spool_path, retry_interval=0, replay_batch=20)
    assert second.status()["spooled"] == 50
    assert second.replay() is False
    assert _seqs(_lines(spool_path)) == list(range(1, 51))
    assert second.replay() is True

    assert store.audit_length() == 50
    assert [e["event_id"] for _, e in store.read_audit()] == [e["event_id"] for e in events]


def test_after_a_failure_the_sink_rests_for_the_retry_interval(tmp_path: Path) -> None:
    now = [1000.0]
    sink = _FlakySink()
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl", retry_interval=5, clock=lambda: now[0])
    sink.down = True
    spool.record(_event("w", 1))
    assert sink.calls == 1  # tried once, not again through the spool path
    sink.down = False
    spool.record(_event("w", 2))
    now[0] += 4.9
    spool.record(_event("w", 3))
    assert sink.calls == 1  # resting: straight to the spool
    now[0] += 0.2
    spool.record(_event("w", 4))
    assert _seqs(sink.events) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"event_id": "x", "bad": {1, 2}}, "not JSON"),
        ({"event_id": "x", "bad": float("inf")}, "not JSON"),
        ({"seq": 1}, "no string event_id"),
        ({"event_id": 5}, "no string event_id"),
    ],
)
def test_a_bad_event_is_refused_and_never_spooled(
    tmp_path: Path, event: dict[str, Any], message: str
) -> None:
    sink = _FlakySink()
    sink.down = True
    spool = SpoolingAuditLog(sink, tmp_path / "spool.jsonl")
    with pytest.raises(ValueError, match=message):
        spool.record(event)
    assert sink.calls == 0
    assert not (tmp_path / "spool.jsonl").exists()


def test_an_event_the_sink_refuses_is_not_spooled(tmp_path: Path) -> None:
    class Refusing(_FlakySink):
        def record(self, event: Mapping[str, Any]) -> None:
            raise ValueError("refused: too large")

    spool = SpoolingAuditLog(Refusing(), tmp_path / "spool.jsonl")
    with pytest.raises(ValueError, match="too large"):
        spool.record(_event("w", 1))
    assert not (tmp_path / "spool.jsonl").exists()
    assert spool.status()["degraded"] is False


@pytest.mark.parametrize("where", ["full disk", "missing directory"])
def test_when_the_spool_cannot_be_written_either_the_record_fails(
    tmp_path: Path, where: str
) -> None:
    if where == "full disk":
        spool_path, code = tmp_path / "spool.jsonl", "ENOSPC"
        spool_path.symlink_to("/dev/full")
    else:
        spool_path, code = tmp_path / "nowhere" / "spool.jsonl", "ENOENT"
    sink = _FlakySink()
    sink.down = True
    spool = SpoolingAuditLog(sink, spool_path)
    with pytest.raises(AuditUnavailable) as caught:
        spool.record(_event("w", 1))

    message = caught.value.message
    assert "the audit sink failed (StoreUnavailable: redis at 127.0.0.1:1" in message
    assert f"the spool {spool_path} cannot be written: " in message
    assert f"({code})" in message
    assert caught.value.status == 503


def test_a_torn_last_line_from_a_crash_is_dropped(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.jsonl"
    good = [_event("w", 1), _event("w", 2)]
    torn = json.dumps(_event("w", 3)).encode()[:40]
    spool_path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in good) + torn)
    sink = _FlakySink()
    sink.down = True
    spool = SpoolingAuditLog(sink, spool_path, retry_interval=0)
    assert spool.status()["spooled"] == 2
    spool.record(_event("w", 4))  # cuts the torn tail off before appending
    assert _seqs(_lines(spool_path)) == [1, 2, 4]
    sink.down = False
    assert spool.replay() is True
    assert _seqs(sink.events) == [1, 2, 4]


def test_writers_sharing_a_spool_keep_their_own_order(tmp_path: Path) -> None:
    sink = _FlakySink()
    spool_path = tmp_path / "spool.jsonl"
    logs = [SpoolingAuditLog(sink, spool_path, retry_interval=0) for _ in range(4)]
    sink.down = True
    counter = iter(range(10_000))

    def write(n: int) -> None:
        for seq in range(1, 51):
            if seq == 30:
                sink.down = False
            logs[n].record(_event(f"w{n}", seq, at=next(counter)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert logs[0].replay() is True
    for n in range(4):
        assert _seqs([e for e in sink.events if e["writer"] == f"w{n}"]) == list(range(1, 51))


# -- fault injection: a redis-server of our own, killed and started again -----------


@pytest.mark.parametrize("how", ["SIGKILL", "SHUTDOWN NOSAVE"])
def test_events_survive_a_redis_outage_through_the_spool(
    durable_redis: DurableRedis, tmp_path: Path, how: str
) -> None:
    writers, per_writer = 2, 100
    total = writers * per_writer
    prefix = f"audit-fault-{secrets.token_hex(4)}:"
    store = RedisStore.from_url(durable_redis.url, prefix=prefix)
    spool = SpoolingAuditLog(StoreAuditLog(store), tmp_path / "spool.jsonl", retry_interval=0.05)
    sent = 0
    sent_lock = threading.Lock()
    most_spooled = 0
    figures: dict[str, Any] = {}

    restarted = threading.Event()

    def write(writer: str) -> None:
        nonlocal sent, most_spooled
        for seq in range(1, per_writer + 1):
            if seq == per_writer - 19:  # the last 20 of each writer follow the restart
                assert restarted.wait(timeout=60)
            spool.record(_event(writer, seq))
            with sent_lock:
                sent += 1
            most_spooled = max(most_spooled, spool.status()["spooled"])
            time.sleep(0.02)

    def outage() -> None:
        while sent < 60:
            time.sleep(0.001)
        figures["stopped_after_sent"] = sent
        stopped = time.monotonic()
        if how == "SIGKILL":
            durable_redis.kill()
        else:
            durable_redis.shutdown()
        time.sleep(0.5)
        durable_redis.start()
        figures["seconds_stopped"] = round(time.monotonic() - stopped, 3)
        figures["restarted_after_sent"] = sent
        restarted.set()

    threads = [threading.Thread(target=write, args=(f"writer-{n}",)) for n in range(writers)]
    threads.append(threading.Thread(target=outage))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert figures["restarted_after_sent"] <= total - 40
    figures["spooled_before_final_replay"] = spool.status()["spooled"]
    assert spool.replay() is True
    status = spool.status()

    entries = []
    after = "0"
    while page := store.read_audit(after, 64):
        entries.extend(page)
        after = page[-1][0]
    ids = [event["event_id"] for _, event in entries]
    raw = redis.Redis.from_url(durable_redis.url, decode_responses=True)
    seen_keys = sum(1 for _ in raw.scan_iter(match=f"{prefix}audit-seen:*", count=1000))
    figures.update(
        how=how,
        sent=total,
        in_stream=len(entries),
        xlen=raw.xlen(f"{prefix}audit"),
        duplicates=len(ids) - len(set(ids)),
        seen_keys=seen_keys,
        most_spooled=most_spooled,
        spooled_total=status["spooled_total"],
        replayed_total=status["replayed_total"],
    )
    raw.close()
    store.close()
    print(f"\naudit fault figures: {json.dumps(figures)}")

    assert status["degraded"] is False and status["spooled"] == 0
    assert most_spooled > 0 and status["spooled_total"] > 0
    assert status["replayed_total"] == status["spooled_total"]
    assert figures["in_stream"] == figures["xlen"] == figures["seen_keys"] == total
    assert figures["duplicates"] == 0
    for n in range(writers):
        seqs = [event["seq"] for _, event in entries if event["writer"] == f"writer-{n}"]
        assert seqs == list(range(1, per_writer + 1))


@pytest.mark.redis
def test_the_store_sink_alone_fails_while_redis_is_down(durable_redis: DurableRedis) -> None:
    prefix = f"audit-down-{secrets.token_hex(4)}:"
    store = RedisStore.from_url(durable_redis.url, prefix=prefix)
    sink = StoreAuditLog(store)
    try:
        sink.record(_event("w", 1))
        durable_redis.kill()
        for seq in (2, 3):  # the pooled connection is gone, then nothing listens
            where = rf"redis at 127\.0\.0\.1:{durable_redis.port}"
            with pytest.raises(StoreUnavailable, match=where):
                sink.record(_event("w", seq))
        durable_redis.start()
        sink.record(_event("w", 4))
        assert [e["seq"] for _, e in store.read_audit()] == [1, 4]  # 1 survived the kill
    finally:
        store.close()


def test_a_failing_stderr_copy_does_not_fail_the_recorded_event(tmp_path: Path) -> None:
    from authsvc.audit import MemoryAuditLog
    from authsvc.audit.build import _MirroringSink

    class Broken:
        def record(self, event: Mapping[str, Any]) -> None:
            raise OSError("stderr is closed")

    sink = MemoryAuditLog()
    _MirroringSink(sink, Broken()).record({"event_id": "e1"})
    assert sink.events == [{"event_id": "e1"}]
