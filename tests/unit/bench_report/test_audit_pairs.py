"""bench/audit.py: each audit run against the no-audit runs around it."""

from __future__ import annotations

import pytest

from bench.audit import Paired, format_rows, order, pair
from bench.load import Measurement
from bench.report import NO_AUDIT
from tests.unit.bench_report.measurements import measurement


def run(
    rate: float, *, non200: int = 0, cpu_us: float = 500.0, switches: float = 0.0
) -> Measurement:
    return measurement(rate, seconds=3, non200=non200, cpu_us=cpu_us, switches=switches)


def test_the_audit_cases_swap_places_every_round() -> None:
    assert order(0) == ("h-audit-file", "i-audit-redis")
    assert order(1) == ("i-audit-redis", "h-audit-file")
    assert order(2) == order(0)


def test_each_run_is_taken_to_the_mean_of_the_no_audit_runs_around_it() -> None:
    no_audit = [run(1000), run(2000), run(1000)]
    runs = [
        (0, "h-audit-file", run(1350)),
        (0, "i-audit-redis", run(1500)),
        (1, "i-audit-redis", run(900, cpu_us=600)),
        (1, "h-audit-file", run(1425)),
    ]
    h, i = pair("memory", no_audit, runs)
    assert (h.case, i.case) == ("h-audit-file", "i-audit-redis")
    assert h.ratios == pytest.approx([0.9, 0.95])  # 1350 / 1500, 1425 / 1500
    assert i.ratios == pytest.approx([1.0, 0.6])
    assert i.cpu_ratios == pytest.approx([1.0, 500 / 600])
    assert h.verdict() == "PASS"  # median 0.925
    assert i.verdict() == "BELOW"  # median 0.8


def test_errors_fail_the_case_whatever_its_ratio() -> None:
    row = Paired("h-audit-file", "redis", runs=[run(1000, non200=1)], around=[1000.0],
                 around_cpu=[500.0], around_switches=[25.0])
    assert row.verdict() == "ERRORS"
    table = format_rows([row])
    assert "redis   h-audit-file" in table and "ERRORS" in table


def test_the_table_names_the_target_and_each_case() -> None:
    no_audit = [run(1000), run(1000)]
    rows = pair("memory", no_audit, [(0, "h-audit-file", run(950)), (0, "i-audit-redis", run(850))])
    lines = format_rows(rows).splitlines()
    assert "target 0.9" in lines[0]
    assert lines[1].split()[:4] == ["memory", "h-audit-file", "0.95", "0.95-0.95"]
    assert lines[1].endswith("PASS")
    assert lines[2].split()[:3] == ["memory", "i-audit-redis", "0.85"]
    assert lines[2].endswith("BELOW")
    assert NO_AUDIT not in "".join(lines[1:])


def test_the_switches_a_case_adds_are_taken_to_the_no_audit_runs_around_it() -> None:
    no_audit = [run(1000, switches=24.0), run(1000, switches=26.0), run(1000)]
    runs = [
        (0, "h-audit-file", run(950, switches=25.5)),
        (0, "i-audit-redis", run(850, switches=31.0)),
        (1, "i-audit-redis", run(850, switches=33.0)),  # its n runs: 26 and none
        (1, "h-audit-file", run(950)),  # not counted: no figure
    ]
    h, i = pair("memory", no_audit, runs)
    assert h.added_switches == pytest.approx([0.5])
    assert i.added_switches == pytest.approx([6.0, 7.0])
    lines = format_rows([h, i]).splitlines()
    assert "cs/token +" in lines[0]
    assert lines[1].split()[5] == "+0.5" and lines[2].split()[5] == "+6.5"


def test_a_groups_switches_are_counted_over_all_its_threads() -> None:
    """Against a real process group: four threads that each sleep twenty times make at
    least eighty voluntary switches between two readings, while they are alive."""
    import subprocess
    import sys
    import textwrap

    from bench.load import group_switches

    child = textwrap.dedent("""
        import sys, threading, time
        go, slept, finish = threading.Event(), threading.Semaphore(0), threading.Event()
        def wait():
            go.wait()
            for _ in range(20):
                time.sleep(0.001)
            slept.release()
            finish.wait()
        threads = [threading.Thread(target=wait) for _ in range(4)]
        for t in threads: t.start()
        print("ready", flush=True)
        sys.stdin.readline()
        go.set()
        for _ in threads: slept.acquire()
        print("slept", flush=True)
        sys.stdin.readline()
        finish.set()
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline() == "ready\n"
        before = group_switches(process.pid)
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline() == "slept\n"
        after = group_switches(process.pid)
        assert after - before >= 4 * 20, (before, after)
        assert group_switches(2**22 + 12345) == 0  # no such group
    finally:
        process.kill()
        process.wait()
