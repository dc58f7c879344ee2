"""Consumer throughput: ``authsvc detect run`` against a real redis-server, with the
replay throughput of the same events (in memory) from the same run.

    python bench/detect_consumer.py [--events 30000] [--processes 1] [--profile]

The events are ``token.issue`` decisions as authsvc records them (chained by a service
writer): about 200 identities (160 people with password logins from their own home
and office networks, 40 CI jobs with OIDC tokens from runner networks), Zipf-popular
repositories, pushes now and then, about 1.5% mistyped passwords and 1% unknown-user
failures from scanners around the internet; four events a second of event time, ending
now (the detectors' Redis expiries follow the server's clock).

It starts a private redis-server (no persistence), and measures, in this order:

* replay: ``build_engine(settings, MemoryState())`` over the events, in this process;
* consumer, for each ``anomaly.consumer_state`` (``memory``, the default: a
  ``HoldingConsumer`` whose state is in this process, checkpointed to Redis after
  every batch; ``redis``: a ``Consumer`` whose state is shared in Redis): the code of
  ``authsvc detect run`` in this process, on a group over a stream of its own that
  already holds the events, alerts recorded through a chained audit log, until the
  stream is drained; also redis-server's CPU and the commands it ran per event (INFO),
  and with ``--profile`` the hottest functions;
* with ``--processes N``, for each state: N ``authsvc detect run`` processes on one
  group over a fresh copy of the stream, timed from the first entry read to the group
  caught up (with ``memory`` one of them holds the state and works).

The target is 5,000 events/s per consumer process (the default state's verdict
decides the exit status). The machine is shared and noisy:
compare the two rates of one run, not figures across runs. Results also go to
``bench/detect_consumer.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import yaml

from authsvc.anomaly.consumer import Consumer, HoldingConsumer
from authsvc.anomaly.held_state import HeldState, Lease
from authsvc.anomaly.redis_state import RedisState
from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.settings import AnomalySettings
from authsvc.anomaly.state import MemoryState
from authsvc.anomaly.stream import GroupStream
from authsvc.audit import MemoryAuditLog
from authsvc.audit.chain import ChainedAuditLog
from authsvc.audit.sinks import StoreAuditLog
from authsvc.store.redis import RedisStore
from authsvc.tokens import generate_key
from bench.fixture import start_private_redis
from bench.processes import BENCH_DIR, REPO, BenchError, Processes

TARGET = 5000.0
#: anomaly.consumer_state, in the order measured.
STATES = ("memory", "redis")
GROUP = "bench-detect"
_AGENTS = (
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-14-generic os/linux "
    "arch/amd64 UpstreamClient(Docker-Client/24.0.7 \\(linux\\))",
    "docker/25.0.3 go/go1.21.6 git-commit/f417435 kernel/6.6.12-linuxkit os/linux "
    "arch/arm64 UpstreamClient(Docker-Client/25.0.3 \\(darwin\\))",
    "libpod/4.9.3",
    "skopeo/1.13.3",
    "containerd/1.7.13",
)
_RUNNER_AGENT = (
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-1016-azure os/linux "
    "arch/amd64 UpstreamClient(Docker-Client/24.0.7 \\(linux\\))"
)


# -- events ------------------------------------------------------------------------------


def generate(count: int, seed: int, end: int) -> list[dict[str, Any]]:
    """``count`` token.issue events ending at ``end`` (seconds), oldest first."""
    rng = random.Random(seed)
    repos = [f"team{t}/app{a}" for t in range(12) for a in range(25)]
    weights = [1 / (rank + 1) for rank in range(len(repos))]  # Zipf
    people = []
    for n in range(160):
        team = n % 12
        homes = [f"{rng.randrange(60, 220)}.{rng.randrange(256)}.{rng.randrange(256)}."
                 f"{rng.randrange(1, 255)}" for _ in range(rng.choice((1, 1, 2)))]
        homes.append(f"192.0.2.{rng.randrange(1, 255)}")  # the office
        people.append((f"user{n:03d}", team, homes, rng.choice(_AGENTS)))
    jobs = [(f"org/app{n}", n % 12) for n in range(40)]  # runners: 4.148.0.0/14
    span = max(1, count // 4)  # about 4 events a second: a few tokens an hour each
    start = end - span
    events: list[dict[str, Any]] = []
    for n in range(count):
        at_ms = (start * 1000) + n * span * 1000 // count
        event_id = f"{at_ms:012x}"[-12:]
        event_id = f"{event_id[:8]}-{event_id[8:12]}-7000-8000-{n:012d}"
        roll = rng.random()
        if roll < 0.01:  # a scanner trying a user name
            ip = f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.9"
            events.append(_failure(event_id, at_ms, f"admin{rng.randrange(50)}", ip,
                                   "UNKNOWN_USER", "python-requests/2.31.0"))
        elif roll < 0.75:
            name, team, homes, agent = rng.choice(people)
            ip = rng.choice(homes)
            if rng.random() < 0.02:
                events.append(_failure(event_id, at_ms, name, ip, "INVALID_CREDENTIALS", agent))
                continue
            repo = rng.choices(repos, weights)[0]
            own = repo.startswith(f"team{team}/")
            actions = "pull,push" if own and rng.random() < 0.1 else "pull"
            events.append(_success(event_id, at_ms, {
                "credential": "password", "kind": "human", "provider": "static",
                "subject": name, "account": name, "username": name,
                "fingerprint": f"fp-{name}", "groups": [f"team{team}"],
            }, ip, agent, f"repository:{repo}:{actions}"))  # fmt: skip
        else:
            repository, team = rng.choice(jobs)
            ip = f"4.{148 + rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            events.append(_success(event_id, at_ms, {
                "credential": "oidc", "kind": "ci", "provider": "github-actions",
                "subject": f"repo:{repository}:ref:refs/heads/main", "account": repository,
                "fingerprint": f"fp-{repository}-{n % 7}", "groups": [f"team{team}"],
                "claims": {"repository": repository, "ref": "refs/heads/main",
                           "runner_environment": "github-hosted", "jti": f"j{n}"},
            }, ip, _RUNNER_AGENT, f"repository:team{team}/{repository[4:]}:pull,push"))  # fmt: skip
    return events


def _success(event_id: str, at_ms: int, actor: dict[str, Any], ip: str, agent: str,
             scope: str) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": "authsvc.audit/1", "event_id": event_id, "time": at_ms,
        "type": "token.issue", "outcome": "success", "reason": "GRANTED", "actor": actor,
        "client": {"ip": ip, "user_agent": agent, "client_id": None},
        "request": {"service": "registry.example", "scopes": [scope]},
        "decision": {"granted": [scope], "denied": [], "rules": ["team-rw"]},
    }  # fmt: skip


def _failure(event_id: str, at_ms: int, name: str, ip: str, reason: str,
             agent: str) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": "authsvc.audit/1", "event_id": event_id, "time": at_ms,
        "type": "token.issue", "outcome": "failure", "reason": reason,
        "actor": {"credential": "password", "username": name, "fingerprint": f"fp-{name}-x"},
        "client": {"ip": ip, "user_agent": agent, "client_id": None},
        "request": {"service": "registry.example", "scopes": ["repository:x/y:pull"]},
        "decision": {"granted": [], "denied": ["repository:x/y:pull"], "rules": []},
    }  # fmt: skip


def chained(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sink = MemoryAuditLog()
    chain = ChainedAuditLog(sink, writer="registry:1", signer=None)
    for event in events:
        chain.record(event)
    return sink.events


def load(store: RedisStore, events: list[dict[str, Any]]) -> None:
    for at in range(0, len(events), 1000):
        store.append_audit(events[at : at + 1000], max_len=10_000_000, min_time_ms=None)


# -- measurements -----------------------------------------------------------------------


def measure_replay(events: list[dict[str, Any]]) -> dict[str, Any]:
    engine = build_engine(AnomalySettings(), MemoryState())
    began, cpu = time.perf_counter(), time.process_time()
    alerts = sum(len(engine.process(event)) for event in events)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"events": len(events), "seconds": seconds, "cpu_seconds": cpu,
            "rate": len(events) / seconds, "alerts": alerts}  # fmt: skip


def redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_consumer(url: str, redis_pid: int, events: list[dict[str, Any]],
                     profile: bool, state: str) -> dict[str, Any]:  # fmt: skip
    """The consumer of ``authsvc detect run`` in this process, with the state ``state``
    (``anomaly.consumer_state``), on a stream and under a key prefix of its own."""
    client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
    prefix = f"bench-{state}:"
    store = RedisStore(client, prefix=prefix, address=url)
    load(store, events)
    stream = GroupStream(client, prefix=prefix, group=GROUP, consumer="bench-1")
    stream.create_group(from_start=True)
    audit = ChainedAuditLog(StoreAuditLog(store), writer="bench-detect:1", signer=None)
    consumer: Consumer
    if state == "memory":
        held = HeldState(client, prefix=prefix, group=GROUP)
        lease = Lease(client, prefix=prefix, group=GROUP, consumer="bench-1", seconds=10)
        consumer = HoldingConsumer(stream, build_engine(AnomalySettings(), held), held, lease,
                                   audit, batch=100)  # fmt: skip
    else:
        engine = build_engine(AnomalySettings(), RedisState(client, prefix=prefix))
        consumer = Consumer(stream, engine, audit, batch=100)
    commands = int(client.info("stats")["total_commands_processed"])
    stats = client.info("commandstats")
    server_cpu = redis_cpu(redis_pid)
    profiler = cProfile.Profile() if profile else None
    began, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    entries = consumer.drain()
    if profiler is not None:
        profiler.disable()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    server_cpu = redis_cpu(redis_pid) - server_cpu
    commands = int(client.info("stats")["total_commands_processed"]) - commands
    per_command = {
        name.removeprefix("cmdstat_"): {
            "calls_per_event": (value["calls"] - stats.get(name, {}).get("calls", 0)) / len(events),
            "usec_per_event": (value["usec"] - stats.get(name, {}).get("usec", 0)) / len(events),
        }
        for name, value in client.info("commandstats").items()
    }
    result: dict[str, Any] = {
        "events": len(events), "entries": entries, "seconds": seconds, "cpu_seconds": cpu,
        "redis_cpu_seconds": server_cpu, "redis_commands_per_event": commands / len(events),
        "rate": len(events) / seconds, "alerts": sum(consumer.metrics.alerts().values()),
        "redis_commands": dict(sorted(per_command.items(),
                                      key=lambda item: -item[1]["usec_per_event"])),
    }  # fmt: skip
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        result["profile"] = text.getvalue()
    client.close()
    return result


def measure_processes(url: str, tmp: Path, events: list[dict[str, Any]],
                      count: int, processes: Processes, state: str) -> dict[str, Any]:  # fmt: skip
    """``count`` ``authsvc detect run`` processes on the stream under the store's prefix
    (flushed first: the private server's), with ``anomaly.consumer_state: state``. With
    ``memory`` one process holds the state and works, the others stand by."""
    keys = tmp / "keys"
    generate_key(keys)
    config = tmp / "authsvc.yaml"
    config.write_text(yaml.safe_dump({
        "services": ["registry.example"], "keys": {"dir": str(keys)}, "storage": url,
        "audit": {"sink": "redis", "key_file": str(tmp / "fingerprint.key")},
        "anomaly": {"consumer_group": GROUP, "consumer_state": state},
    }))  # fmt: skip
    client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
    for key in client.scan_iter("authsvc:*"):  # the private server's: the last run's
        client.delete(key)
    store = RedisStore(client, prefix="authsvc:", address=url)
    load(store, events)
    started = [
        processes.start(f"detect-{n}", [sys.executable, "-m", "authsvc", "detect", "run",
                        "--config", str(config), "--from-start", "--consumer", f"p{n}"],
                        log_path=tmp / f"detect-{n}.log", env=None)
        for n in range(count)
    ]  # fmt: skip
    first = done = None
    deadline = time.monotonic() + 600
    while done is None:
        if time.monotonic() > deadline or any(p.popen.poll() is not None for p in started):
            raise BenchError("the detect run processes did not finish:\n"
                             + "\n".join(p.log_tail() for p in started))
        groups = {g["name"]: g for g in client.xinfo_groups("authsvc:audit")}
        info = groups.get(GROUP)
        if info and first is None and int(info.get("entries-read") or 0) > 0:
            first = (time.perf_counter(), int(info["entries-read"]))
        if info and first is not None and info["lag"] == 0 and info["pending"] == 0:
            done = time.perf_counter()
        time.sleep(0.02)
    assert first is not None
    for process in started:
        process.popen.send_signal(signal.SIGTERM)
    for process in started:
        processes.stop(process)
    client.close()
    measured = len(events) - first[1]
    seconds = done - first[0]
    working = count if state == "redis" else 1
    return {"processes": count, "state": state, "events": measured, "seconds": seconds,
            "rate": measured / seconds, "rate_per_process": measured / seconds / working}


# -- the command -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=0,
                        help="also run N `authsvc detect run` processes (0: skip)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the in-process consumer (slows it down)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "detect_consumer.json")
    args = parser.parse_args(argv)

    events = chained(generate(args.events, args.seed, int(time.time())))
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-detect-"))
    processes = Processes()
    consumers: dict[str, dict[str, Any]] = {}
    procs: list[dict[str, Any]] = []
    try:
        url = start_private_redis(processes, tmp, why="the consumer needs its own Redis")
        info = redis.Redis.from_url(url, decode_responses=True).info("server")
        redis_pid = int(info["process_id"])
        replay = measure_replay(events)
        for state in STATES:
            consumers[state] = measure_consumer(url, redis_pid, events, args.profile, state)
        if args.processes:
            for state in STATES:
                procs.append(measure_processes(url, tmp, events, args.processes, processes,
                                               state))  # fmt: skip
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    failures = sum(e["outcome"] == "failure" for e in events)
    print(f"{len(events)} token.issue events ({failures} failures), "
          f"{replay['alerts']} alerts in replay, "
          + ", ".join(f"{c['alerts']} from the consumer ({state} state)"
                      for state, c in consumers.items()))  # fmt: skip
    print(f"{'case':<34} {'events/s':>9} {'vs replay':>9} {'cpu us/event':>13}"
          f" {'redis cpu us/event':>19}")
    rows = [("replay (MemoryState)", replay)] + [
        (f"consumer, {state} state", consumer) for state, consumer in consumers.items()]
    for name, row in rows:
        server = row.get("redis_cpu_seconds")
        server_us = "" if server is None else f"{server * 1e6 / row['events']:.0f}"
        print(f"{name:<34} {row['rate']:>9.0f} {row['rate'] / replay['rate']:>9.2f} "
              f"{row['cpu_seconds'] * 1e6 / row['events']:>13.0f} {server_us:>19}")
    for proc in procs:
        name = f"{proc['processes']} processes, {proc['state']} state"
        print(f"{name:<34} {proc['rate']:>9.0f} {proc['rate'] / replay['rate']:>9.2f} "
              f"{'':>13}  ({proc['rate_per_process']:.0f}/s per working process)")
    for state, consumer in consumers.items():
        top = list(consumer["redis_commands"].items())[:5]
        print(f"  inside redis-server, per event ({state} state): " + ", ".join(
            f"{name} {v['calls_per_event']:.2f}x {v['usec_per_event']:.0f} us"
            for name, v in top))  # fmt: skip
    best = consumers["memory"]["rate"]
    verdict = "PASS" if best >= TARGET else "BELOW"
    print(f"target >= {TARGET:.0f} events/s per consumer process (memory state, the "
          f"default): {verdict}")
    for state, consumer in consumers.items():
        if "profile" in consumer:
            print(f"profile ({state} state):\n{consumer['profile']}")
    args.output.write_text(json.dumps(
        {"replay": replay, "consumers": consumers, "processes": procs, "target": TARGET,
         "load_average": os.getloadavg(), "repo": str(REPO)},
        indent=2, default=str,
    ))  # fmt: skip
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
