"""``authsvc detect alerts`` filters; ``detect run`` and ``detect alerts`` refuse what they
cannot do with a message and a non-zero exit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.settings import AnomalySettings
from authsvc.anomaly.state import MemoryState
from authsvc.cli import main
from tests.functional.anomaly.support import attack_mix, chained, write_config

T0 = int(time.time()) - 3 * 3600


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def file_trail(tmp_path: Path, keys_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A file audit trail of decisions and the alerts replay finds in them."""
    config = write_config(tmp_path / "authsvc.yaml", keys_dir, storage="memory://", sink="file")
    events = attack_mix(T0)
    engine = build_engine(AnomalySettings(), MemoryState())
    alerts = [alert for event in events for alert in engine.process(event)]
    path = tmp_path / "audit" / "audit.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    trail = chained([*events, *alerts], "registry-svc:1")
    path.write_text("".join(json.dumps(event) + "\n" for event in trail))
    return config, alerts


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = run("detect", "alerts", "--config", str(config), "--format", "jsonl", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_alerts_lists_every_alert_of_the_trail(
    file_trail: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, alerts = file_trail
    got = listed(config)
    assert [a["event_id"] for a in got] == [a["event_id"] for a in alerts]
    assert all(a["type"] == "anomaly.alert" and a["writer"] == "registry-svc:1" for a in got)


def test_alerts_filters_by_detector_entity_severity_and_time(
    file_trail: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, alerts = file_trail
    spray = next(a for a in alerts if a["alert"]["detector"] == "password_spray")

    assert {a["alert"]["detector"] for a in listed(config, "--detector", "brute_force")} == {
        "brute_force"
    }
    by_entity = listed(config, "--entity", spray["alert"]["entity"])
    assert by_entity and {a["alert"]["entity"] for a in by_entity} == {spray["alert"]["entity"]}
    assert {a["alert"]["severity"] for a in listed(config, "--severity", "page")} == {"page"}
    at = spray["time"] // 1000
    assert spray["event_id"] in {a["event_id"] for a in listed(config, "--since", str(at))}
    assert spray["event_id"] not in {a["event_id"] for a in listed(config, "--until", str(at))}
    assert listed(config, "--since", str(T0 + 86400)) == []


def test_alerts_as_a_table(file_trail: tuple[Path, list[dict[str, Any]]]) -> None:
    config, alerts = file_trail
    code, out, _ = run("detect", "alerts", "--config", str(config))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["TIME", "(UTC)", "SEVERITY", "DETECTOR"]
    assert len(rows) == len(alerts)
    assert all(row.endswith(alert["event_id"]) for row, alert in zip(rows, alerts, strict=True))
    assert alerts[0]["alert"]["entity"] in rows[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "'yesterday' is neither ISO 8601 nor seconds"),
        (["--detector", "spray"], "unknown detector 'spray' (one of: password_spray"),
        (["--severity", "urgent"], "'urgent' is not one of 'page', 'signal'"),
    ],
)
def test_alerts_refuses_bad_options(
    file_trail: tuple[Path, list[dict[str, Any]]], args: list[str], message: str
) -> None:
    code, _, err = run("detect", "alerts", "--config", str(file_trail[0]), *args)
    assert code == 2
    assert message in err


def test_alerts_refuses_the_memory_store(tmp_path: Path, keys_dir: Path) -> None:
    config = write_config(tmp_path / "a.yaml", keys_dir, storage="memory://", sink="redis")
    code, _, err = run("detect", "alerts", "--config", str(config))
    assert code == 2
    assert "memory:// store, inside the server process" in err


@pytest.mark.parametrize(
    ("sink", "storage", "message"),
    [
        ("file", "redis://127.0.0.1:1/0", "audit.sink is 'file': set audit.sink: redis"),
        ("file", "redis://127.0.0.1:1/0", "authsvc detect replay"),
        ("redis", "memory://", "storage is 'memory://': use a redis:// storage"),
    ],
)
def test_run_needs_the_audit_stream_in_redis(
    tmp_path: Path, keys_dir: Path, sink: str, storage: str, message: str
) -> None:
    config = write_config(tmp_path / "a.yaml", keys_dir, storage=storage, sink=sink)
    code, _, err = run("detect", "run", "--config", str(config))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_run_refuses_a_missing_webhook_secret(tmp_path: Path, keys_dir: Path) -> None:
    config = write_config(
        tmp_path / "a.yaml", keys_dir, storage="redis://127.0.0.1:1/0",
        anomaly={"webhook": {"url": "https://hooks.example/x", "secret_file": "nope.txt"}},
    )  # fmt: skip
    code, _, err = run("detect", "run", "--config", str(config))
    assert code == 2
    assert "webhook secret_file" in err and "nope.txt" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-bind", "9100"], "--metrics-bind: '9100' is not HOST:PORT"),
        (["--metrics-bind", "127.0.0.1:99999"], "is not HOST:PORT"),
        (["--batch", "0"], "Invalid value for '--batch'"),
        (["--min-idle", "0"], "Invalid value for '--min-idle'"),
    ],
)
def test_run_refuses_bad_options(
    tmp_path: Path, keys_dir: Path, args: list[str], message: str
) -> None:
    config = write_config(tmp_path / "a.yaml", keys_dir, storage="redis://127.0.0.1:1/0")
    code, _, err = run("detect", "run", "--config", str(config), *args)
    assert code == 2
    assert message in err


@pytest.mark.redis
def test_run_says_when_redis_does_not_answer(
    tmp_path: Path, keys_dir: Path, closed_port: int
) -> None:
    config = write_config(
        tmp_path / "a.yaml", keys_dir, storage=f"redis://127.0.0.1:{closed_port}/0"
    )
    code, _, err = run("detect", "run", "--config", str(config))
    assert code == 1
    assert "did not answer" in err and "Traceback" not in err


def test_run_needs_a_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHSVC_CONFIG", raising=False)
    code, _, err = run("detect", "run")
    assert code == 2
    assert "no configuration" in err
