"""Load: wrk runs against a server, their measurements and the servers' CPU use."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.processes import BENCH_DIR, BenchError, Server

LUA_SCRIPT = BENCH_DIR / "token.lua"
SETTLE_SECONDS = 1.0


class AuthorizationPool(Protocol):
    """Single-use Authorization values: a new file of them for every wrk run."""

    def write(self, seconds: int) -> tuple[Path, int]:
        """A file of values (one a line) enough for ``seconds``: its path and count."""
        ...

    def observe(self, rate: float) -> None:
        """The rate a run reached (to size the next files)."""
        ...


@dataclass(frozen=True)
class Load:
    """One wrk run's request and shape."""

    path: str
    duration: int  # wrk takes whole seconds
    connections: int
    method: str = "GET"
    authorization: str | None = None
    body: str | None = None
    #: Each request takes the next Authorization value from a file this pool writes
    #: (instead of ``authorization``); none is sent twice unless the file runs out.
    pool: AuthorizationPool | None = None


@dataclass(frozen=True)
class Measurement:
    requests: int
    seconds: float
    non200: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    first_bad: str
    connections: int
    duration: int
    #: CPU (user + system) the server's processes used during the measured run.
    cpu_seconds: float = 0.0
    #: Context switches (voluntary and not) of the server's threads during that run.
    switches: int = 0
    #: With a pool: the values in its file, and the requests sent after it ran out
    #: (they re-sent used values, so they are counted as errors).
    pool_size: int = 0
    pool_wrapped: int = 0

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors + self.pool_wrapped

    @property
    def cpu_us_per_token(self) -> float | None:
        ok = self.requests - self.non200
        return self.cpu_seconds * 1e6 / ok if ok > 0 and self.cpu_seconds > 0 else None

    @property
    def switches_per_token(self) -> float | None:
        ok = self.requests - self.non200
        return self.switches / ok if ok > 0 and self.switches > 0 else None

    @property
    def rate(self) -> float:
        """Successful tokens per second."""
        ok = self.requests - self.non200
        return ok / self.seconds if self.seconds > 0 else 0.0


def _group(pgid: int) -> Iterator[tuple[str, list[str]]]:
    """The live processes of process group ``pgid``: each one's pid and the fields of
    its ``/proc/PID/stat`` after ``pid (comm)`` (state, ppid, pgrp, ...)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # (a process that has just ended)
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            yield entry, fields


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``.

    Each server runs in a session of its own, so its group is the gunicorn master and
    its workers. Unlike throughput, CPU per token hardly moves when other processes
    compete for the cores, which makes it the steadier of the two on a shared machine.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    # (utime and stime, in clock ticks)
    return sum(int(fields[11]) + int(fields[12]) for _, fields in _group(pgid)) / ticks


def group_switches(pgid: int) -> int:
    """Context switches, voluntary and not, of every thread of the live processes in
    process group ``pgid`` (as ``group_cpu_seconds``).

    In a threaded worker a thread is switched out at each of its waits (for a socket,
    a lock, the GIL), and one that waited for a socket often waits for the GIL next;
    the switches cost much of a token's CPU, and what a change to the request's waits
    does shows here first (bench/README.md)."""
    total = 0
    for pid, _ in _group(pgid):
        try:
            tasks = os.listdir(Path("/proc", pid, "task"))
        except OSError:
            continue
        for task in tasks:
            try:
                status = Path("/proc", pid, "task", task, "status").read_text()
            except OSError:
                continue  # (a thread that has just ended)
            total += _switch_count(status)
    return total


def _switch_count(status: str) -> int:
    """The voluntary and nonvoluntary context switches a ``/proc/.../status`` names."""
    return sum(
        int(line.split(":", 1)[1])
        for line in status.splitlines()
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"))
    )


def find_wrk() -> str | None:
    """wrk's path, or None (after saying how to install it) when it is not installed."""
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    if Path(wrk).exists():
        return wrk
    print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
    return None


def run_wrk(
    port: int, load: Load, *, wrk: str, wrk_threads: int, cpu_of: int | None = None
) -> Measurement:
    """One wrk run; ``cpu_of``: a process group whose CPU use during the run to record."""
    threads = max(1, min(wrk_threads, load.connections))
    argv = [
        wrk, "-t", str(threads), "-c", str(load.connections), "-d", f"{load.duration}s",
        "--timeout", "10s", "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}{load.path}",
    ]
    env = dict(os.environ)
    env["BENCH_METHOD"] = load.method
    env["BENCH_AUTHORIZATION"] = load.authorization or ""
    env["BENCH_BODY"] = load.body or ""
    env["BENCH_THREADS"] = str(threads)
    pool_file: Path | None = None
    pool_size = 0
    if load.pool is not None:
        pool_file, pool_size = load.pool.write(load.duration)
    env["BENCH_AUTHORIZATION_FILE"] = str(pool_file or "")
    try:
        cpu_before = group_cpu_seconds(cpu_of) if cpu_of is not None else 0.0
        switches_before = group_switches(cpu_of) if cpu_of is not None else 0
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, check=False,
                timeout=load.duration + 60,
            )
            cpu = group_cpu_seconds(cpu_of) - cpu_before if cpu_of is not None else 0.0
            switches = group_switches(cpu_of) - switches_before if cpu_of is not None else 0
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    finally:
        if pool_file is not None:
            with contextlib.suppress(OSError):
                pool_file.unlink()
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {' '.join(argv)}\n"
                         f"{result.stderr.strip()}\n{result.stdout.strip()}")
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            _, key, *rest = line.split(" ", 2)
            values[key] = rest[0] if rest else ""
    try:
        wrapped = int(values.get("pool_wrapped", "0"))
        first_bad = values.get("first_bad", "")
        if wrapped and not first_bad:
            first_bad = (f"token pool of {pool_size} ran out: {wrapped} requests re-sent a "
                         "used token")
        measurement = Measurement(
            requests=int(values["requests"]),
            seconds=int(values["duration_us"]) / 1e6,
            non200=int(values["non200"]),
            socket_errors=int(values["socket_errors"]),
            timeouts=int(values["timeouts"]),
            p50_ms=int(values["p50_us"]) / 1000,
            p90_ms=int(values["p90_us"]) / 1000,
            p99_ms=int(values["p99_us"]) / 1000,
            mean_ms=int(values["mean_us"]) / 1000,
            max_ms=int(values["max_us"]) / 1000,
            first_bad=first_bad,
            connections=load.connections,
            duration=load.duration,
            cpu_seconds=round(cpu, 3),
            switches=max(0, switches),
            pool_size=pool_size,
            pool_wrapped=wrapped,
        )
    except (KeyError, ValueError) as exc:
        raise BenchError(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}") from exc
    if load.pool is not None:
        load.pool.observe(measurement.rate)
    return measurement


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    nocache_duration: int
    nocache_connections: int
    warmup: int
    wrk: str
    wrk_threads: int
    rounds: int


def measure(server: Server, load: Load, options: Options, *, label: str) -> Measurement:
    if options.warmup > 0:
        warm = dataclasses.replace(load, duration=options.warmup)
        run_wrk(server.port, warm, wrk=options.wrk, wrk_threads=options.wrk_threads)
        time.sleep(SETTLE_SECONDS / 2)
    result = run_wrk(server.port, load, wrk=options.wrk, wrk_threads=options.wrk_threads,
                     cpu_of=server.process.popen.pid)
    errors = f", {result.errors} ERRORS (first: {result.first_bad})" if result.errors else ""
    cpu, switches = result.cpu_us_per_token, result.switches_per_token
    print(f"  {label:<34} {result.rate:9.1f} tokens/s  p50 {result.p50_ms:7.1f} ms  "
          f"p99 {result.p99_ms:7.1f} ms  cpu {'-' if cpu is None else f'{cpu:.0f}'} us/token "
          f"cs {'-' if switches is None else f'{switches:.1f}'}/token "
          f"({result.requests} requests, {load.connections} connections, "
          f"{load.duration} s{errors})", flush=True)
    time.sleep(SETTLE_SECONDS)
    return result
