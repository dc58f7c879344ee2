"""The audit file's system calls: the same results and errors with the GIL kept (the C
library's calls through ctypes) as with the ``os`` calls they stand in for."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authsvc.audit import fileio


@pytest.fixture(params=["libc", "os"])
def calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs twice: through the C library and through the ``os`` fallback."""
    if request.param == "os":
        monkeypatch.setattr(fileio, "_CALLS", None)
    yield request.param


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's statx is Linux's")
def test_on_linux_the_calls_keep_the_gil() -> None:
    assert fileio.AVAILABLE


def test_stat_is_what_os_stat_says(calls: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"x" * 1234)
    os.utime(path, ns=(1_700_000_000_250_000_000, 1_700_000_000_123_456_789))
    info = fileio.FileStat(str(path)).now()
    assert info == fileio.FileInfo.of(os.stat(path))  # the float mtime too, to the bit
    assert info is not None and info.size == 1234 and int(info.mtime) == 1_700_000_000


def test_stat_of_no_file_is_none_and_other_errors_raise(calls: str, tmp_path: Path) -> None:
    assert fileio.FileStat(str(tmp_path / "missing")).now() is None
    (tmp_path / "file").write_bytes(b"")
    under_a_file = str(tmp_path / "file" / "audit.jsonl")
    with pytest.raises(NotADirectoryError) as raised:
        fileio.FileStat(under_a_file).now()
    assert raised.value.errno == errno.ENOTDIR
    assert raised.value.filename == under_a_file


def test_stat_follows_the_path_to_a_new_file(calls: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"old")
    stat = fileio.FileStat(str(path))
    before = stat.now()
    path.rename(tmp_path / "audit.jsonl.1")
    path.write_bytes(b"newer")
    after = stat.now()
    assert before is not None and after is not None
    assert after.ino != before.ino and after.size == 5


def test_flock_is_refused_while_another_holder_has_it(calls: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)  # its own open file description: its own flock
    try:
        assert fileio.try_flock(first)
        assert not fileio.try_flock(second)
        with pytest.raises(BlockingIOError):  # and the kernel agrees who holds it
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fileio.unlock(first)
        assert fileio.try_flock(second)
        fileio.unlock(second)
    finally:
        os.close(first)
        os.close(second)


def test_flock_and_write_on_a_closed_descriptor_raise(calls: str, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for call in (fileio.try_flock, fileio.unlock, lambda fd: fileio.write(fd, b"x")):
        with pytest.raises(OSError) as raised:
            call(fd)
        assert raised.value.errno == errno.EBADF


def test_write_appends_the_bytes(calls: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        assert fileio.write(fd, b'{"a":1}\n') == 8
        assert fileio.write(fd, b'{"b":"\xc3\xa9"}\n') == 11
        assert fileio.write(fd, b"") == 0
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"a":1}\n{"b":"\xc3\xa9"}\n'


@pytest.mark.parametrize("refusal", [errno.ENOSYS, errno.EPERM])
def test_a_statx_the_kernel_or_seccomp_refuses_gives_way_to_os_stat(
    refusal: int, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"x" * 10)
    calls: list[object] = []

    def refused(*args: object) -> int:  # as libc's statx returns under such a kernel
        calls.append(args)
        ctypes.set_errno(refusal)
        return -1

    stat = fileio.FileStat(str(path))
    stat._statx = refused
    assert stat.now() == fileio.FileInfo.of(os.stat(path))
    path.write_bytes(b"x" * 20)
    info = stat.now()
    assert info is not None and info.size == 20
    assert len(calls) == 1  # refused once, not asked again
