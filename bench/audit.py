"""The audit trail's cost in throughput, measured in short interleaved runs.

    python bench/audit.py [--store memory|redis|both] [--rounds 8] [--duration 3]

``bench/run.py`` measures the audit cases once per round among ten other cases, so a
round's no-audit run and its audit runs are up to a minute apart; on a shared machine
the neighbours' load moves more than the audit's cost in that time. Here only the
three servers of the audit cases run (n: auditing patched out by ``bench/noaudit.py``,
h: ``sink: file``, i: ``sink: redis``), configured as in ``bench/run.py``, and the runs
alternate::

    n h i n i h n h i n ...

Every audit run sits between two no-audit runs, seconds apart, and its ratio is taken
to their mean; h and i swap places each round, so neither is always the first after
n.

Each server runs one gunicorn worker (8 threads), for both stores. With two workers
(``bench/run.py``'s Redis store) the runs fell into two kinds at random within one
benchmark: ~1,500 tokens/s at ~700 us of CPU per token (what one worker gives) and
~4,000 at ~400 us, as if wrk's connections, opened at its start and kept, had fallen
all on one worker or on both. That, not the audit, decided the ratio of two runs.

Reported per case: the median of those ratios (the figure the target is held to),
their range, CPU per token against the no-audit runs' (``cpu``: the servers'
processes only; a private redis-server's CPU is not in it, though it shares the
cores), and the context switches per token the case adds to theirs (``cs``: the
server's threads', voluntary and not; a thread is switched out at each of its waits).
Exits 1 when a median is below the target (0.9), 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.fixture import (  # noqa: E402
    ANON_PATH,
    ensure_redis,
    make_fixture,
    start_authsvc,
    start_private_redis,
)
from bench.load import Load, Measurement, Options, find_wrk, measure  # noqa: E402
from bench.processes import (  # noqa: E402
    BenchError,
    Processes,
    Server,
    http_request,
    sigterm_as_interrupt,
    wait_ready,
)
from bench.report import AUDIT_CASES, AUDIT_TARGET, NO_AUDIT  # noqa: E402
from bench.run import DEFAULT_REDIS_URL  # noqa: E402

#: One gunicorn worker per server (see above).
WORKERS = 1


@dataclass
class Paired:
    """One audit case's runs, each with the mean of the no-audit runs around it."""

    case: str
    store: str
    runs: list[Measurement] = field(default_factory=list)
    around: list[float] = field(default_factory=list)
    around_cpu: list[float] = field(default_factory=list)
    around_switches: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [r.rate / base for r, base in zip(self.runs, self.around, strict=True) if base]

    @property
    def cpu_ratios(self) -> list[float]:
        """No-audit CPU per token over this case's: the capacity the audit leaves."""
        return [
            base / cpu
            for r, base in zip(self.runs, self.around_cpu, strict=True)
            if (cpu := r.cpu_us_per_token) and base
        ]

    @property
    def added_switches(self) -> list[float]:
        """Context switches per token over the no-audit runs' (what the audit's waits
        add; counted only where both were)."""
        return [
            switches - base
            for r, base in zip(self.runs, self.around_switches, strict=True)
            if (switches := r.switches_per_token) is not None and base
        ]

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def verdict(self) -> str:
        if self.errors:
            return "ERRORS"
        return "PASS" if statistics.median(self.ratios) >= AUDIT_TARGET else "BELOW"


def order(round_index: int) -> tuple[str, ...]:
    """The audit cases of one round: h and i swap places every round."""
    cases = tuple(AUDIT_CASES)
    return cases if round_index % 2 == 0 else cases[::-1]


def pair(
    store: str, no_audit: Sequence[Measurement], runs: Sequence[tuple[int, str, Measurement]]
) -> list[Paired]:
    """Each audit run (round, case, measurement) against the no-audit runs that open and
    close its round (``no_audit[round]`` and ``no_audit[round + 1]``)."""
    paired = {case: Paired(case, store) for case in AUDIT_CASES}
    for index, case, run in runs:
        before, after = no_audit[index], no_audit[index + 1]
        target = paired[case]
        target.runs.append(run)
        target.around.append((before.rate + after.rate) / 2)
        target.around_cpu.append(_mean(before.cpu_us_per_token, after.cpu_us_per_token))
        target.around_switches.append(
            _mean(before.switches_per_token, after.switches_per_token)
        )
    return list(paired.values())


def _mean(*values: float | None) -> float:
    """The mean of the values there are (0.0: none)."""
    present = [v for v in values if v]
    return sum(present) / len(present) if present else 0.0


def run_store(
    store: str, storage: str, tmp: Path, processes: Processes, options: Options
) -> list[Paired]:
    workers = WORKERS
    fixture = make_fixture(tmp / store)
    audit_storage = storage
    if not storage.startswith("memory://"):
        audit_storage = start_private_redis(
            processes, fixture.tmp, why="i-audit-redis needs a Redis of its own",
            name=f"redis-audit-{store}")
    configs = {
        NO_AUDIT: fixture.config(store, storage, cache_ttl=60, name=f"config-{store}-noaudit"),
        "h-audit-file": fixture.config(store, storage, cache_ttl=60, audit={"sink": "file"},
                                       name=f"config-{store}-audit-file"),
        "i-audit-redis": fixture.config(store, audit_storage, cache_ttl=60,
                                        audit={"sink": "redis"},
                                        name=f"config-{store}-audit-redis"),
    }
    print(f"\n== store {store} ({storage}), --workers {workers}; {options.rounds} rounds of "
          f"{options.duration} s runs", flush=True)
    servers: dict[str, Server] = {}
    for case, config in configs.items():
        servers[case] = start_authsvc(
            processes, config, name=f"authsvc-{store}-{case}", workers=workers,
            log_dir=fixture.tmp, module="bench.noaudit" if case == NO_AUDIT else "authsvc")
    try:
        for server in servers.values():
            wait_ready(server.process, server.port)
            status, body = http_request(server.port, ANON_PATH)
            if status != 200:
                raise BenchError(f"{server.name} answered {status} to {ANON_PATH}: "
                                 f"{body[:300]!r}")
        load = Load(ANON_PATH, options.duration, options.connections)
        no_audit = [measure(servers[NO_AUDIT], load, options, label=NO_AUDIT)]
        runs: list[tuple[int, str, Measurement]] = []
        for index in range(options.rounds):
            tag = f" [round {index + 1}/{options.rounds}]"
            for case in order(index):
                runs.append((index, case, measure(servers[case], load, options,
                                                  label=case + tag)))
            no_audit.append(measure(servers[NO_AUDIT], load, options, label=NO_AUDIT + tag))
    finally:
        for server in reversed(servers.values()):
            processes.stop(server.process)
    return pair(store, no_audit, runs)


def format_rows(rows: Sequence[Paired]) -> str:
    lines = [f"{'store':<7} {'case':<14} {'vs no-audit':>11} {'range':>11} "
             f"{'cpu vs n':>8} {'cs/token +':>10}  verdict (target {AUDIT_TARGET})"]
    for row in rows:
        ratios, cpu, added = row.ratios, row.cpu_ratios, row.added_switches
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
        cpu_text = f"{statistics.median(cpu):.2f}" if cpu else "-"
        added_text = f"{statistics.median(added):+.1f}" if added else "-"
        median = f"{statistics.median(ratios):.2f}" if ratios else "-"
        lines.append(f"{row.store:<7} {row.case:<14} {median:>11} {spread:>11} "
                     f"{cpu_text:>8} {added_text:>10}  "
                     f"{row.verdict() if ratios else 'no runs'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("memory", "redis", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of n, h, i (8)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per run (3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds first (1)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("rounds, duration and connections must be at least 1, warmup 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        return 2
    options = Options(duration=args.duration, connections=args.connections,
                      nocache_duration=args.duration, nocache_connections=args.connections,
                      warmup=args.warmup, wrk=wrk, wrk_threads=1, rounds=args.rounds)
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-audit-"))
    rows: list[Paired] = []
    try:
        with sigterm_as_interrupt():
            for store in ("memory", "redis") if args.store == "both" else (args.store,):
                storage = "memory://"
                if store == "redis":
                    storage = ensure_redis(processes, tmp, args.redis_url)
                rows += run_store(store, storage, tmp, processes, options)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping every process it started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        processes.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(format_rows(rows))
    return 0 if all(row.verdict() == "PASS" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
