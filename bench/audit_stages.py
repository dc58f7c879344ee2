"""Where the audit trail's time goes inside a token request, stage by stage.

    python bench/audit_stages.py [--requests 3000] [--warmup 1000]

``bench/instructions.py`` counts the audit's instructions and ``bench/audit.py`` measures
its throughput. This one times the audit's stages in the request as it runs, with
``perf_counter_ns`` around each:

* the token request (the WSGI call) and the decision in it (``TokenService.issue``);
* the audit's part of the decision (``TokenService._record``), and within it:
  * the seal: the event encoded with its seq and prev, its SHA-256 and its line
    (``seal``);
  * the sink's write (``FileAuditLog._append``, or for the stream
    ``StoreAuditLog.record_many``).

(A caller that finds another writing drafts its event instead, for the writer to seal:
that never happens in one thread.)

It serves the anonymous pull of the audit cases on the ``memory://`` store, as WSGI
calls in one thread, for ``sink: file`` and ``sink: redis`` (the in-process stream),
each in a process of its own: apps built one after another in one process ran at
different speeds (by 5-15%) for the same configuration. Reported per stage: the median
over the requests, in microseconds.

Why: a stage timed in a loop of its own is hot in the caches; in a request it runs once
among everything else, and takes longer. On the shared 2-core machine the chain and
the file sink took 19 us an event in a loop of their own, ~50 us in a request. The
timers add about half a microsecond each to what they time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixture import make_fixture
from bench.instructions import serve, wsgi_app
from bench.processes import REPO, BenchError

#: (label, module, class or None for a module attribute, attribute); indented labels
#: are parts of the one above.
STAGES: tuple[tuple[str, str, str | None, str], ...] = (
    ("decision", "authsvc.service", "TokenService", "issue"),
    ("audit record", "authsvc.service", "TokenService", "_record"),
    ("  seal", "authsvc.audit.chain", None, "seal"),
    ("  file write", "authsvc.audit.sinks", "FileAuditLog", "_append"),
    ("  stream append", "authsvc.audit.sinks", "StoreAuditLog", "record_many"),
)
REQUEST = "token request"
SINKS = ("file", "redis")


def timed(func: Callable[..., Any], into: list[int]) -> Callable[..., Any]:
    """``func``, appending each call's nanoseconds to ``into`` (raised or not)."""

    def timing(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return func(*args, **kwargs)
        finally:
            into.append(time.perf_counter_ns() - started)

    return timing


Put = Callable[[Any, str, Any], None]


def install_timers(put: Put = setattr) -> dict[str, list[int]]:
    """Wrap every stage with ``put`` (``setattr``: for good, the process exists for
    it); their timings by label."""
    timings: dict[str, list[int]] = {}
    for label, module_name, class_name, attribute in STAGES:
        owner: Any = importlib.import_module(module_name)
        if class_name is not None:
            owner = getattr(owner, class_name)
        timings[label] = []
        put(owner, attribute, timed(getattr(owner, attribute), timings[label]))
    return timings


def measure(config: Path, requests: int, warmup: int, put: Put = setattr) -> dict[str, float]:
    """In this process: the median microseconds of each stage that ran, over
    ``requests`` token requests after ``warmup``."""
    timings = install_timers(put)
    app = wsgi_app(config, no_audit=False)
    serve(app, warmup)
    for spent in timings.values():
        spent.clear()
    timings[REQUEST] = []
    serve(app, requests, timings[REQUEST])
    return {label: statistics.median(ns) / 1e3 for label, ns in timings.items() if ns}


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per stage, one column per sink (``-``: the stage did not run)."""
    sinks = list(results)
    labels = [REQUEST] + [label for label, *_ in STAGES]
    lines = [f"{'median us':<16}" + "".join(f"{sink:>10}" for sink in sinks)]
    for label in labels:
        cells = [results[sink].get(label) for sink in sinks]
        if all(cell is None for cell in cells):
            continue
        lines.append(f"{label:<16}" + "".join(
            f"{cell:>10.1f}" if cell is not None else f"{'-':>10}" for cell in cells))
    shares = [
        f"{results[sink]['audit record'] / results[sink][REQUEST]:>10.3f}"
        if "audit record" in results[sink] and results[sink].get(REQUEST) else f"{'-':>10}"
        for sink in sinks
    ]
    lines.append(f"{'audit / request':<16}" + "".join(shares))
    return "\n".join(lines)


def _child(config: Path, requests: int, warmup: int) -> dict[str, float]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(config),
            "--requests", str(requests), "--warmup", str(warmup)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    if result.returncode != 0:
        raise BenchError(f"the timed run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    parsed: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 1:
        parser.error("--requests and --warmup must be at least 1")
    if args.child:
        print(json.dumps(measure(Path(args.child), args.requests, args.warmup)))
        return 0
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="authsvc-audit-stages-") as name:
            fixture = make_fixture(Path(name))
            for sink in SINKS:
                config = fixture.config("memory", "memory://", cache_ttl=60,
                                        audit={"sink": sink}, name=f"config-{sink}")
                results[sink] = _child(config, args.requests, args.warmup)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(f"\nthe audit's stages in a token request ({args.requests} after {args.warmup}; "
          "one thread, WSGI calls, memory:// store; redis: the in-process stream)")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
