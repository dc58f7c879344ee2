"""A real redis-server for the tests, started once per test session (a pytest plugin).

It listens on a free port on 127.0.0.1, keeps nothing on disk, and is stopped at the
end. Tests never flush it: each one works under its own random key prefix.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

#: How long a fresh redis-server may take to answer PING.
_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, server: subprocess.Popen[bytes]) -> bool:
    """Wait until the server on ``port`` answers PING; False if it exited first."""
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
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
            )
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
