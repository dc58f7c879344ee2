"""Credentials created and revoked, keys generated, rotated and retired: each is one
audit event, through the token path and through the command line, and the trail they
make together still verifies."""

from __future__ import annotations

import csv
import getpass
import io
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from authsvc.app import Dependencies, create_app
from authsvc.audit import MemoryAuditLog
from authsvc.audit.sinks import AuditUnavailable
from authsvc.audit.verify import public_keys, read_jsonl, verify_events
from authsvc.cli import main
from authsvc.config import ENV_CONFIG, parse_settings
from authsvc.identity.sessions import session_id
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing, generate_key, list_keys
from tests.conftest import (
    PASSWORDS,
    SERVICE,
    Harness,
    MakeHarness,
    MakeSettings,
    base_config,
    basic,
)

ALICE = basic("alice", PASSWORDS["alice"])
BOB = basic("bob", PASSWORDS["bob"])
OFFLINE = f"/token?service={SERVICE}&offline_token=true&client_id=docker"
USER = getpass.getuser()
ME = {"kind": "operator", "subject": USER, "uid": os.getuid()}
REFUSAL = "audit/audit.jsonl cannot be written: Is a directory (EISDIR)"  # see below


def config_file(tmp_path: Path, keys: Path, **top: Any) -> Path:
    data = base_config(keys)
    data["audit"] = {"checkpoint_every": 1000}
    data.update(top)
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trail(tmp_path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(tmp_path / "audit" / "audit.jsonl"))


def changes(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in trail(tmp_path) if e["type"].startswith(("credential.", "key."))]


def break_the_audit_file(tmp_path: Path) -> None:
    """The file sink refuses every event: its file is a directory."""
    (tmp_path / "audit" / "audit.jsonl").mkdir(parents=True)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def fresh_ring(tmp_path: Path) -> Path:
    """A ring of this test's own (the shared one must not rotate under other tests)."""
    ring = tmp_path / "ring"
    generate_key(ring)
    return ring


class RefusingAuditLog(MemoryAuditLog):
    """Keeps events, but refuses those of the given types."""

    def __init__(self, *refused: str) -> None:
        super().__init__()
        self.refused = set(refused)

    def record(self, event: Mapping[str, Any]) -> None:
        if event["type"] in self.refused:
            raise AuditUnavailable("audit/audit.jsonl: ENOSPC (no space left on device)")
        super().record(event)


# -- the token path -------------------------------------------------------------------


def test_an_offline_login_records_the_session_it_creates(harness: Harness) -> None:
    r = harness.client.get(OFFLINE, headers=ALICE)
    assert r.status_code == 200
    token = r.get_json()["refresh_token"]
    loaded, created, issued = harness.audit.events
    assert (loaded["type"], created["type"], issued["type"]) == (
        "config.load",
        "credential.create",
        "token.issue",
    )
    assert (created["outcome"], created["reason"]) == ("success", "SESSION_ISSUED")
    assert created["actor"] == {
        "kind": "human",
        "provider": "static",
        "subject": "alice",
        "account": "alice",
    }
    assert created["client"] == {"client_id": "docker"}
    credential = created["credential"]
    assert credential["type"] == "session"
    assert credential["id"] == session_id(token)
    assert credential["expires_at"] == int(harness.clock()) + 30 * 86400
    assert created["time"] == int(harness.clock() * 1000)
    assert token not in repr(harness.audit.events)

    # Its uses carry the fingerprint its creation recorded, and create nothing.
    harness.client.get(f"/token?service={SERVICE}", headers=basic("<token>", token))
    used = harness.audit.events[-1]
    assert used["type"] == "token.issue"
    assert used["actor"]["fingerprint"] == credential["fingerprint"]
    assert [e["type"] for e in harness.audit.events].count("credential.create") == 1


def test_a_login_without_a_session_records_no_credential(harness: Harness) -> None:
    harness.client.get(f"/token?service={SERVICE}", headers=ALICE)
    assert [e["type"] for e in harness.audit.events] == ["config.load", "token.issue"]


def test_a_session_whose_creation_goes_unrecorded_is_not_issued(
    make_settings: MakeSettings,
) -> None:
    audit, store = RefusingAuditLog("credential.create"), MemoryStore()
    client = create_app(make_settings(), deps=Dependencies(store=store, audit=audit)).test_client()
    r = client.get(OFFLINE, headers=ALICE)
    assert r.status_code == 503
    assert "refresh_token" not in r.get_json()
    refused = audit.events[-1]
    assert (refused["type"], refused["outcome"], refused["reason"]) == (
        "token.issue",
        "failure",
        "AUDIT_UNAVAILABLE",
    )
    assert "token" not in refused
    assert store.list_sessions("static:alice", 2_000_000_000) == []


def test_a_session_whose_grant_goes_unrecorded_is_withdrawn_on_the_record(
    make_settings: MakeSettings,
) -> None:
    audit, store = RefusingAuditLog("token.issue"), MemoryStore()
    client = create_app(make_settings(), deps=Dependencies(store=store, audit=audit)).test_client()
    r = client.get(OFFLINE, headers=ALICE)
    assert r.status_code == 503
    _, created, withdrawn = audit.events
    assert created["type"] == "credential.create"
    assert (withdrawn["type"], withdrawn["outcome"], withdrawn["reason"]) == (
        "credential.revoke",
        "success",
        "GRANT_NOT_RECORDED",
    )
    assert withdrawn["credential"] == {"type": "session", "id": created["credential"]["id"]}
    assert "actor" not in withdrawn  # authsvc's own doing
    assert store.list_sessions("static:alice", 2_000_000_000) == []


# -- authsvc keys ---------------------------------------------------------------------


def _key(ring: Path, key_id: str, from_state: str | None, to_state: str) -> dict[str, Any]:
    info = next(k for k in list_keys(ring) if k.id == key_id)
    return {
        "id": key_id,
        "kid": info.libtrust_kid,
        "algorithm": info.algorithm,
        "from_state": from_state,
        "to_state": to_state,
    }


def test_key_commands_record_each_change_once(tmp_path: Path) -> None:
    ring = fresh_ring(tmp_path)
    (first,) = [k.id for k in list_keys(ring)]
    config = config_file(tmp_path, ring)

    code, out, _ = cli("keys", "generate", "--config", str(config))
    assert code == 0
    staged = out.split()[0]
    assert cli("keys", "rotate", "--config", str(config))[0] == 0
    assert cli("keys", "retire", "--config", str(config), first)[0] == 0
    assert cli("keys", "retire", "--config", str(config), first)[0] == 0  # again: no change
    code, _, err = cli("keys", "retire", "--config", str(config), staged)  # active: refused
    assert code == 1 and "rotate first" in err

    generated, rotated, retired, again = changes(tmp_path)
    for event in (generated, rotated, retired, again):
        assert event["actor"] == ME
        assert event["outcome"] == "success"
        assert event["schema"] == "authsvc.audit/1"
    assert (generated["type"], generated["reason"]) == ("key.generate", "KEY_GENERATED")
    assert generated["key"] == _key(ring, staged, None, "staged")
    assert (rotated["type"], rotated["reason"]) == ("key.rotate", "KEY_ROTATED")
    assert rotated["key"] == _key(ring, staged, "staged", "active")
    assert rotated["previous"] == _key(ring, first, "active", "previous")
    assert (retired["type"], retired["reason"]) == ("key.retire", "KEY_RETIRED")
    assert retired["key"] == _key(ring, first, "previous", "retired")
    assert (again["reason"], again["key"]["from_state"]) == ("ALREADY_RETIRED", "retired")

    # Every command sealed its event with a checkpoint of its own, signed by the key
    # active when it closed.
    kinds = [e["type"] for e in trail(tmp_path)]
    assert kinds == [
        "key.generate",
        "audit.checkpoint",
        "key.rotate",
        "audit.checkpoint",
        "key.retire",
        "audit.checkpoint",
        "key.retire",
        "audit.checkpoint",
    ]
    assert trail(tmp_path)[3]["checkpoint"]["key_id"] == staged


def test_a_key_change_the_audit_log_refuses_fails_the_command(tmp_path: Path) -> None:
    ring = fresh_ring(tmp_path)
    config = config_file(tmp_path, ring)
    break_the_audit_file(tmp_path)
    code, out, err = cli("keys", "rotate", "--config", str(config))
    assert code == 1
    new = out.split()[0]
    assert f"authsvc: key {new} now signs, but the audit trail did not record it: " in err
    assert REFUSAL in err
    assert KeyRing.load(ring).signing_key.id == new  # the change stands: it is the fact


def test_key_commands_without_a_configuration_say_they_recorded_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    code, out, err = cli("keys", "generate", "--dir", str(tmp_path / "ring"))
    assert code == 0
    assert f"key {out.split()[0]} generated (active); not recorded in an audit trail" in err


def test_key_commands_refuse_a_trail_they_cannot_reach(tmp_path: Path) -> None:
    ring = fresh_ring(tmp_path)
    config = config_file(tmp_path, ring, audit={"sink": "redis"})  # storage: memory://
    before = list_keys(ring)
    code, _, err = cli("keys", "rotate", "--config", str(config))
    assert code == 2
    assert "cannot record there; nothing was changed" in err
    assert list_keys(ring) == before


# -- authsvc tokens revoke ------------------------------------------------------------


@pytest.fixture
def redis_sessions(
    make_harness: MakeHarness, redis_server_url: str, tmp_path: Path
) -> Iterator[tuple[Harness, Path]]:
    """A service and a configuration sharing a redis-server (under the CLI's prefix,
    which other tests share: the sessions made here are removed afterwards)."""
    store = RedisStore.from_url(redis_server_url, prefix="authsvc:")
    ring = fresh_ring(tmp_path)
    config = config_file(tmp_path, ring, storage=redis_server_url)
    settings = parse_settings(yaml.safe_load(config.read_text()), base_dir=tmp_path, environ={})
    yield make_harness(settings, store=store), config
    for session in store.list_sessions("static:bob", 2_000_000_000):
        store.delete_session(session["id"])
    store.close()


def test_revocations_are_recorded_found_or_not(
    redis_sessions: tuple[Harness, Path], tmp_path: Path
) -> None:
    h, config = redis_sessions
    tokens = [h.client.get(OFFLINE, headers=BOB).get_json()["refresh_token"] for _ in range(2)]
    ids = [session_id(t) for t in tokens]

    code, out, _ = cli("tokens", "revoke", "--config", str(config), ids[0], tokens[1])
    assert (code, out) == (0, "revoked 2\n")
    code, _, err = cli("tokens", "revoke", "--config", str(config), ids[0], "not-an-id")
    assert code == 1
    assert f"not found: {ids[0]}, not-an-id" in err

    first, second, gone, garbage = changes(tmp_path)
    for event, session in ((first, ids[0]), (second, ids[1])):
        assert (event["type"], event["outcome"], event["reason"]) == (
            "credential.revoke",
            "success",
            "SESSION_REVOKED",
        )
        assert event["actor"] == ME
        assert event["credential"] == {"type": "session", "id": session}
    assert (gone["outcome"], gone["reason"], gone["credential"]["id"]) == (
        "failure",
        "NOT_FOUND",
        ids[0],
    )
    assert (garbage["reason"], garbage["credential"]["id"]) == ("NOT_FOUND", None)
    assert tokens[1] not in (tmp_path / "audit" / "audit.jsonl").read_text()

    # The operator is an actor the export filters find.
    code, out, _ = cli(
        "audit",
        "export",
        "--config",
        str(config),
        "--format",
        "csv",
        "--actor",
        USER,
        "--outcome",
        "failure",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["type"], r["reason"], r["credential_id"]) for r in rows] == [
        ("credential.revoke", "NOT_FOUND", ids[0]),
        ("credential.revoke", "NOT_FOUND", ""),
    ]


def test_a_revocation_the_audit_log_refuses_fails_the_command(
    redis_sessions: tuple[Harness, Path], tmp_path: Path
) -> None:
    h, config = redis_sessions
    tokens = [h.client.get(OFFLINE, headers=BOB).get_json()["refresh_token"] for _ in range(3)]
    ids = [session_id(t) for t in tokens]
    break_the_audit_file(tmp_path)
    code, _, err = cli("tokens", "revoke", "--config", str(config), *ids)
    assert code == 1
    assert f"session {ids[0]} revoked, but the audit log did not record it: " in err
    assert REFUSAL in err
    assert "0 revoked and recorded before it, 2 not tried" in err
    refused = h.client.get(f"/token?service={SERVICE}", headers=basic("<token>", tokens[0]))
    assert refused.status_code == 401  # revoked all the same
    kept = h.client.get(f"/token?service={SERVICE}", headers=basic("<token>", tokens[1]))
    assert kept.status_code == 200  # not tried: it would have gone unrecorded too


# -- the trail as a whole -------------------------------------------------------------


def test_the_trail_verifies_across_the_service_and_the_commands(tmp_path: Path) -> None:
    """The commands run as processes of their own, each a writer with its own chain
    (in-process runs would share the test's pid, and so its writer id)."""
    ring = fresh_ring(tmp_path)
    config = config_file(tmp_path, ring)
    settings = parse_settings(yaml.safe_load(config.read_text()), base_dir=tmp_path, environ={})
    client = create_app(settings).test_client()
    assert client.get(OFFLINE, headers=ALICE).status_code == 200

    environ = {k: v for k, v in os.environ.items() if k != ENV_CONFIG}
    for command in (["keys", "generate"], ["keys", "rotate"]):
        done = subprocess.run(
            [sys.executable, "-m", "authsvc", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            env=environ,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    everything = trail(tmp_path)
    assert [e["type"] for e in everything if e["type"] != "audit.checkpoint"] == [
        "config.load",
        "credential.create",
        "token.issue",
        "key.generate",
        "key.rotate",
    ]
    # The service has not written a checkpoint yet: its events are uncovered, not wrong.
    report = verify_events(everything, keys=public_keys(KeyRing.load(ring)))
    assert report.ok, report.first_problem
    assert report.writers == 3
    assert report.checkpoints == 2
    assert report.uncovered == 3  # the service's, until its next checkpoint
