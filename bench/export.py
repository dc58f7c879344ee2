"""Audit export throughput: ``authsvc audit export`` over the audit file a run produced.

Each format runs once as ``python -m authsvc audit export --config CFG --format F
--output /dev/null`` (a process of its own, as an operator runs it); its wall time and
CPU (user + system, from ``getrusage`` of the children) are measured. The command's
fixed cost (interpreter start, imports, configuration) is measured once with a
configuration whose audit file does not exist (0 events) and subtracted for the
``net`` rate.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.processes import REPO, BenchError

FORMATS = ("jsonl", "csv", "ocsf", "ecs")
_EXPORTED = re.compile(r"authsvc: (\d+) events exported to ")


@dataclass(frozen=True)
class ExportRun:
    format: str
    events: int
    seconds: float
    cpu_seconds: float
    #: The same command's wall time with no events (subtracted for ``net_rate``).
    startup_seconds: float

    @property
    def rate(self) -> float:
        """Events per second of wall time, start-up included."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def net_rate(self) -> float:
        """Events per second once the command is up (its empty run's time subtracted)."""
        busy = self.seconds - self.startup_seconds
        return self.events / busy if busy > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float | None:
        return self.cpu_seconds * 1e6 / self.events if self.events else None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _export(config: Path, fmt: str) -> tuple[int, float, float]:
    """(events exported, wall seconds, CPU seconds) of one export to /dev/null."""
    argv = [sys.executable, "-m", "authsvc", "audit", "export", "--config", str(config),
            "--format", fmt, "--output", "/dev/null"]
    cpu_before = _children_cpu()
    start = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False,
                                timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"audit export --format {fmt} did not finish in 30 min") from exc
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    found = _EXPORTED.findall(result.stderr)
    if result.returncode != 0 or not found:
        raise BenchError(f"authsvc audit export --format {fmt} failed "
                         f"({result.returncode}): {result.stderr.strip()[-500:]}")
    return int(found[-1]), seconds, cpu


def count_events(path: Path) -> int:
    """Lines in the audit file and its rotated parts (what an export should read)."""
    total = 0
    for part in [*path.parent.glob(path.name + ".*"), path]:
        if part.suffix == ".lock" or not part.is_file():
            continue
        with part.open("rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return total


def measure_exports(config: Path, tmp: Path,
                    formats: Sequence[str] = FORMATS) -> list[ExportRun]:
    """Export the audit file of ``config`` (a file-sink configuration) in each format."""
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["audit"] = {"sink": "file", "file": {"path": str(tmp / "no-audit-here" / "a.jsonl")},
                     "spool": str(tmp / "no-audit-here" / "spool.jsonl"),
                     "key_file": str(tmp / "no-audit-here" / "fingerprint.key")}
    empty = tmp / "config-export-empty.yaml"
    empty.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    events, startup, _ = _export(empty, "jsonl")
    if events:
        raise BenchError(f"the empty export found {events} events")
    runs = []
    for fmt in formats:
        events, seconds, cpu = _export(config, fmt)
        run = ExportRun(fmt, events, round(seconds, 3), round(cpu, 3), round(startup, 3))
        print(f"  export {fmt:<6} {events} events in {seconds:6.2f} s: {run.rate:8.0f} "
              f"events/s ({run.net_rate:.0f} net of {startup:.2f} s start-up), cpu "
              f"{run.cpu_us_per_event or 0:.1f} us/event", flush=True)
        runs.append(run)
    return runs
