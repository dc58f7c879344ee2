"""Fixtures of the consumer tests: a private Redis, webhook receivers."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.functional.anomaly.support import Place, PrivateRedis, Received, Receiver
from tests.redis_server import _answers, _free_port, _stop

MakeReceiver = Callable[..., Receiver]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not on PATH: install it, or deselect with -m 'not redis'")
    port = _free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if not _answers(port, process):
        _stop(process)
        pytest.fail(f"redis-server did not start on port {port}")
    yield PrivateRedis(f"redis://127.0.0.1:{port}/0", port, process)
    _stop(process)


@pytest.fixture
def make_receiver() -> Iterator[MakeReceiver]:
    servers: list[tuple[ThreadingHTTPServer, Receiver]] = []

    def make(secret: bytes, *, statuses: Sequence[int] = (), hang: bool = False) -> Receiver:
        receiver = Receiver(secret, list(statuses), hang)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.attempts += 1
                if receiver.hang:
                    receiver.release.wait(60)
                    return
                timestamp = self.headers["X-Authsvc-Timestamp"]
                expected = "sha256=" + hmac.new(
                    receiver.secret, timestamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                ok = hmac.compare_digest(expected, self.headers["X-Authsvc-Signature"])
                with lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.received.append(Received(
                            self.headers["X-Authsvc-Event-Id"], body, timestamp, ok,
                            time.monotonic(),
                        ))  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        servers.append((server, receiver))
        return receiver

    yield make
    for server, receiver in servers:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def place(redis_server_url: str, keyring: KeyRing) -> Iterator[Place]:
    client: redis.Redis = redis.Redis.from_url(redis_server_url, decode_responses=True)
    prefix = f"t{secrets.token_hex(6)}:"
    store = RedisStore(client, prefix=prefix, address="test")
    yield Place(client, prefix, store, keyring)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
