"""Real redis-servers for the tests (a pytest plugin).

``redis_server_url`` is one server for the whole session: it listens on a free port on
127.0.0.1, keeps nothing on disk, and is stopped at the end. Tests never flush it: each
one works under its own random key prefix.

``durable_redis`` is a server of the test's own, with an append-only file (``appendfsync
always``) in the test's directory, that the test may kill and start again on the same
port with its data (``DurableRedis``): what it acknowledged survives the restart.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: How long a fresh redis-server may take to answer PING.
_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, server: subprocess.Popen[bytes]) -> bool:
    """Wait until the server on ``port`` answers PING; False if it exited first."""
    # No retries of our own: redis-py's default ones back off for seconds between PINGs.
    client = redis.Redis(
        port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a redis-server of our own for this session."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not on PATH: install it, or deselect with -m 'not redis'")
    workdir = tmp_path_factory.mktemp("redis")
    # Another process may take the free port between our probe and the bind: retry.
    for _attempt in range(3):
        port = _free_port()
        with (workdir / "redis.log").open("ab") as log:
            server = subprocess.Popen(
                [
                    executable,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if _answers(port, server):
            break
        _stop(server)
    else:
        log_text = (workdir / "redis.log").read_text(errors="replace")
        pytest.fail(f"redis-server did not start; its log:\n{log_text}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(server)


@pytest.fixture
def closed_port() -> int:
    """A local port that nothing listens on (it was free a moment ago)."""
    return _free_port()


class DurableRedis:
    """A redis-server on a fixed port, persisting to an append-only file in ``workdir``,
    that a test stops (``kill``: SIGKILL; ``shutdown``: SHUTDOWN NOSAVE) and ``start``s
    again with the same data."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not on PATH: install it, or deselect with -m 'not redis'")
        self.executable = executable
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--dir", str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if not _answers(self.port, self.process):
            log_text = (self.workdir / "redis.log").read_text(errors="replace")
            pytest.fail(f"redis-server did not start on {self.port}; its log:\n{log_text}")

    def kill(self) -> None:
        """SIGKILL: a crash; what was acknowledged is on disk (``appendfsync always``)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE from a client of its own: an operator's stop."""
        assert self.process is not None
        client = redis.Redis(port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)  # answers by closing the connection
        client.close()
        self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    """A started ``DurableRedis`` with its data in ``tmp_path / "redis"``."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = DurableRedis(workdir)
    server.start()
    yield server
    server.close()
