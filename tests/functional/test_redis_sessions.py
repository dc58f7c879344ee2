"""The token flow on a real redis-server, and the store round trips each request costs."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from authsvc.cli import main
from authsvc.store import AuditEntry, BackoffState, SessionRecord, Store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from tests.conftest import PASSWORDS, SERVICE, MakeHarness, MakeSettings, base_config, basic

ALICE = basic("alice", PASSWORDS["alice"])


class CountingStore:
    """Counts calls to a real store; each call is one round trip by the store contract."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def _count(self, name: str) -> None:
        self.calls.append(name)

    def ping(self) -> None:
        self._count("ping")
        self.inner.ping()

    def claim_once(self, key: str, expires_at: int) -> bool:
        self._count("claim_once")
        return self.inner.claim_once(key, expires_at)

    def claim_value(self, key: str, value: str, expires_at: int) -> str | None:
        self._count("claim_value")
        return self.inner.claim_value(key, value, expires_at)

    def put_session(
        self, session_id: str, record: Mapping[str, str], *, index: str, expires_at: int
    ) -> None:
        self._count("put_session")
        self.inner.put_session(session_id, record, index=index, expires_at=expires_at)

    def use_session(self, session_id: str, now: int) -> SessionRecord | None:
        self._count("use_session")
        return self.inner.use_session(session_id, now)

    def delete_session(self, session_id: str) -> bool:
        self._count("delete_session")
        return self.inner.delete_session(session_id)

    def list_sessions(self, index: str, now: int) -> list[SessionRecord]:
        self._count("list_sessions")
        return self.inner.list_sessions(index, now)

    def announce_config(self, writer: str, digest: str, now: int) -> None:
        self._count("announce_config")
        self.inner.announce_config(writer, digest, now)

    def configs(self) -> dict[str, str]:
        return self.inner.configs()

    def append_audit(
        self, events: Sequence[Mapping[str, Any]], *, max_len: int, min_time_ms: int | None
    ) -> int:
        self._count("append_audit")
        return self.inner.append_audit(events, max_len=max_len, min_time_ms=min_time_ms)

    def read_audit(self, after: str = "0", count: int = 1000) -> list[AuditEntry]:
        self._count("read_audit")
        return self.inner.read_audit(after, count)

    def audit_length(self) -> int:
        self._count("audit_length")
        return self.inner.audit_length()

    def note_failure(
        self,
        key: str,
        now: int,
        *,
        window: int,
        threshold: int,
        base_delay: int,
        max_delay: int,
    ) -> int:
        self._count("note_failure")
        return self.inner.note_failure(
            key, now, window=window, threshold=threshold, base_delay=base_delay,
            max_delay=max_delay,
        )

    def backoff_state(self, key: str, now: int) -> BackoffState:
        self._count("backoff_state")
        return self.inner.backoff_state(key, now)

    def clear_failures(self, key: str) -> None:
        self._count("clear_failures")
        self.inner.clear_failures(key)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(params=["memory", "redis"])
def any_store(request: pytest.FixtureRequest, redis_server_url: str) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    store = RedisStore.from_url(redis_server_url, prefix=f"test-{secrets.token_hex(6)}:")
    yield store
    store.close()


def test_each_request_costs_at_most_one_store_round_trip(
    make_harness: MakeHarness, any_store: Store
) -> None:
    """Besides: a static user's password pays one read for the brute-force backoff."""
    counting = CountingStore(any_store)
    h = make_harness(store=counting)
    query = f"/token?service={SERVICE}&scope=repository:team/app:pull"

    def calls_for(send: Callable[[], Any]) -> list[str]:
        counting.calls.clear()
        response = send()
        assert response.status_code == 200, response.get_json()
        return list(counting.calls)

    assert calls_for(lambda: h.client.get(query)) == []
    assert calls_for(lambda: h.client.get(query, headers=ALICE)) == ["backoff_state"]
    # Found without failures, not asked again for anomaly.backoff.recheck (1) second.
    assert calls_for(lambda: h.client.get(query, headers=ALICE)) == []
    offline = h.client.get(query + "&offline_token=true", headers=ALICE)
    rt = offline.get_json()["refresh_token"]
    assert calls_for(
        lambda: h.client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": rt,
                "client_id": "c",
                "service": SERVICE,
                "scope": "repository:team/app:pull",
            },
        )
    ) == ["use_session"]
    assert calls_for(lambda: h.client.get(query, headers=basic("<token>", rt))) == ["use_session"]
    assert calls_for(lambda: h.client.get(query + "&offline_token=true", headers=ALICE)) == [
        "put_session",
    ]
    h.clock.advance(1)
    assert calls_for(lambda: h.client.get(query + "&offline_token=true", headers=ALICE)) == [
        "backoff_state",
        "put_session",
    ]


def test_refresh_sessions_live_in_redis_across_app_instances(
    make_harness: MakeHarness, redis_server_url: str
) -> None:
    """Two apps (two workers, or two hosts) share sessions through Redis."""
    prefix = f"test-{secrets.token_hex(6)}:"
    first_store = RedisStore.from_url(redis_server_url, prefix=prefix)
    first = make_harness(store=first_store)
    r = first.client.get(f"/token?service={SERVICE}&offline_token=true", headers=ALICE)
    rt = r.get_json()["refresh_token"]
    other_store = RedisStore.from_url(redis_server_url, prefix=prefix)
    second = make_harness(store=other_store)
    r = second.client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": rt,
            "client_id": "c",
            "service": SERVICE,
            "scope": "repository:team/app:push",
        },
    )
    assert r.status_code == 200
    assert r.get_json()["scope"] == "repository:team/app:push"
    other_store.close()
    first_store.close()


def test_redis_down_is_a_503_with_a_reason(make_harness: MakeHarness) -> None:
    dead = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="x:")
    h = make_harness(store=dead)
    r = h.client.get(f"/token?service={SERVICE}&offline_token=true", headers=ALICE)
    assert r.status_code == 503
    assert "redis at 127.0.0.1:1 did not answer" in r.get_json()["errors"][0]["message"]
    assert h.audit.events[-1]["reason"] == "STORE_UNAVAILABLE"
    r = h.client.get("/readyz")
    assert r.status_code == 503
    assert any("store: redis at 127.0.0.1:1" in p for p in r.get_json()["problems"])


def test_cli_lists_and_revokes_sessions(
    make_harness: MakeHarness,
    make_settings: MakeSettings,
    redis_server_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    prefix = "authsvc:"  # the CLI uses the service's own prefix, on our own redis-server
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    h = make_harness(store=store)
    tokens = [
        h.client.get(
            f"/token?service={SERVICE}&offline_token=true&client_id=docker", headers=ALICE
        ).get_json()["refresh_token"]
        for _ in range(2)
    ]
    config = base_config(keys_dir)
    config["storage"] = redis_server_url
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    listed = runner.invoke(main, ["tokens", "list", "--config", str(path), "--subject", "alice"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2
    assert all("\tdocker\t" in line for line in lines)
    assert not any(t in listed.output for t in tokens)
    first_id = lines[0].split("\t")[0]
    revoked = runner.invoke(main, ["tokens", "revoke", "--config", str(path), first_id])
    assert revoked.exit_code == 0
    assert "revoked 1" in revoked.output
    again = runner.invoke(main, ["tokens", "revoke", "--config", str(path), first_id])
    assert again.exit_code == 1
    assert f"not found: {first_id}" in again.output
    everything = runner.invoke(
        main, ["tokens", "revoke", "--config", str(path), "--subject", "alice"]
    )
    assert "revoked 1" in everything.output
    for rt in tokens:
        r = h.client.get(f"/token?service={SERVICE}", headers=basic("<token>", rt))
        assert r.status_code == 401
    store.close()


def test_cli_refuses_session_commands_on_the_memory_store(keys_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(base_config(keys_dir)))
    result = CliRunner().invoke(
        main, ["tokens", "list", "--config", str(path), "--subject", "alice"]
    )
    assert result.exit_code == 2
    assert "the memory:// store lives inside the server process" in result.output
