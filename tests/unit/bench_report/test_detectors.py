"""The in-request detectors' table: b-basic-cached against j-basic-nobackoff, per round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import Measurement, Options
from bench.report import (
    DETECTOR_TARGET,
    NO_BACKOFF,
    CaseResult,
    StoreResult,
    detector_summary,
    format_detector_table,
    write_json,
)
from tests.unit.bench_report.measurements import measurement


def run(rate: float, *, non200: int = 0, cpu_us: float = 1000.0) -> Measurement:
    return measurement(rate, non200=non200, cpu_us=cpu_us)


def outcome(b: list[Measurement], j: list[Measurement]) -> StoreResult:
    result = StoreResult("redis", "redis://127.0.0.1:6379/0", 2)
    result.cases = [
        CaseResult("b-basic-cached", "redis", "Basic auth", runs=b),
        CaseResult(NO_BACKOFF, "redis", "Basic auth, backoff off", runs=j),
    ]
    return result


def test_ratio_is_the_median_of_the_rounds_ratios() -> None:
    # Rounds: 0.95, 0.80, 1.00 of j. The ratio of the medians would be 950/1000.
    rows = detector_summary(outcome([run(950), run(400), run(1100)],
                                    [run(1000), run(500), run(1100)]))
    assert [r.case for r in rows] == [NO_BACKOFF, "b-basic-cached"]
    base, b = rows
    assert base.verdict == "baseline" and base.target is None
    assert b.vs_no_backoff == pytest.approx(0.95)
    assert b.target == DETECTOR_TARGET and b.verdict == "PASS"


def test_below_the_target() -> None:
    rows = detector_summary(outcome([run(800, cpu_us=1200)], [run(1000, cpu_us=1000)]))
    b = rows[1]
    assert b.vs_no_backoff == pytest.approx(0.8)
    assert b.verdict == "BELOW"
    assert b.extra_cpu_us == pytest.approx(200)
    assert b.extra_server_us == pytest.approx(1e6 / 800 - 1e6 / 1000)
    assert "BELOW" in format_detector_table([outcome([run(800)], [run(1000)])])


def test_errors_in_either_case_are_not_a_verdict() -> None:
    assert detector_summary(outcome([run(1000)], [run(1000, non200=3)]))[1].verdict == "ERRORS"
    assert detector_summary(outcome([run(1000, non200=1)], [run(1000)]))[1].verdict == "ERRORS"


def test_no_baseline_no_rows() -> None:
    result = outcome([run(1000)], [])
    assert detector_summary(result) == []
    assert format_detector_table([result]) == "(no in-request detector cases)"


def test_json_holds_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    options = Options(duration=10, connections=16, nocache_duration=5, nocache_connections=4,
                      warmup=2, wrk="/usr/bin/wrk", wrk_threads=1, rounds=1)
    write_json(path, [outcome([run(900)], [run(1000)])], options, (0.0, 0.0, 0.0))
    store = json.loads(path.read_text())["stores"][0]
    rows = {row["case"]: row for row in store["detectors"]}
    assert rows["b-basic-cached"]["vs_no_backoff"] == pytest.approx(0.9)
    assert rows["b-basic-cached"]["verdict"] == "PASS"


def test_the_table_gives_the_extra_cost_of_the_case_only() -> None:
    table = format_detector_table([outcome([run(800, cpu_us=1200)], [run(1000, cpu_us=1000)])])
    base_line, case_line = (line for line in table.splitlines() if "redis" in line)
    assert "+200" in case_line and "+250" in case_line  # CPU, and 1e6/800 - 1e6/1000
    assert "+" not in base_line.replace("(baseline)", "")  # no extra against itself
