"""Token endpoint load benchmark: authsvc against a minimal signing floor, with wrk.

    python bench/run.py [--duration 10] [--connections 16] [--store memory|redis|both]
                        [--rounds 1] [--warmup 2] [--keep-tmp] ...

For each store configuration it starts, under gunicorn with the same settings (gthread,
same workers and threads):

* the FLOOR (``bench/floor_app.py``): signs the same JWT with the same key, nothing else;
* authsvc with the credential cache on (``credential_cache: {ttl: 60}``);
* authsvc with the credential cache off (``ttl: 0``), otherwise the same configuration;

then measures, in this order: the floor, (a) anonymous pull, (b) Basic auth with the
cache warm, (d) refresh-token POST, (c) Basic auth with the cache off, the floor again.
Each case is reported as tokens/s, p50/p99 latency, errors and its ratio to the mean of
the two floor runs (with ``--rounds N``, cases a, b, d are repeated N times, each round
between two floor runs, and medians are reported). Only ratios within one run mean
anything on a shared machine.
Results also go to ``bench/results.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "token.lua"
DEFAULT_OUTPUT = BENCH_DIR / "results.json"

SERVICE = "registry.bench"
ISSUER = "authsvc-bench"
USER = "bench"
THREADS = 8
#: Minimum tokens/s ratio to the floor, per store.
TARGETS: Mapping[str, float] = {"memory": 0.7, "redis": 0.6}
WORKERS: Mapping[str, int] = {"memory": 1, "redis": 2}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Refresh tokens the benchmark creates in a shared Redis lapse after this (seconds);
#: the one it uses is also revoked at the end.
REFRESH_TTL = 600
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SETTLE_SECONDS = 1.0
#: A run whose slowest request took this long (and 10x its median) is called a stall.
STALL_MS = 250.0

ANON_PATH = f"/token?service={SERVICE}&scope=repository:public/app:pull"
USER_PATH = f"/token?service={SERVICE}&scope=repository:bench/app:pull,push"
OFFLINE_PATH = (
    f"/token?service={SERVICE}&scope=repository:bench/app:pull&offline_token=true&client_id=bench"
)


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed...)."""


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: TextIO | None = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every process the benchmark starts; ``stop_all`` ends each one, newest first.

    Each runs in its own session (process group == its pid), so Ctrl-C at the terminal
    reaches only this script, which then stops them in order; a process that does not
    stop on SIGTERM within ``STOP_TIMEOUT`` gets SIGKILL for its whole group (a gunicorn
    master and its workers).
    """

    def __init__(self) -> None:
        self._running: list[Process] = []

    def start(
        self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None
    ) -> Process:
        log = log_path.open("w", encoding="utf-8")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=REPO,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        process = Process(name, popen, log_path, log)
        self._running.append(process)
        return process

    def stop(self, process: Process) -> None:
        popen = process.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  {process.name} did not stop on SIGTERM; killing it", file=sys.stderr)
        # Whatever is left of its group (workers of a killed master): SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
        if process.log is not None:
            process.log.close()
            process.log = None
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            try:
                self.stop(process)
            except Exception as exc:  # keep stopping the others
                print(f"  could not stop {process.name}: {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(process: Process, port: int, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise BenchError(
                f"{process.name} exited with status {process.popen.returncode} before it was "
                f"ready; its log ({process.log_path}) ends:\n{process.log_tail()}"
            )
        try:
            status, body = http_request(port, "/readyz", timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        time.sleep(0.2)
    raise BenchError(
        f"{process.name} not ready after {timeout:.0f} s (last: {last}); its log ends:\n"
        f"{process.log_tail()}"
    )


def run_cli(args: Sequence[str], *, stdin: str | None = None) -> str:
    """``authsvc ARGS`` (as ``python -m authsvc``, so the same interpreter as the floor)."""
    result = subprocess.run(
        [sys.executable, "-m", "authsvc", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"authsvc {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Fixture:
    """The temp dir's key ring, password and configurations (one per store and cache)."""

    tmp: Path
    keys_dir: Path
    password: str
    password_hash: str

    @property
    def basic_auth(self) -> str:
        raw = f"{USER}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def config(self, store: str, storage: str, *, cache_ttl: int) -> Path:
        data: dict[str, Any] = {
            "issuer": ISSUER,
            "services": [SERVICE],
            "token_ttl": 300,
            "keys": {"dir": str(self.keys_dir), "algorithm": "ES256"},
            "storage": storage,
            "identities": {"static": {"users": {USER: {"password_hash": self.password_hash}}}},
            "credential_cache": {"ttl": cache_ttl},
            "refresh_tokens": {"ttl": REFRESH_TTL},
            "rules": [
                {
                    "id": "bench-user",
                    "match": {"account": USER},
                    "allow": [{"repository": "bench/**", "actions": ["pull", "push"]}],
                },
                {
                    "id": "anonymous-public",
                    "match": {"anonymous": True},
                    "allow": [{"repository": "public/**", "actions": ["pull"]}],
                },
            ],
        }
        path = self.tmp / f"config-{store}-{'cache' if cache_ttl else 'nocache'}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


def make_fixture(tmp: Path) -> Fixture:
    keys_dir = tmp / "keys"
    print(run_cli(["keys", "generate", "--dir", str(keys_dir), "--algorithm", "ES256"]).strip())
    password = secrets.token_urlsafe(18)
    password_hash = run_cli(["users", "hash", "--cost", "12"], stdin=password + "\n").strip()
    return Fixture(tmp, keys_dir, password, password_hash)


def redis_answers(url: str) -> bool:
    import redis

    client: redis.Redis[bytes] = redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(processes: Processes, tmp: Path, url: str) -> str:
    """``url`` if a Redis answers there, else a private redis-server's URL."""
    if redis_answers(url):
        print(f"redis: using the running server at {url}")
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError(f"no Redis answers at {url} and redis-server is not installed")
    port = free_port()
    process = processes.start(
        "redis-server",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        log_path=tmp / "redis.log",
        env=None,
    )
    own = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while not redis_answers(own):
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"could not start redis-server:\n{process.log_tail()}")
        time.sleep(0.1)
    print(f"redis: none at {url}; started a private redis-server at {own}")
    return own


def revoke_refresh_token(storage: str, token: str) -> None:
    """Remove the benchmark's refresh token from a shared store (never FLUSH anything)."""
    from authsvc.identity.sessions import Sessions
    from authsvc.store import open_store

    store = open_store(storage)
    try:
        Sessions(store, {}).revoke(token)
    finally:
        store.close()


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: Process


def start_authsvc(
    processes: Processes, config: Path, *, name: str, workers: int, log_dir: Path
) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "authsvc", "serve", "--config", str(config),
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(THREADS),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    process = processes.start(name, argv, log_path=log_dir / f"{name}.log", env=env)
    return Server(name, port, process)


def start_floor(processes: Processes, fixture: Fixture, *, name: str, workers: int) -> Server:
    """The floor under gunicorn with the settings ``authsvc.server.Server`` uses."""
    from bench.floor_app import ENV_ISSUER, ENV_KEYS_DIR, ENV_TOKEN_TTL

    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gthread", "--workers", str(workers), "--threads", str(THREADS),
        "--bind", f"127.0.0.1:{port}",
        "--timeout", "30", "--graceful-timeout", "10", "--keep-alive", "5",
        "--limit-request-line", "8190", "--limit-request-fields", "100",
        "--limit-request-field_size", "8190",
        "--error-logfile", "-", "--log-level", "info", "--no-control-socket",
        "--chdir", str(REPO),
        "bench.floor_app:create()",
    ]
    env = dict(os.environ)
    env.update({ENV_KEYS_DIR: str(fixture.keys_dir), ENV_ISSUER: ISSUER, ENV_TOKEN_TTL: "300"})
    process = processes.start(name, argv, log_path=fixture.tmp / f"{name}.log", env=env)
    return Server(name, port, process)


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class Load:
    """One wrk run's request and shape."""

    path: str
    duration: int  # wrk takes whole seconds
    connections: int
    method: str = "GET"
    authorization: str | None = None
    body: str | None = None


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

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors

    @property
    def cpu_us_per_token(self) -> float | None:
        ok = self.requests - self.non200
        return self.cpu_seconds * 1e6 / ok if ok > 0 and self.cpu_seconds > 0 else None

    @property
    def rate(self) -> float:
        """Successful tokens per second."""
        ok = self.requests - self.non200
        return ok / self.seconds if self.seconds > 0 else 0.0


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``.

    Each server runs in a session of its own, so its group is the gunicorn master and
    its workers. Unlike throughput, CPU per token hardly moves when other processes
    compete for the cores, which makes it the steadier of the two on a shared machine.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp...
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


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
    cpu_before = group_cpu_seconds(cpu_of) if cpu_of is not None else 0.0
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, check=False,
            timeout=load.duration + 60,
        )
        cpu = group_cpu_seconds(cpu_of) - cpu_before if cpu_of is not None else 0.0
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {' '.join(argv)}\n"
                         f"{result.stderr.strip()}\n{result.stdout.strip()}")
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            _, key, *rest = line.split(" ", 2)
            values[key] = rest[0] if rest else ""
    try:
        return Measurement(
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
            first_bad=values.get("first_bad", ""),
            connections=load.connections,
            duration=load.duration,
            cpu_seconds=round(cpu, 3),
        )
    except (KeyError, ValueError) as exc:
        raise BenchError(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}") from exc


# --------------------------------------------------------------------------- cases


@dataclass
class CaseResult:
    """One case's runs (one per round) and their ratios to the floor around each."""

    case: str
    store: str
    description: str
    runs: list[Measurement] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    target: float | None = None
    verdict: str = ""

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.runs)

    @property
    def rate(self) -> float:
        return statistics.median(m.rate for m in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(m.p50_ms for m in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(m.p99_ms for m in self.runs)

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def cpu_us_per_token(self) -> float | None:
        values = [v for m in self.runs if (v := m.cpu_us_per_token) is not None]
        return statistics.median(values) if values else None


@dataclass
class StoreResult:
    store: str
    storage: str
    workers: int
    #: Floor runs: before the first round and after each round.
    floors: list[Measurement] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def floor_mean(self) -> float:
        return statistics.fmean(m.rate for m in self.floors) if self.floors else 0.0

    @property
    def floor_cpu_us_per_token(self) -> float | None:
        values = [v for m in self.floors if (v := m.cpu_us_per_token) is not None]
        return statistics.fmean(values) if values else None

    def cpu_ratio(self, cpu_us_per_token: float | None) -> float | None:
        """Tokens per CPU-second relative to the floor's (1.0: as cheap as the floor)."""
        floor = self.floor_cpu_us_per_token
        if floor is None or not cpu_us_per_token:
            return None
        return floor / cpu_us_per_token

    @property
    def floor_drift(self) -> float:
        """How far apart the floor runs are (max - min), relative to their mean."""
        rates = [m.rate for m in self.floors]
        mean = self.floor_mean
        return (max(rates) - min(rates)) / mean if mean and rates else 0.0


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
        warm = Load(load.path, options.warmup, load.connections, load.method,
                    load.authorization, load.body)
        run_wrk(server.port, warm, wrk=options.wrk, wrk_threads=options.wrk_threads)
        time.sleep(SETTLE_SECONDS / 2)
    result = run_wrk(server.port, load, wrk=options.wrk, wrk_threads=options.wrk_threads,
                     cpu_of=server.process.popen.pid)
    errors = f", {result.errors} ERRORS (first: {result.first_bad})" if result.errors else ""
    cpu = result.cpu_us_per_token
    print(f"  {label:<34} {result.rate:9.1f} tokens/s  p50 {result.p50_ms:7.1f} ms  "
          f"p99 {result.p99_ms:7.1f} ms  cpu {'-' if cpu is None else f'{cpu:.0f}'} us/token "
          f"({result.requests} requests, {load.connections} connections, "
          f"{load.duration} s{errors})", flush=True)
    time.sleep(SETTLE_SECONDS)
    return result


def fetch_refresh_token(server: Server, fixture: Fixture) -> str:
    status, body = http_request(
        server.port, OFFLINE_PATH, headers={"Authorization": fixture.basic_auth}
    )
    if status != 200:
        raise BenchError(f"GET {OFFLINE_PATH} answered {status}: {body[:300]!r}")
    token = json.loads(body).get("refresh_token")
    if not isinstance(token, str) or not token:
        raise BenchError(f"no refresh_token in the offline_token answer: {body[:300]!r}")
    return token


def check_floor_token(floor: Server, authsvc: Server) -> None:
    """Both answer the anonymous request with 200 and the same JSON keys and JWT header."""
    import jwt

    shapes = []
    for server in (floor, authsvc):
        status, body = http_request(server.port, ANON_PATH)
        if status != 200:
            raise BenchError(f"{server.name} answered {status} to {ANON_PATH}: {body[:300]!r}")
        document = json.loads(body)
        header = jwt.get_unverified_header(document["token"])
        claims = jwt.decode(document["token"], options={"verify_signature": False})
        shapes.append((sorted(document), sorted(header), sorted(claims), header.get("kid")))
    if shapes[0] != shapes[1]:
        raise BenchError(f"the floor's answer differs in shape from authsvc's: {shapes}")


def run_store(
    store: str, storage: str, fixture: Fixture, processes: Processes, options: Options
) -> StoreResult:
    workers = WORKERS[store]
    print(f"\n== store {store} ({storage}), gunicorn gthread --workers {workers} "
          f"--threads {THREADS}", flush=True)
    cached_config = fixture.config(store, storage, cache_ttl=60)
    nocache_config = fixture.config(store, storage, cache_ttl=0)
    floor = start_floor(processes, fixture, name=f"floor-{store}", workers=workers)
    cached = start_authsvc(processes, cached_config, name=f"authsvc-{store}-cache",
                           workers=workers, log_dir=fixture.tmp)
    nocache = start_authsvc(processes, nocache_config, name=f"authsvc-{store}-nocache",
                            workers=workers, log_dir=fixture.tmp)
    refresh_token: str | None = None
    try:
        for server in (floor, cached, nocache):
            wait_ready(server.process, server.port)
        check_floor_token(floor, cached)
        refresh_token = fetch_refresh_token(cached, fixture)
        basic = fixture.basic_auth
        full = (options.duration, options.connections)
        floor_load = Load(ANON_PATH, *full)
        cases: list[tuple[str, str, Server, Load]] = [
            ("a-anonymous", "anonymous pull, GET", cached, Load(ANON_PATH, *full)),
            ("b-basic-cached", "Basic auth, credential cache warm, GET", cached,
             Load(USER_PATH, *full, authorization=basic)),
            ("d-refresh-post", "refresh-token grant, POST", cached,
             Load("/token", *full, method="POST", body=urllib.parse.urlencode({
                 "grant_type": "refresh_token", "refresh_token": refresh_token,
                 "client_id": "bench", "service": SERVICE,
                 "scope": "repository:bench/app:pull"}))),
            ("c-basic-nocache", "Basic auth, credential cache OFF (bcrypt 12 each)", nocache,
             Load(USER_PATH, options.nocache_duration, options.nocache_connections,
                  authorization=basic)),
        ]
        outcome = StoreResult(store, storage, workers)
        results = {case: CaseResult(case, store, description)
                   for case, description, _, _ in cases}
        # floor, a, b, d, floor, a, b, d, ..., c, floor: every round sits between two
        # floor runs; the cache-disabled case runs once, in the last round.
        outcome.floors.append(measure(floor, floor_load, options, label="floor (before)"))
        for index in range(options.rounds):
            last = index == options.rounds - 1
            tag = f" [round {index + 1}/{options.rounds}]" if options.rounds > 1 else ""
            for case, _, server, load in cases:
                if case.startswith("c-") and not last:
                    continue
                results[case].runs.append(measure(server, load, options, label=case + tag))
            label = "floor (after)" if last else f"floor{tag}"
            outcome.floors.append(measure(floor, floor_load, options, label=label))
            around = (outcome.floors[-2].rate + outcome.floors[-1].rate) / 2
            for result in results.values():
                if len(result.runs) > len(result.ratios) and around > 0:
                    result.ratios.append(result.runs[-1].rate / around)
        outcome.cases = list(results.values())
    finally:
        for server in (nocache, cached, floor):
            processes.stop(server.process)
        if refresh_token is not None and not storage.startswith("memory://"):
            try:
                revoke_refresh_token(storage, refresh_token)
            except Exception as exc:
                print(f"  could not revoke the benchmark's refresh token: {exc}",
                      file=sys.stderr)
    target = TARGETS[store]
    for result in outcome.cases:
        if result.errors:
            result.verdict = "ERRORS"
        elif result.case.startswith("c-"):
            result.verdict = "n/a (cache off)"
        else:
            result.target = target
            result.verdict = "PASS" if (result.ratio or 0) >= target else "BELOW"
    return outcome


# --------------------------------------------------------------------------- report


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def _micros(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _floor_labels(count: int) -> list[str]:
    if count == 2:
        return ["floor (before)", "floor (after)"]
    return [f"floor #{i + 1}" for i in range(count)]


def format_table(outcomes: Sequence[StoreResult]) -> str:
    header = ("case", "store", "tokens/s", "p50 ms", "p99 ms", "errors", "ratio", "target",
              "verdict", "cpu us/tok", "cpu ratio")
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        for label, m in zip(_floor_labels(len(outcome.floors)), outcome.floors, strict=True):
            cpu = m.cpu_us_per_token
            rows.append((label, outcome.store, f"{m.rate:.1f}", f"{m.p50_ms:.1f}",
                         f"{m.p99_ms:.1f}", str(m.errors),
                         _ratio(m.rate / outcome.floor_mean if outcome.floor_mean else None),
                         "", "ERRORS" if m.errors else "floor", _micros(cpu),
                         _ratio(outcome.cpu_ratio(cpu))))
        for r in outcome.cases:
            rate = f"{r.rate:.1f}" if not r.errors else f"({r.rate:.1f})"
            cpu = r.cpu_us_per_token
            rows.append((r.case, r.store, rate, f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                         str(r.errors), _ratio(r.ratio),
                         "" if r.target is None else f">= {r.target:.2f}", r.verdict,
                         _micros(cpu), _ratio(outcome.cpu_ratio(cpu))))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in (0, 1, 8) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths))]
    for i, row in enumerate(rows):
        if i and row[1] != rows[i - 1][1]:
            out.append("")
        out.append(line(row))
    return "\n".join(out)


def notes(outcomes: Sequence[StoreResult], options: Options) -> list[str]:
    if options.rounds == 1:
        ratio = "ratio = tokens/s / mean of the floor runs before and after the cases"
    else:
        ratio = (f"{options.rounds} rounds; tokens/s, p50 and p99 are medians over the "
                 "rounds; ratio = median over the rounds of tokens/s / mean of the floor "
                 "runs just before and just after that round")
    out = [
        f"{ratio}; PASS/BELOW compare it with the target.",
        "cpu us/tok: CPU time of the server's processes (gunicorn master + workers; not "
        "wrk, not redis-server) per token during the measured run; cpu ratio = the "
        "floor's cpu us/tok / the case's: a second view of the same efficiency. On a "
        "shared VM it moves with the noise too (compare the floor rows).",
        f"{options.duration} s x {options.connections} connections per run "
        f"(+{options.warmup} s warm-up), wrk -t {options.wrk_threads}.",
        f"c-basic-nocache ran once, {options.nocache_duration} s x "
        f"{options.nocache_connections} connections: each request is one bcrypt (cost 12) "
        "check, so it is CPU-bound at a few requests/s; few samples, rough percentiles.",
    ]
    for outcome in outcomes:
        by_case = {r.case: r for r in outcome.cases}
        cached, uncached = by_case.get("b-basic-cached"), by_case.get("c-basic-nocache")
        if cached and uncached and uncached.rate > 0:
            out.append(f"{outcome.store}: the credential cache makes Basic-auth requests "
                       f"{cached.rate / uncached.rate:.0f}x faster "
                       f"({cached.rate:.0f} vs {uncached.rate:.1f} tokens/s).")
        if outcome.floor_drift > 0.15:
            out.append(f"{outcome.store}: WARNING the floor runs differ by "
                       f"{outcome.floor_drift:.0%} of their mean: the machine was noisy, "
                       "the ratios are uncertain ("
                       + ("rerun, or use --rounds 3)." if options.rounds == 1
                          else "rerun when it is quieter, or with more rounds).")
                       )
        for r in outcome.cases:
            for index, m in enumerate(r.runs):
                if r.case.startswith("c-") or m.max_ms < STALL_MS or m.max_ms < 10 * m.p50_ms:
                    continue
                where = f" (round {index + 1})" if options.rounds > 1 else ""
                cause = (" -- likely a credential-cache expiry: an entry lapses 60 s "
                         "after it was made, however often it is used, and every request "
                         "in flight then runs bcrypt at once (see README)"
                         if r.case.startswith("b-") else "")
                out.append(f"{outcome.store}: {r.case}{where} stalled: max "
                           f"{m.max_ms:.0f} ms, p99 {m.p99_ms:.0f} ms, p50 {m.p50_ms:.0f} ms"
                           f"{cause}.")
        errored = [r.case for r in outcome.cases if r.errors]
        if errored:
            out.append(f"{outcome.store}: runs with errors (not valid as throughput): "
                       + ", ".join(errored))
    return out


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def write_json(path: Path, outcomes: Sequence[StoreResult], options: Options,
               load_before: tuple[float, float, float]) -> None:
    def measurement(m: Measurement) -> dict[str, Any]:
        data = asdict(m)
        data.update(tokens_per_s=round(m.rate, 2), errors=m.errors,
                    cpu_us_per_token=_rounded(m.cpu_us_per_token))
        return data

    document = {
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "options": asdict(options),
        "stores": [
            {
                "store": o.store,
                "storage": o.storage,
                "workers": o.workers,
                "threads": THREADS,
                "target": TARGETS[o.store],
                "floor": {
                    "runs": [measurement(m) for m in o.floors],
                    "mean_tokens_per_s": round(o.floor_mean, 2),
                    "mean_cpu_us_per_token": _rounded(o.floor_cpu_us_per_token),
                    "drift": round(o.floor_drift, 3),
                },
                "cases": [
                    {
                        "case": r.case,
                        "description": r.description,
                        "tokens_per_s": round(r.rate, 2),
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "errors": r.errors,
                        "ratio": None if r.ratio is None else round(r.ratio, 4),
                        "target": r.target,
                        "verdict": r.verdict,
                        "cpu_us_per_token": _rounded(r.cpu_us_per_token),
                        "cpu_ratio": _rounded(o.cpu_ratio(r.cpu_us_per_token), 4),
                        "ratios": [round(x, 4) for x in r.ratios],
                        "runs": [measurement(m) for m in r.runs],
                    }
                    for r in o.cases
                ],
            }
            for o in outcomes
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark authsvc's token endpoint against a minimal signing floor.")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds per measured case (default 10)")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent wrk connections (default 16)")
    parser.add_argument("--store", choices=("memory", "redis", "both"), default="both")
    parser.add_argument("--nocache-duration", type=int, default=None,
                        help="seconds for the cache-disabled case (default: half of "
                             "--duration, at least 5)")
    parser.add_argument("--nocache-connections", type=int, default=4,
                        help="connections for the cache-disabled case (default 4)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat cases a, b, d this many times, each round between two "
                             "floor runs, and report medians (default 1)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="unmeasured seconds of the same load before each case (default 2)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the 2 cores to the servers)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help=f"Redis to use if it answers (default {DEFAULT_REDIS_URL}); "
                             "otherwise a private redis-server is started")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results file (default bench/results.json)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temp dir (configs, keys, server logs)")
    args = parser.parse_args(argv)
    if args.duration < 1 or (args.nocache_duration or 1) < 1 or args.warmup < 0:
        parser.error("durations are whole seconds, at least 1 (--warmup may be 0)")
    if args.connections < 1 or args.nocache_connections < 1:
        parser.error("connections must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    if not Path(wrk).exists():
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    options = Options(
        duration=args.duration,
        connections=args.connections,
        nocache_duration=args.nocache_duration or max(5, args.duration // 2),
        nocache_connections=args.nocache_connections,
        warmup=args.warmup,
        wrk=wrk,
        wrk_threads=args.wrk_threads,
        rounds=args.rounds,
    )
    stores = ["memory", "redis"] if args.store == "both" else [args.store]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # `bench.floor_app` when run as bench/run.py
    load_before = os.getloadavg()
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    outcomes: list[StoreResult] = []
    try:
        with sigterm_as_interrupt():
            print(f"temp dir {tmp}; {os.cpu_count()} CPUs, load average "
                  f"{' '.join(f'{x:.2f}' for x in load_before)}")
            fixture = make_fixture(tmp)
            for store in stores:
                storage = "memory://"
                if store == "redis":
                    storage = ensure_redis(processes, tmp, args.redis_url)
                outcomes.append(run_store(store, storage, fixture, processes, options))
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping every process it started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(format_table(outcomes))
    print()
    for note in notes(outcomes, options):
        print(f"* {note}")
    write_json(args.output, outcomes, options, load_before)
    print(f"\nresults written to {args.output}")
    failed = any(r.verdict in ("BELOW", "ERRORS") for o in outcomes for r in o.cases)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
