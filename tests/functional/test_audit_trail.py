"""The audit trail through the app: the real pipeline (chain, checkpoints, sinks),
`authsvc audit verify` and `authsvc audit export`, and what a failing sink does."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from authsvc.app import create_app
from authsvc.audit.verify import public_keys, read_jsonl, verify_events
from authsvc.cli import main
from authsvc.config import Settings, parse_settings
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.conftest import PASSWORDS, SERVICE, base_config, basic

ALICE = basic("alice", PASSWORDS["alice"])


def settings_for(tmp_path: Path, keys_dir: Path, **audit: Any) -> tuple[Settings, Path]:
    data = base_config(keys_dir)
    data["audit"] = {"checkpoint_every": 3, **audit}
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_settings(data, base_dir=tmp_path, environ={}), path


def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


def decisions(path: Path) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(path) if e["type"] == "token.issue"]


def drive(client: Any) -> None:
    client.get(f"/token?service={SERVICE}&scope=repository:team/app:pull", headers=ALICE)
    client.get(f"/token?service={SERVICE}&scope=repository:team/prod/x:pull,delete", headers=ALICE)
    client.get(f"/token?service={SERVICE}", headers=basic("alice", "wrong"))
    client.get("/token?service=nope")


def test_every_decision_is_one_chained_event(tmp_path: Path, keys_dir: Path) -> None:
    settings, _ = settings_for(tmp_path, keys_dir)
    client = create_app(settings).test_client()
    drive(client)
    events = decisions(audit_file(tmp_path))
    assert [(e["outcome"], e["reason"]) for e in events] == [
        ("success", "GRANTED"),
        ("partial", "SCOPE_DENIED"),
        ("failure", "INVALID_CREDENTIALS"),
        ("failure", "UNKNOWN_SERVICE"),
    ]
    everything = list(read_jsonl(audit_file(tmp_path)))
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert any(e["type"] == "audit.checkpoint" for e in everything)
    assert all(e["schema"] == "authsvc.audit/1" for e in everything)
    assert events[0]["actor"]["fingerprint"] == events[1]["actor"]["fingerprint"]
    assert events[2]["actor"]["fingerprint"] != events[0]["actor"]["fingerprint"]
    report = verify_events(everything, keys=public_keys(KeyRing.load(keys_dir)))
    assert report.ok, report.first_problem
    assert report.checkpoints >= 1
    assert PASSWORDS["alice"] not in audit_file(tmp_path).read_text()


def test_verify_and_export_from_the_command_line(tmp_path: Path, keys_dir: Path) -> None:
    settings, config = settings_for(tmp_path, keys_dir)
    drive(create_app(settings).test_client())
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("ok: ")

    failures = runner.invoke(
        main,
        ["audit", "export", "--config", str(config), "--format", "csv", "--outcome", "failure"],
    )
    assert failures.exit_code == 0, failures.output
    rows = list(csv.DictReader(io.StringIO(failures.stdout)))
    assert {r["reason"] for r in rows} == {"INVALID_CREDENTIALS", "UNKNOWN_SERVICE"}

    for fmt in ("jsonl", "ocsf", "ecs"):
        out = runner.invoke(
            main,
            [
                "audit",
                "export",
                "--config",
                str(config),
                "--format",
                fmt,
                "--repository",
                "team/app",
            ],
        )
        assert out.exit_code == 0, out.output
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert lines, fmt
    ocsf = [
        json.loads(line)
        for line in runner.invoke(
            main, ["audit", "export", "--config", str(config), "--format", "ocsf"]
        ).stdout.splitlines()
    ]
    assert {e["class_uid"] for e in ocsf} >= {3002, 3003, 6003}


def test_verify_names_an_edited_event(tmp_path: Path, keys_dir: Path) -> None:
    settings, config = settings_for(tmp_path, keys_dir)
    drive(create_app(settings).test_client())
    path = audit_file(tmp_path)
    lines = path.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if '"GRANTED"' in line)
    event = json.loads(lines[target])
    event["decision"]["granted"] = ["repository:team/app:pull,push,delete"]
    lines[target] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 1
    assert f"({event['event_id']}" in result.stderr
    assert "EDITED" in result.stderr


def test_deny_no_token_without_a_record(tmp_path: Path, keys_dir: Path) -> None:
    settings, _ = settings_for(tmp_path, keys_dir, sink="redis")
    dead = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="x:")
    client = create_app(
        settings.model_copy(update={"storage": "redis://127.0.0.1:1/0"}), deps=_deps(dead)
    ).test_client()
    r = client.get(f"/token?service={SERVICE}", headers=ALICE)
    assert r.status_code == 503
    assert "token" not in r.get_json()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert any(
        "audit: the last decision could not be recorded" in p for p in ready.get_json()["problems"]
    )


def test_spool_keeps_serving_and_says_so(tmp_path: Path, keys_dir: Path) -> None:
    settings, _ = settings_for(tmp_path, keys_dir, sink="redis", on_failure="spool")
    dead = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="x:")
    client = create_app(settings, deps=_deps(dead)).test_client()
    r = client.get(f"/token?service={SERVICE}", headers=ALICE)
    assert r.status_code == 200
    spooled = [
        json.loads(line) for line in (tmp_path / "audit" / "spool.jsonl").read_text().splitlines()
    ]
    assert any(e["type"] == "token.issue" for e in spooled)
    audit = client.get("/readyz").get_json().get("audit")
    assert audit is not None and audit["degraded"] is True


def _deps(store: RedisStore) -> Any:
    from authsvc.app import Dependencies

    return Dependencies(store=store)




def test_the_audit_key_is_created_whole_once(tmp_path: Path) -> None:
    """Processes starting together share one key, and never read a half-written one."""
    from concurrent.futures import ThreadPoolExecutor

    from authsvc.audit.fingerprint import load_or_create_key

    path = tmp_path / "audit" / "fingerprint.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_or_create_key(path), range(32)))
    assert len(set(keys)) == 1
    assert len(keys[0]) == 32
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["fingerprint.key"]
