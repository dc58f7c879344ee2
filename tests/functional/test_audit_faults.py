"""The audit trail of a real `authsvc serve` (two gunicorn workers) under faults.

Each test starts a redis-server of its own (``durable_redis``: an append-only file,
``appendfsync always``) and the service against it, sends ``N`` token requests over
HTTP from a few client threads, and breaks something in the middle of them: Redis is
killed and started again on the same port with its data, or a worker is killed. Then
it checks what the audit trail promises: no token leaves without its event, each event
is in the sink once, and every writer's chain verifies (a killed writer's just ends).

Requests wait at gates (a request numbered at or past a gate waits until it opens), so
that some are surely sent while the fault lasts and some after it, whatever the speed
of the machine; the fault itself strikes while requests are in flight.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from authsvc.audit.source import live_events
from authsvc.audit.verify import VerifyReport, public_keys, verify_events
from authsvc.cli import main
from authsvc.config import Settings, load_settings
from authsvc.store import open_store
from authsvc.tokens import KeyRing
from tests.conftest import PASSWORDS, SERVICE, base_config, basic
from tests.functional.test_serve import Served, start, stop
from tests.redis_server import DurableRedis

pytestmark = pytest.mark.redis

#: Token requests per test, and the client threads that send them.
N = 200
CLIENTS = 4
WORKERS = 2
LOAD_SCOPE = "repository:team/app:pull"
#: Requests after the load (to make a worker replay the spool, to see a new worker
#: serve), told apart from the load's by their scope.
PROBE_SCOPE = "repository:team/probe:pull"
ALICE = basic("alice", PASSWORDS["alice"])
#: Generous bounds for a shared two-core machine; the tests take far less.
TIMEOUT = 30.0


# -- the service -------------------------------------------------------------------


@dataclass
class Service:
    served: Served
    settings: Settings
    config: Path

    @property
    def spool(self) -> Path:
        return self.settings.audit.spool

    def events(self) -> list[dict[str, Any]]:
        """Everything in the configured sink, oldest first."""
        store = open_store(self.settings.storage) if self.settings.audit.sink == "redis" else None
        try:
            return list(live_events(self.settings, store))
        finally:
            if store is not None:
                store.close()

    def workers(self) -> list[int]:
        """The pids of the gunicorn master's children."""
        master = self.served.process.pid
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # gone since the listing
            if int(fields[1]) == master:
                found.append(int(stat.parent.name))
        return found


ServiceFactory = Callable[..., Service]


@pytest.fixture
def service(
    tmp_path: Path, keys_dir: Path, durable_redis: DurableRedis
) -> Iterator[ServiceFactory]:
    """``service(**audit)``: `authsvc serve` with two workers, storage in ``durable_redis``,
    started once both workers have recorded their ``config.load``."""
    running: list[Served] = []

    def make(**audit: Any) -> Service:
        data = base_config(keys_dir)
        data["storage"] = durable_redis.url
        data["audit"] = {"checkpoint_every": 16, **audit}
        config = tmp_path / "authsvc.yaml"
        config.write_text(yaml.safe_dump(data))
        args = ["--config", str(config), "--workers", str(WORKERS), "--threads", "4"]
        served = start(args, tmp_path, tmp_path / "serve.log", config)
        running.append(served)
        started = Service(served, load_settings(config), config)
        wait_until(
            lambda: len(writers(started.events())) >= WORKERS,
            f"{WORKERS} workers recording",
        )
        return started

    yield make
    for served in running:
        stop(served)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the load ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (the connection broke)
    body: bytes
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    def jti(self) -> str:
        """The token's ``jti``, read from its payload (the signature is not our concern)."""
        payload = self.json()["token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        jti: str = claims["jti"]
        return jti


def token_request(port: int, scope: str = LOAD_SCOPE) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/token?service={SERVICE}&scope={scope}", headers=ALICE)
        response = conn.getresponse()
        return Answer(response.status, response.read())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, b"", f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


class Load:
    """``n`` token requests from ``CLIENTS`` threads, numbered in the order they are
    sent; one numbered at or past a gate's number waits until that gate is set."""

    def __init__(self, port: int, n: int, gates: Mapping[int, threading.Event]) -> None:
        self._port = port
        self._n = n
        self._gates = dict(gates)
        self._done = threading.Condition()
        self._next = 0
        self.answers: list[Answer] = []
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def wait_answered(self, count: int) -> None:
        with self._done:
            answered = self._done.wait_for(lambda: len(self.answers) >= count, TIMEOUT)
        assert answered, f"only {len(self.answers)} of {count} requests answered"

    def join(self) -> list[Answer]:
        for thread in self._threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a client thread hangs"
        assert len(self.answers) == self._n
        return self.answers

    def _client(self) -> None:
        while True:
            with self._done:
                number, self._next = self._next, self._next + 1
            if number >= self._n:
                return
            for gate, opened in self._gates.items():
                if number >= gate and not opened.wait(TIMEOUT):
                    return  # the test failed elsewhere; join() says so
            answer = token_request(self._port)
            with self._done:
                self.answers.append(answer)
                self._done.notify_all()


# -- reading the trail ---------------------------------------------------------------


def writers(events: list[dict[str, Any]]) -> set[str]:
    return {e["writer"] for e in events}


def load_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``token.issue`` events of the load's requests."""
    return [
        e for e in events if e["type"] == "token.issue" and e["request"]["scopes"] == [LOAD_SCOPE]
    ]


def event_jtis(events: list[dict[str, Any]]) -> list[str]:
    return [e["token"]["jti"] for e in events if e.get("token")]


def verified(events: list[dict[str, Any]], keys_dir: Path) -> VerifyReport:
    report = verify_events(events, keys=public_keys(KeyRing.load(keys_dir)))
    assert report.ok, report.first_problem
    return report


def cli_verify(config: Path) -> str:
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")
    return result.stdout.strip()


def spooled(spool: Path) -> int:
    return spool.read_bytes().count(b"\n") if spool.exists() else 0


def assert_each_event_once(events: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event is in the sink twice"


def assert_each_token_recorded_once(issued: list[dict[str, Any]], granted: list[Answer]) -> None:
    """Every token answered has exactly one token.issue event (by its jti)."""
    recorded = event_jtis(issued)
    for answer in granted:
        assert recorded.count(answer.jti()) == 1, f"token {answer.jti()} has no single event"


# -- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["kill", "shutdown"])
def test_spool_keeps_every_token_through_a_redis_outage_and_replays_each_event_once(
    service: ServiceFactory, durable_redis: DurableRedis, keys_dir: Path, stop: str
) -> None:
    stop_redis = {"kill": durable_redis.kill, "shutdown": durable_redis.shutdown}[stop]
    svc = service(sink="redis", on_failure="spool")
    down, back = threading.Event(), threading.Event()
    load = Load(svc.served.port, N, {N // 2: down, N * 4 // 5: back})
    load.wait_answered(N // 5)
    stop_redis()
    down.set()
    load.wait_answered(N * 3 // 5)
    spooled_while_down = spooled(svc.spool)
    durable_redis.start()
    back.set()
    answers = load.join()

    assert [a.status for a in answers] == [200] * N, [a for a in answers if a.status != 200][:3]
    assert spooled_while_down > 0
    # The spool is replayed before a worker's next event reaches Redis (once the worker
    # has rested for its retry interval after the failure): the probes are such events.
    probes = 0
    deadline = time.monotonic() + TIMEOUT
    while spooled(svc.spool):
        assert time.monotonic() < deadline, f"{spooled(svc.spool)} events stay in the spool"
        assert token_request(svc.served.port, PROBE_SCOPE).status == 200
        probes += 1
        time.sleep(0.2)

    events = svc.events()
    issued = load_events(events)
    assert_each_event_once(events)
    assert len(issued) == N
    assert sorted(event_jtis(issued)) == sorted(a.jti() for a in answers)
    report = verified(events, keys_dir)
    assert report.writers >= WORKERS and report.checkpoints > 0
    summary = cli_verify(svc.config)
    print(
        f"\nspool ({stop}): {N} requests, all 200; {spooled_while_down} events spooled while Redis "
        f"was down; {probes} probes to drain the spool; {len(issued)} token.issue events "
        f"of the load in the stream; {summary}"
    )


def test_deny_answers_a_token_only_with_its_event_while_redis_crashes(
    service: ServiceFactory, durable_redis: DurableRedis, keys_dir: Path
) -> None:
    svc = service(sink="redis", on_failure="deny")
    down, back = threading.Event(), threading.Event()
    load = Load(svc.served.port, N, {N // 2: down, N * 4 // 5: back})
    load.wait_answered(N // 5)
    durable_redis.kill()
    down.set()
    load.wait_answered(N * 3 // 5)
    durable_redis.start()
    back.set()
    answers = load.join()

    granted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    assert len(granted) + len(refused) == N, {a.status for a in answers}
    assert granted and refused
    for answer in refused:
        (error,) = answer.json()["errors"]
        assert error["code"] == "UNAVAILABLE"
        assert "the audit log did not accept the decision" in error["message"]
        assert "token" not in answer.json()

    events = svc.events()
    issued = load_events(events)
    assert_each_event_once(events)
    assert_each_token_recorded_once(issued, granted)
    report = verified(events, keys_dir)
    # A refused event may have reached Redis before it died, so the chain sends it again
    # before its next one: the trail may hold decisions answered 503 (one per worker
    # when Redis dies once), never a token without its decision.
    unanswered = len(issued) - len(granted)
    assert 0 <= unanswered <= len(refused)
    print(
        f"\ndeny: {N} requests, {len(granted)} answered 200 and {len(refused)} 503; "
        f"{len(issued)} token.issue events of the load in the stream ({unanswered} of "
        f"them for a 503); {report.events} events, {report.writers} writers, "
        f"{report.checkpoints} checkpoints"
    )


@pytest.mark.parametrize("sink", ["redis", "file"])
def test_a_killed_worker_loses_no_event_of_a_token_it_gave(
    service: ServiceFactory, keys_dir: Path, sink: str
) -> None:
    svc = service(sink=sink, on_failure="deny")
    killed = threading.Event()
    load = Load(svc.served.port, N, {N // 2: killed})
    load.wait_answered(N // 5)
    victim = min(svc.workers())
    os.kill(victim, signal.SIGKILL)
    killed.set()
    answers = load.join()

    granted = [a for a in answers if a.status == 200]
    broken = [a for a in answers if a.status is None]
    assert len(granted) + len(broken) == N, {a.status for a in answers}
    assert len(granted) >= N // 2
    wait_until(
        lambda: victim not in svc.workers() and len(svc.workers()) == WORKERS,
        "gunicorn to replace the killed worker",
    )
    assert token_request(svc.served.port, PROBE_SCOPE).status == 200

    events = svc.events()
    issued = load_events(events)
    assert_each_event_once(events)
    assert_each_token_recorded_once(issued, granted)
    # Recorded before the answer left: a killed worker may leave events of answers lost.
    assert len(granted) <= len(issued) <= len(granted) + len(broken)
    # A writer is host:pid:nonce (the nonce keeps a reused pid from continuing a chain).
    by_victim = [w for w in writers(events) if w.startswith(f"{os.uname().nodename}:{victim}:")]
    assert len(by_victim) == 1
    killed_writer = by_victim[0]
    verified(events, keys_dir)
    summary = cli_verify(svc.config)
    print(
        f"\nkilled worker ({sink}): {N} requests, {len(granted)} answered 200, {len(broken)} "
        f"broken by the kill; {len(issued)} token.issue events of the load; "
        f"{sum(e['writer'] == killed_writer for e in events)} events by the "
        f"killed worker; {summary}"
    )
