"""The audit trail's cost in instructions per token, counted by callgrind.

    python bench/instructions.py [--requests 500] [--warmup 200]

Throughput on a shared machine moves with its neighbours (bench/run.py's floor runs
have differed by 30-90% within one run); the instructions a request executes do not:
valgrind's callgrind counts them the same, run after run, however busy the machine is.

The anonymous pull of bench/run.py's audit cases, on the ``memory://`` store, in three
configurations: no audit (``bench/noaudit.py``'s patch), ``sink: file`` (the default)
and ``sink: redis`` (the in-process stream of the memory store). Each runs twice in a
process of its own under callgrind, with ``warmup + requests`` and with ``warmup``
requests; the difference over ``requests`` is the instructions per token, start-up and
warm-up cancelled. The requests go to the Flask app as WSGI calls in one thread (no
HTTP server, no other threads): what is counted is authsvc's own work per token.

What it cannot show: what threads cost each other (the GIL handed over around a system
call, a wake-up), which bench/run.py's throughput does show. Callgrind runs a program
~50x slower: the default takes a few minutes.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixture import ANON_PATH, make_fixture
from bench.processes import REPO, BenchError

CASES = {
    "n-no-audit": None,
    "h-audit-file": {"sink": "file"},
    "i-audit-redis": {"sink": "redis"},
}
_COLLECTED = re.compile(r"Collected : (\d+)")


def serve_requests(config: Path, count: int, *, no_audit: bool) -> None:
    """In this process: build the app from ``config``, then ``count`` anonymous pulls."""
    serve(wsgi_app(config, no_audit=no_audit), count)


def wsgi_app(config: Path, *, no_audit: bool) -> Any:
    """The Flask app of ``config`` (``no_audit``: bench/noaudit.py's, for good)."""
    if no_audit:
        from bench.noaudit import patch

        patch()
    from authsvc.app import create_app
    from authsvc.config import load_settings

    return create_app(load_settings(config))


def serve(app: Any, count: int, timings: list[int] | None = None) -> None:
    """``count`` anonymous pulls as WSGI calls; each one's nanoseconds into ``timings``.
    Exits when one is not answered 200."""
    path, _, query = ANON_PATH.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:5000",
        "HTTP_USER_AGENT": "bench/instructions",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        statuses.append(status)
        return lambda data: None

    for _ in range(count):
        request = dict(environ, **{"wsgi.input": io.BytesIO()})
        started = time.perf_counter_ns()
        body = app(request, start_response)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
        if timings is not None:
            timings.append(time.perf_counter_ns() - started)
        if statuses.pop() != "200 OK":
            raise SystemExit(f"bench.instructions: {path} did not answer 200")


def _count(config: Path, requests: int, *, no_audit: bool, tmp: Path) -> int:
    """Instructions callgrind counts for a process that serves ``requests``."""
    argv = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp / 'callgrind.out'}",
        sys.executable, str(Path(__file__).resolve()), "--child", str(config), str(requests),
        *(["--no-audit"] if no_audit else []),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    found = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        raise BenchError(f"callgrind run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-audit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        serve_requests(Path(args.child[0]), int(args.child[1]), no_audit=args.no_audit)
        return 0
    if args.requests < 1 or args.warmup < 1:
        parser.error("--requests and --warmup must be at least 1")
    if shutil.which("valgrind") is None:
        raise SystemExit("bench/instructions.py needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="authsvc-instructions-") as name:
        tmp = Path(name)
        fixture = make_fixture(tmp)
        per_token: dict[str, float] = {}
        for case, audit in CASES.items():
            config = fixture.config("memory", "memory://", cache_ttl=60, audit=audit,
                                    name=f"config-{case}")
            no_audit = audit is None
            warm = _count(config, args.warmup, no_audit=no_audit, tmp=tmp)
            full = _count(config, args.warmup + args.requests, no_audit=no_audit, tmp=tmp)
            per_token[case] = (full - warm) / args.requests
            print(f"  {case:<14} {per_token[case] / 1e3:9.1f}k instructions/token", flush=True)
    base = per_token["n-no-audit"]
    print(f"\ninstructions per token, {args.requests} tokens after {args.warmup} "
          "(callgrind; one thread, WSGI calls, memory:// store)")
    print(f"{'case':<14} {'k instr':>9} {'+k instr':>9} {'no-audit / case':>16}")
    for case, count in per_token.items():
        extra = "" if case == "n-no-audit" else f"{(count - base) / 1e3:+9.1f}"
        print(f"{case:<14} {count / 1e3:9.1f} {extra:>9} {base / count:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
