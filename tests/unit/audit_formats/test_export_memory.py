"""Exports run in bounded memory: each format encodes synthetic events, generated one
at a time, into /dev/null in a child process, which reports its peak RSS.

The figure is ``VmHWM`` from ``/proc/self/status``: the high-water mark of the child's
own address space, which exec starts afresh. ``ru_maxrss`` (from ``getrusage`` or
``wait4``) would not do here. It also counts the pages that the child shared with
pytest between fork and exec, so every format would show pytest's own size.

This file is also the child: ``python test_export_memory.py FORMAT COUNT`` prints
one JSON line with what it wrote, its CPU time and its peak RSS.

JSON Lines runs a million events. The other formats run 200,000 events, so that the
test takes well under a minute on two cores (OCSF writes two or three events per
decision). Keeping even 200,000 events in memory would take several hundred MB,
far over the limit, so a leak still fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authsvc.audit.formats import FORMATS

ROOT = Path(__file__).resolve().parents[3]
LIMIT_MB = 150
COUNTS = {"jsonl": 1_000_000, "csv": 200_000, "ocsf": 200_000, "ecs": 200_000}
T0 = 1_795_840_970_000


def synthetic_events(count: int) -> Iterator[dict[str, Any]]:
    """``count`` distinct events: in each 20, 12 grants, 3 partial grants, 3 failed
    logins, 1 denial of every scope and 1 configuration reload."""
    for i in range(count):
        slot = i % 20
        event: dict[str, Any] = {
            "schema": "authsvc.audit/1",
            "event_id": f"0193{i:028x}",
            "time": T0 + i,
            "writer": "auth-1:4242",
            "seq": i + 1,
            "chain": {"prev": f"{i:064x}", "hash": f"{i + 1:064x}"},
        }
        if slot == 19:
            event.update(
                type="config.reload", outcome="success", reason="CONFIG_APPLIED",
                config={"source": "/etc/authsvc.yaml", "digest": f"{i:064x}"},
            )
            yield event
            continue
        user = f"user{i % 5000}"
        repository = f"team/app{i % 300}"
        granted = [f"repository:{repository}:pull,push"]
        denied: list[str] = []
        outcome, reason = "success", "GRANTED"
        actor: dict[str, Any] = {
            "credential": "password", "username": user, "kind": "human", "provider": "static",
            "subject": user, "account": user, "fingerprint": f"{i:032x}",
        }
        if 12 <= slot < 15:
            denied = [f"repository:{repository}/prod:delete"]
            outcome, reason = "partial", "SCOPE_DENIED"
        elif 15 <= slot < 18:
            actor = {"credential": "password", "username": user, "fingerprint": f"{i:032x}"}
            granted, denied = [], granted
            outcome, reason = "failure", "INVALID_CREDENTIALS"
            event["message"] = "invalid user name or password"
        elif slot == 18:
            granted, denied = [], granted
            outcome, reason = "failure", "SCOPE_DENIED"
        event.update(
            type="token.issue", outcome=outcome, reason=reason, actor=actor,
            client={"ip": f"10.0.{i % 250}.{i % 200}", "user_agent": "docker/27.3.1 go/go1.22.7",
                    "client_id": "docker"},
            request={"service": "registry.example.com", "scopes": granted + denied,
                     "grant_type": None, "offline": False},
            decision={"granted": granted, "denied": denied, "rules": ["dev-team"],
                      "policy": f"{i % 7:064x}"},
        )
        if "kind" in actor:
            event["token"] = {"jti": f"{i:032x}", "exp": T0 // 1000 + 300, "kid": "ABCD:EFGH"}
        yield event


def export(fmt: str, count: int) -> dict[str, Any]:
    """Run in the child: encode ``count`` events into /dev/null."""
    chunks = size = 0
    started = time.process_time()
    with open(os.devnull, "w", encoding="utf-8", newline="") as sink:
        for chunk in FORMATS[fmt](synthetic_events(count)):
            sink.write(chunk)
            chunks += 1
            size += len(chunk)
    seconds = time.process_time() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if "VmHWM:" in line)
    return {"events": count, "chunks": chunks, "chars": size, "cpu": seconds, "peak_kb": peak_kb}


def test_every_format_exports_in_bounded_memory() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = {
        fmt: subprocess.Popen(
            [sys.executable, __file__, fmt, str(count)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )
        for fmt, count in COUNTS.items()
    }
    report = []
    for fmt, child in children.items():
        output, _ = child.communicate()
        assert child.returncode == 0, f"{fmt}: the child exited with {child.returncode}"
        result = json.loads(output)
        peak_mb = result["peak_kb"] / 1024
        report.append(
            f"{fmt:5} {result['events']:>9,} events -> {result['chunks']:>9,} lines, "
            f"{result['chars'] / result['events']:6.0f} chars/event, peak RSS {peak_mb:5.1f} MB, "
            f"{result['events'] / result['cpu']:>9,.0f} events/s (CPU)"
        )
        expected_lines = COUNTS[fmt] + 1 if fmt == "csv" else COUNTS[fmt]
        if fmt == "ocsf":  # 2 per grant, 3 per partial grant, 1 per failed login or reload
            assert result["chunks"] == COUNTS[fmt] // 20 * (12 * 2 + 3 * 3 + 3 + 2 + 1)
        else:
            assert result["chunks"] == expected_lines
        assert peak_mb < LIMIT_MB, f"{fmt}: peak RSS {peak_mb:.1f} MB"
    print("\n" + "\n".join(report))


if __name__ == "__main__":
    print(json.dumps(export(sys.argv[1], int(sys.argv[2]))))
