"""``authsvc detect replay``: deterministic, and clear about bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from authsvc.cli import main
from tests.unit.anomaly.events import T0, failure, success


def campaign() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [success("alice", "198.51.100.7", T0)]
    events += [failure(f"user{i}", "203.0.113.9", T0 + 10 + i) for i in range(12)]
    events.append(success("user3", "203.0.113.9", T0 + 100))
    events.append({"type": "audit.checkpoint", "event_id": "x", "time": T0 * 1000})
    return events


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    source = write(tmp_path / "events.jsonl", campaign())
    runner = CliRunner()
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = runner.invoke(
            main, ["detect", "replay", "--input", str(source), "--output", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
        assert "15 events, 2 alerts" in result.output
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    alerts = [json.loads(line) for line in outputs[0].splitlines()]
    assert [(a["type"], a["alert"]["detector"], a["alert"]["severity"]) for a in alerts] == [
        ("anomaly.alert", "password_spray", "signal"),
        ("anomaly.alert", "success_after_spray", "page"),
    ]


def test_the_config_tunes_the_detectors(tmp_path: Path) -> None:
    source = write(tmp_path / "events.jsonl", campaign())
    config = tmp_path / "authsvc.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "services": ["registry"],
                "anomaly": {"detectors": {"password_spray": {"threshold": 20}}},
            }
        )
    )
    result = CliRunner().invoke(
        main, ["detect", "replay", "--input", str(source), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "15 events, 0 alerts" in result.output


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(campaign()[0]) + "\n\n{not json\n")
    result = CliRunner().invoke(main, ["detect", "replay", "--input", str(source)])
    assert result.exit_code == 1
    assert f"{source} line 3: not JSON" in result.output
    source.write_text("[1, 2]\n")
    result = CliRunner().invoke(main, ["detect", "replay", "--input", str(source)])
    assert result.exit_code == 1
    assert "line 1: not a JSON object" in result.output


def test_a_missing_input_and_a_bad_config_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["detect", "replay", "--input", str(tmp_path / "missing.jsonl")]
    )
    assert result.exit_code == 1
    assert "cannot read" in result.output and "No such file" in result.output
    config = tmp_path / "authsvc.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "services": ["registry"],
                "anomaly": {"detectors": {"password_spray": {"treshold": 3}}},
            }
        )
    )
    source = write(tmp_path / "events.jsonl", campaign())
    result = CliRunner().invoke(
        main, ["detect", "replay", "--input", str(source), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "anomaly.detectors.password_spray.treshold: unknown setting" in result.output


def test_a_geo_database_that_cannot_be_used_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "authsvc.yaml"
    config.write_text(
        yaml.safe_dump(
            {"services": ["registry"], "anomaly": {"geo": {"asn_db": "missing.mmdb"}}}
        )
    )
    source = write(tmp_path / "events.jsonl", campaign())
    result = CliRunner().invoke(
        main, ["detect", "replay", "--input", str(source), "--config", str(config)]
    )
    assert result.exit_code == 2
    # Without the reader installed it says how to get it; with it, that the file is missing.
    assert "anomaly.geo" in result.output
    assert "maxminddb" in result.output or "missing.mmdb" in result.output
