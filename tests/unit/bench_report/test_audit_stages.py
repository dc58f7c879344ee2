"""bench/audit_stages.py: its timers, its table, and a short timed run of each sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.audit_stages import REQUEST, format_table, measure, timed
from bench.fixture import make_fixture


def test_a_timer_counts_each_call_and_passes_results_and_errors_through() -> None:
    spent: list[int] = []

    def double(value: int) -> int:
        if value < 0:
            raise ValueError("negative")
        return value * 2

    timing = timed(double, spent)
    assert timing(21) == 42
    with pytest.raises(ValueError, match="negative"):
        timing(-1)
    assert len(spent) == 2 and all(ns >= 0 for ns in spent)


def test_the_table_shows_what_ran_and_the_audits_share() -> None:
    table = format_table({
        "file": {REQUEST: 400.0, "decision": 300.0, "audit record": 50.0, "  file write": 20.0},
        "redis": {REQUEST: 500.0, "decision": 350.0, "audit record": 40.0,
                  "  stream append": 10.0},
    })  # fmt: skip
    rows = {line[:16].rstrip(): line[16:].split() for line in table.splitlines()[1:]}
    assert rows == {
        REQUEST: ["400.0", "500.0"],
        "decision": ["300.0", "350.0"],
        "audit record": ["50.0", "40.0"],
        "  file write": ["20.0", "-"],
        "  stream append": ["-", "10.0"],
        "audit / request": ["0.125", "0.080"],
    }  # the seal ran in neither: no row


@pytest.mark.parametrize(("sink", "write"), [("file", "  file write"),
                                             ("redis", "  stream append")])
def test_a_timed_run_times_every_stage_of_its_sink_nested_in_the_request(
    sink: str, write: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import authsvc.app
    from authsvc.audit.build import build_audit

    # bench.noaudit patches build_audit for good (as in a server's master): undo it here
    monkeypatch.setattr(authsvc.app, "build_audit", build_audit)
    fixture = make_fixture(tmp_path)
    config = fixture.config("memory", "memory://", cache_ttl=60, audit={"sink": sink},
                            name=f"config-{sink}")
    medians = measure(config, 9, 2, put=monkeypatch.setattr)
    other = "  stream append" if write == "  file write" else "  file write"
    assert set(medians) == {REQUEST, "decision", "audit record", "  seal", write}
    assert other not in medians
    # each stage runs inside the one above it, in every request, so its median is less
    assert 0 < medians[write] < medians["audit record"] < medians["decision"] < medians[REQUEST]
    assert 0 < medians["  seal"] < medians["audit record"]
