"""`authsvc serve` under gunicorn: real sockets, chunked bodies, SIGHUP reload."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PASSWORDS, SERVICE, base_config

AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    config: Path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not logged:\n{self.log_text()[-3000:]}")


def start(args: list[str], cwd: Path, log: Path, config: Path) -> Served:
    port = free_port()
    out = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "authsvc", "serve", "--bind", f"127.0.0.1:{port}", *args],
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")},
    )
    served = Served(process, port, log, config)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"authsvc exited early:\n{served.log_text()}")
        try:
            if served.request("GET", "/readyz")[0] == 200:
                return served
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"authsvc did not become ready:\n{served.log_text()}")


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()


@pytest.fixture
def config_path(tmp_path: Path, keys_dir: Path) -> Path:
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(base_config(keys_dir)))
    return path


@pytest.fixture
def server(tmp_path: Path, config_path: Path) -> Iterator[Served]:
    served = start(["--config", str(config_path)], tmp_path, tmp_path / "serve.log", config_path)
    yield served
    stop(served)


def token_form(**extra: str) -> bytes:
    fields = {"client_id": "containers/image", "service": SERVICE, **extra}
    return "&".join(f"{k}={v}" for k, v in fields.items()).encode()


def test_chunked_refresh_grant_like_skopeo(server: Served) -> None:
    status, _, body = server.request(
        "GET",
        f"/token?service={SERVICE}&offline_token=true&client_id=docker",
        headers={"Authorization": AUTH},
    )
    assert status == 200
    rt = yaml.safe_load(body)["refresh_token"]
    status, _, body = server.request(
        "POST",
        "/token",
        body=iter(
            [
                token_form(
                    grant_type="refresh_token", refresh_token=rt, scope="repository:team/app:pull"
                )
            ]
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        chunked=True,
    )
    assert status == 200, body
    assert yaml.safe_load(body)["scope"] == "repository:team/app:pull"


def test_oversized_header_is_refused_by_the_server(server: Served) -> None:
    status, _, _ = server.request("GET", f"/token?service={SERVICE}", headers={"X-Big": "x" * 9000})
    assert status in (400, 431)


def test_audit_events_reach_the_chained_file(server: Served) -> None:
    server.request("GET", f"/token?service={SERVICE}&scope=repository:team/x:pull",
                   headers={"Authorization": AUTH})
    audit_file = server.config.parent / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 10
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not any(
        e.get("type") == "token.issue" for e in events
    ):
        time.sleep(0.1)
        events = [json.loads(line) for line in audit_file.read_text().splitlines()] if (
            audit_file.exists()) else []
    grant = next(e for e in events if e.get("type") == "token.issue")
    assert grant["decision"]["granted"] == ["repository:team/x:pull"]
    assert grant["seq"] >= 1 and len(grant["chain"]["hash"]) == 64
    assert len(grant["actor"]["fingerprint"]) == 32
    assert PASSWORDS["alice"] not in audit_file.read_text()
    assert PASSWORDS["alice"] not in server.log_text()


def _reload(server: Served, config: dict[str, Any] | str) -> None:
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    server.config.write_text(text)
    server.process.send_signal(signal.SIGHUP)


def test_sighup_applies_a_valid_config_and_keeps_sessions(server: Served, keys_dir: Path) -> None:
    status, _, body = server.request(
        "GET", f"/token?service={SERVICE}&offline_token=true", headers={"Authorization": AUTH}
    )
    rt = yaml.safe_load(body)["refresh_token"]
    config = base_config(keys_dir)
    config["rules"][0]["allow"][0]["repository"] = "newteam/**"
    _reload(server, config)
    server.wait_for_log("configuration reloaded")
    status, _, body = server.request(
        "POST",
        "/token",
        body=token_form(
            grant_type="refresh_token",
            refresh_token=rt,
            scope="repository:newteam/app:push+repository:team/app:push",
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, body
    assert yaml.safe_load(body)["scope"] == "repository:newteam/app:push"


def test_sighup_refuses_an_invalid_config_and_keeps_the_old(server: Served) -> None:
    _reload(
        server,
        "services: [registry.test]\nrules:\n  - id: x\n    match: {acount: a}\n"
        "    allow: [{repository: a, actions: [pull]}]\n",
    )
    server.wait_for_log("rules[0] (id 'x').match.acount: unknown setting")
    assert "keeping the running one" in server.log_text()
    status, _, _ = server.request(
        "GET",
        f"/token?service={SERVICE}&scope=repository:team/app:pull",
        headers={"Authorization": AUTH},
    )
    assert status == 200
    assert server.process.poll() is None


def test_memory_store_refuses_several_workers(tmp_path: Path, config_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "authsvc",
            "serve",
            "--config",
            str(config_path),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "the memory:// store lives inside one process" in result.stderr
    assert "storage: redis://" in result.stderr


def test_missing_keys_are_refused_with_the_command_to_make_them(tmp_path: Path) -> None:
    config = base_config(tmp_path / "nokeys")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "authsvc",
            "serve",
            "--config",
            str(path),
            "--bind",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "authsvc keys generate --dir" in result.stderr


def test_embedded_default_starts_and_says_so(tmp_path: Path) -> None:
    served = start([], tmp_path, tmp_path / "embedded.log", tmp_path / "unused")
    try:
        text = served.log_text()
        assert "running the EMBEDDED DEFAULT" in text
        assert "generated development key" in text
        assert (tmp_path / "keys" / "ring.json").exists()
        password = text.split("demo user: demo / ", 1)[1].split()[0]
        auth = "Basic " + base64.b64encode(f"demo:{password}".encode()).decode()
        status, _, body = served.request(
            "GET",
            "/token?service=registry.local&scope=repository:any/thing:push",
            headers={"Authorization": auth},
        )
        assert status == 200, body
        status, _, _ = served.request(
            "GET",
            "/token?service=registry.local",
            headers={"Authorization": "Basic ZGVtbzp3cm9uZw=="},
        )
        assert status == 401
    finally:
        stop(served)


def test_a_graceful_stop_seals_the_workers_chain_with_a_last_checkpoint(
    tmp_path: Path, keys_dir: Path
) -> None:
    data = base_config(keys_dir)
    data["audit"] = {"checkpoint_every": 1000, "checkpoint_seconds": 3600}  # none but the last
    config = tmp_path / "authsvc.yaml"
    config.write_text(yaml.safe_dump(data))
    args = ["--config", str(config), "--threads", "2"]
    served = start(args, tmp_path, tmp_path / "serve.log", config)
    try:
        for _ in range(8):
            status, _, _ = served.request(
                "GET", f"/token?service={SERVICE}&scope=repository:team/app:pull",
                headers={"Authorization": AUTH},
            )
            assert status == 200
    finally:
        stop(served)
    assert served.process.returncode == 0, served.log_text()[-3000:]
    lines = (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()
    by_writer: dict[str, list[dict[str, Any]]] = {}
    for event in map(json.loads, lines):
        by_writer.setdefault(event["writer"], []).append(event)
    assert len(by_writer) == 1, list(by_writer)
    assert sum(e["type"] == "token.issue" for e in map(json.loads, lines)) == 8
    for writer, events in by_writer.items():  # (a killed worker's would end with no seal)
        last = events[-1]
        assert last["type"] == "audit.checkpoint", (writer, [e["type"] for e in events])
        assert last["checkpoint"]["first_seq"] == 1
        assert last["checkpoint"]["last_seq"] == events[-2]["seq"] == len(events) - 1
    verify = subprocess.run(
        [sys.executable, "-m", "authsvc", "audit", "verify", "--config", str(config)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "1 writers, 1 checkpoints, 0 after the last checkpoint" in verify.stdout
