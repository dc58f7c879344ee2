"""Where a token request's time goes: cProfile over a Flask test-client loop.

    python bench/hotspots.py [--case floor|a|b|d|all] [--requests 3000] [--top 25]
                             [--storage memory://|redis://127.0.0.1:6379/0]

Builds the same fixture as ``bench/run.py`` (``bench/fixture.py``: ES256 key ring, user
``bench`` with a bcrypt-12 hash, the two rules, ``credential_cache: {ttl: 60}``,
``memory://`` or the Redis given with ``--storage redis://...``; its refresh token is
revoked at the end) and runs the app in-process, with logging configured as ``authsvc
serve`` configures it (INFO, audit lines included) but written to /dev/null. For each
case it prints the time per request and the top functions by cumulative and by own time.
The test client skips gunicorn and the socket, so the per-request times are smaller than
under wrk; compare the cases with the floor here, not with the wrk numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from flask import Flask
from werkzeug.test import TestResponse

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench.*` when run as bench/hotspots.py

from bench.fixture import (  # noqa: E402
    ANON_PATH,
    ISSUER,
    OFFLINE_PATH,
    SERVICE,
    USER_PATH,
    Fixture,
    make_fixture,
    revoke_refresh_token,
)

Request = Callable[[], TestResponse]


def _authsvc_app(fixture: Fixture, storage: str) -> Flask:
    from authsvc.app import create_app
    from authsvc.config import load_settings

    store = "memory" if storage.startswith("memory://") else "redis"
    return create_app(load_settings(fixture.config(store, storage, cache_ttl=60)))


def _floor_app(fixture: Fixture) -> Flask:
    from bench.floor_app import ENV_ISSUER, ENV_KEYS_DIR, create

    os.environ[ENV_KEYS_DIR] = str(fixture.keys_dir)
    os.environ[ENV_ISSUER] = ISSUER
    return create()


def _requests(fixture: Fixture, storage: str) -> tuple[dict[str, Request], str]:
    """The request of each case, and the refresh token case d uses."""
    floor = _floor_app(fixture).test_client()
    app = _authsvc_app(fixture, storage).test_client()
    basic = {"Authorization": fixture.basic_auth}
    offline = app.get(OFFLINE_PATH, headers=basic)
    if offline.status_code != 200:
        raise SystemExit(f"offline token request failed: {offline.status_code} {offline.data!r}")
    refresh_token: str = offline.json["refresh_token"]  # type: ignore[index]
    form = urllib.parse.urlencode({
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": "bench", "service": SERVICE, "scope": "repository:bench/app:pull"})
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "floor": lambda: floor.get(ANON_PATH),
        "a": lambda: app.get(ANON_PATH),
        "b": lambda: app.get(USER_PATH, headers=basic),
        "d": lambda: app.post("/token", data=form, headers=form_type),
    }, refresh_token


def check(name: str, request: Request) -> None:
    for _ in range(50):  # also warms caches and first-request work
        response = request()
        if response.status_code != 200:
            raise SystemExit(f"{name}: {response.status_code} {response.data[:300]!r}")


def time_cases(requests: dict[str, Request], count: int, rounds: int) -> dict[str, float]:
    """Seconds per request, best of ``rounds`` interleaved rounds (the machine is noisy)."""
    best = dict.fromkeys(requests, float("inf"))
    per_round = max(1, count // rounds)
    for _ in range(rounds):
        for name, request in requests.items():
            start = time.perf_counter()
            for _ in range(per_round):
                request()
            best[name] = min(best[name], (time.perf_counter() - start) / per_round)
    return best


#: The functions whose callees show where a request's own time goes.
_BREAKDOWN = ("floor_app.py:.*\\(token\\)", "token.py:.*\\((get|post)_token\\)",
              "service.py:.*\\(issue\\)", "service.py:.*\\(_record_grant\\)")


def _stats_text(profiler: cProfile.Profile, show: Callable[[pstats.Stats], object]) -> str:
    out = io.StringIO()
    show(pstats.Stats(profiler, stream=out).strip_dirs())
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    while lines and not lines[0].lstrip().startswith(("ncalls", "Function")):
        lines.pop(0)  # the pstats preamble
    return "\n".join(lines)


def _callees(pattern: str) -> Callable[[pstats.Stats], object]:
    return lambda stats: stats.print_callees(pattern)


def profile(name: str, request: Request, count: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        request()
    profiler.disable()
    print(f"\n--- case {name}: top {top} by own time ({count} requests, profiled)")
    print(_stats_text(profiler, lambda s: s.sort_stats("tottime").print_stats(top)))
    patterns = _BREAKDOWN[:1] if name == "floor" else _BREAKDOWN[1:]
    for pattern in patterns:
        print(f"\n--- case {name}: callees of {pattern} (cumulative seconds)")
        print(_stats_text(profiler, _callees(pattern)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--case", choices=("floor", "a", "b", "d", "all"), default="all")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--storage", default="memory://",
                        help="authsvc's store: memory:// (default) or a redis:// URL")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved timing rounds; the best one counts (default 5)")
    args = parser.parse_args(argv)
    # As `authsvc serve` (Server.load): INFO on the root logger, here into /dev/null.
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        logging.basicConfig(level=logging.INFO, stream=devnull, force=True)
        tmp = Path(tempfile.mkdtemp(prefix="authsvc-profile-"))
        refresh_token = ""
        try:
            requests, refresh_token = _requests(make_fixture(tmp), args.storage)
            names = list(requests) if args.case == "all" else ["floor", args.case]
            chosen = {n: requests[n] for n in names}
            for n, request in chosen.items():
                check(n, request)
            timings = time_cases(chosen, args.requests, args.rounds)
            for n, request in chosen.items():
                profile(n, request, args.requests, args.top)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if refresh_token and not args.storage.startswith("memory://"):
                revoke_refresh_token(args.storage, refresh_token)
    print(f"\n--- time per request (test client, no profiler, best of {args.rounds} rounds)")
    for name, seconds in timings.items():
        extra = (seconds - timings["floor"]) * 1e6
        print(f"  {name:<6} {seconds * 1e6:8.0f} us   {timings['floor'] / seconds:5.2f} of floor"
              f"   (+{extra:.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
