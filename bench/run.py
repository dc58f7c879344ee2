"""Token endpoint load benchmark: authsvc against a minimal signing floor, with wrk.

    python bench/run.py [--duration 10] [--connections 16] [--store memory|redis|both]
                        [--rounds 1] [--warmup 2] [--keep-tmp] ...

For each store configuration it starts, under gunicorn with the same settings (gthread,
same workers and threads):

* the FLOOR (``bench/floor_app.py``): signs the same JWT with the same key, nothing else;
* authsvc with the credential cache on (``credential_cache: {ttl: 60}``);
* authsvc with the credential cache off (``ttl: 0``), otherwise the same configuration;
* authsvc with the cache on and the brute-force backoff off
  (``anomaly: {backoff: {enabled: false}}``), otherwise the same configuration;

then measures, in this order: the floor, (a) anonymous pull, (b) Basic auth with the
cache warm, (j) the same without the backoff (the baseline of the in-request detectors'
cost: b / j), (d) refresh-token POST, (e) an RS256 OIDC token as the Basic-auth
password, re-sent, (f) the same with ES256, (g) a new ES256 OIDC token every request,
(c) Basic auth with the cache off, the floor again. Each round also measures the audit
trail's cost on anonymous pulls: (n) authsvc with auditing patched out
(``bench/noaudit.py``, the no-audit baseline), (h) the default file sink (one write
per event, fsync off), (i) the Redis stream sink; after the last store, ``authsvc audit
export`` of the run's audit file in every format (``bench/export.py``). The OIDC
issuers (``bench/oidc_issuer.py``) run on 127.0.0.1 in this process for the whole run.
Each case is reported as tokens/s, p50/p99 latency, errors and its ratio to the mean of
the two floor runs (with ``--rounds N``, every case but c is repeated N times, each
round between two floor runs, and medians are reported); b against j and the audit
cases against n also as medians of per-round ratios. Only ratios within one
run mean anything on a shared machine.
Results also go to ``bench/results.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # `bench.*` (and the floor's `bench.floor_app`) as bench/run.py

from bench.export import ExportRun, measure_exports  # noqa: E402
from bench.fixture import (  # noqa: E402
    ANON_PATH,
    OIDC_PATH,
    SERVICE,
    THREADS,
    USER_PATH,
    Fixture,
    check_floor_token,
    check_oidc_login,
    check_user_login,
    ensure_redis,
    fetch_refresh_token,
    make_fixture,
    revoke_refresh_token,
    start_authsvc,
    start_floor,
    start_private_redis,
)
from bench.load import Load, Options, find_wrk, measure  # noqa: E402
from bench.oidc_issuer import MIN_REUSE_LIFETIME, BenchIssuers, TokenPool  # noqa: E402
from bench.processes import (  # noqa: E402
    BENCH_DIR,
    BenchError,
    Processes,
    Server,
    sigterm_as_interrupt,
    wait_ready,
)
from bench.report import (  # noqa: E402
    AUDIT_CASES,
    INFORMATIONAL,
    NO_AUDIT,
    NO_BACKOFF,
    TARGETS,
    CaseResult,
    StoreResult,
    audit_summary,
    detector_summary,
    format_audit_table,
    format_detector_table,
    format_export_table,
    format_table,
    notes,
    write_json,
)

DEFAULT_OUTPUT = BENCH_DIR / "results.json"
WORKERS: Mapping[str, int] = {"memory": 1, "redis": 2}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Most seconds an OIDC token may be old (authsvc's max_token_age and max_lifetime).
MAX_OIDC_AGE = 7 * 86400


def oidc_lifetime(options: Options) -> int:
    """Seconds the reused OIDC tokens (cases e, f) live: twice a generous estimate of
    one store's run (they are minted when it starts), at least an hour."""
    per_run = options.warmup + options.duration + 5  # settling, wrk start, pool minting
    # Per round: a, b, j, d, e, f, g, n, h, i and a floor run; plus the first floor.
    estimate = (options.rounds * 11 + 1) * per_run + options.warmup + options.nocache_duration
    return min(MAX_OIDC_AGE, max(MIN_REUSE_LIFETIME, 2 * estimate))


def run_store(
    store: str,
    storage: str,
    fixture: Fixture,
    processes: Processes,
    options: Options,
    issuers: BenchIssuers,
) -> StoreResult:
    workers = WORKERS[store]
    print(f"\n== store {store} ({storage}), gunicorn gthread --workers {workers} "
          f"--threads {THREADS}", flush=True)
    lifetime = oidc_lifetime(options)
    cached_config = fixture.config(store, storage, cache_ttl=60, oidc=issuers,
                                   oidc_max_age=lifetime)
    nocache_config = fixture.config(store, storage, cache_ttl=0, oidc=issuers,
                                    oidc_max_age=lifetime)
    # Case j: the cached configuration but for the brute-force backoff (the one
    # in-request detector: a store read per password login), the baseline of b.
    nobackoff_config = fixture.config(store, storage, cache_ttl=60, oidc=issuers,
                                      oidc_max_age=lifetime,
                                      anomaly={"backoff": {"enabled": False}},
                                      name=f"config-{store}-nobackoff")
    # The audit cases: the same configuration (no OIDC) but for the audit section.
    # A sink: redis server of a Redis store gets a private redis-server, so that the
    # benchmark's events never land in a shared server's audit stream (nothing is ever
    # flushed there); for the memory store it is the in-process stream.
    audit_storage = storage
    if not storage.startswith("memory://"):
        audit_storage = start_private_redis(
            processes, fixture.tmp, why="case i-audit-redis needs a Redis of its own",
            name=f"redis-audit-{store}")
        print(f"redis: i-audit-redis streams to a private redis-server at {audit_storage}")
    noaudit_config = fixture.config(store, storage, cache_ttl=60,
                                    name=f"config-{store}-noaudit")
    file_config = fixture.config(store, storage, cache_ttl=60, audit={"sink": "file"},
                                 name=f"config-{store}-audit-file")
    redis_config = fixture.config(store, audit_storage, cache_ttl=60,
                                  audit={"sink": "redis"}, name=f"config-{store}-audit-redis")
    jwks_before = issuers.jwks_fetches
    pool = TokenPool(issuers, "ES256", fixture.tmp)
    floor = start_floor(processes, fixture, name=f"floor-{store}", workers=workers)
    cached = start_authsvc(processes, cached_config, name=f"authsvc-{store}-cache",
                           workers=workers, log_dir=fixture.tmp)
    nocache = start_authsvc(processes, nocache_config, name=f"authsvc-{store}-nocache",
                            workers=workers, log_dir=fixture.tmp)
    nobackoff = start_authsvc(processes, nobackoff_config,
                              name=f"authsvc-{store}-nobackoff", workers=workers,
                              log_dir=fixture.tmp)
    noaudit = start_authsvc(processes, noaudit_config, name=f"authsvc-{store}-noaudit",
                            workers=workers, log_dir=fixture.tmp, module="bench.noaudit")
    audit_file = start_authsvc(processes, file_config, name=f"authsvc-{store}-audit-file",
                               workers=workers, log_dir=fixture.tmp)
    audit_redis = start_authsvc(processes, redis_config, name=f"authsvc-{store}-audit-redis",
                                workers=workers, log_dir=fixture.tmp)
    servers = (floor, cached, nocache, nobackoff, noaudit, audit_file, audit_redis)
    refresh_token: str | None = None
    try:
        for server in servers:
            wait_ready(server.process, server.port)
        for server in (cached, nobackoff, noaudit, audit_file, audit_redis):
            check_floor_token(floor, server)
        for server in (cached, nobackoff):
            check_user_login(server, fixture)
        refresh_token = fetch_refresh_token(cached, fixture)
        # The tokens e and f re-send; their first use (here) claims their jti and, in
        # that worker, fetches the issuer's JWKS (the warm-up reaches the other worker).
        rs256 = issuers.basic(issuers.mint("RS256", lifetime=lifetime))
        es256 = issuers.basic(issuers.mint("ES256", lifetime=lifetime))
        check_oidc_login(cached, rs256, what="an RS256 OIDC token")
        check_oidc_login(cached, es256, what="an ES256 OIDC token")
        check_oidc_login(cached, issuers.basic(issuers.mint("ES256", lifetime=300)),
                         what="a new ES256 OIDC token")
        basic = fixture.basic_auth
        full = (options.duration, options.connections)
        floor_load = Load(ANON_PATH, *full)
        cases: list[tuple[str, str, Server, Load]] = [
            ("a-anonymous", "anonymous pull, GET", cached, Load(ANON_PATH, *full)),
            ("b-basic-cached", "Basic auth, credential cache warm, GET", cached,
             Load(USER_PATH, *full, authorization=basic)),
            # Right after b, in every round: b / j is the in-request detectors' cost.
            (NO_BACKOFF, "Basic auth, credential cache warm, GET, brute-force backoff off",
             nobackoff, Load(USER_PATH, *full, authorization=basic)),
            ("d-refresh-post", "refresh-token grant, POST", cached,
             Load("/token", *full, method="POST", body=urllib.parse.urlencode({
                 "grant_type": "refresh_token", "refresh_token": refresh_token,
                 "client_id": "bench", "service": SERVICE,
                 "scope": "repository:bench/app:pull"}))),
            ("e-oidc-rs256", "RS256 OIDC token as Basic password, re-sent (signature + "
             "credential cache)", cached, Load(OIDC_PATH, *full, authorization=rs256)),
            ("f-oidc-es256", "ES256 OIDC token as Basic password, re-sent (signature + "
             "credential cache)", cached, Load(OIDC_PATH, *full, authorization=es256)),
            ("g-oidc-fresh", "a new ES256 OIDC token every request (signature + jti claim "
             "in the store)", cached, Load(OIDC_PATH, *full, pool=pool)),
            (NO_AUDIT, "anonymous pull, GET, auditing patched out (bench/noaudit.py)",
             noaudit, Load(ANON_PATH, *full)),
            ("h-audit-file", "anonymous pull, GET, audit sink file (a write per event, no fsync)",
             audit_file, Load(ANON_PATH, *full)),
            ("i-audit-redis", "anonymous pull, GET, audit sink redis ("
             + ("in-process stream" if storage.startswith("memory://")
                else "Redis stream, private redis-server") + ")",
             audit_redis, Load(ANON_PATH, *full)),
            ("c-basic-nocache", "Basic auth, credential cache OFF (bcrypt 12 each)", nocache,
             Load(USER_PATH, options.nocache_duration, options.nocache_connections,
                  authorization=basic)),
        ]
        outcome = StoreResult(store, storage, workers)
        results = {case: CaseResult(case, store, description)
                   for case, description, _, _ in cases}
        # floor, a, b, j, d, ..., i, floor, a, ..., i, c, floor: every round sits between
        # two floor runs; the cache-disabled case runs once, in the last round.
        outcome.floors.append(measure(floor, floor_load, options, label="floor (before)"))
        pool.observe(outcome.floors[0].rate)  # sizes case g's token files
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
        outcome.jwks_fetches = issuers.jwks_fetches - jwks_before
        outcome.fresh_tokens = pool.minted
        outcome.oidc_lifetime = lifetime
    finally:
        for server in reversed(servers):
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
        elif result.case in (NO_AUDIT, NO_BACKOFF):
            result.verdict = "baseline"
        elif result.case in INFORMATIONAL or result.case in AUDIT_CASES:
            result.verdict = "info"
        else:
            result.target = target
            result.verdict = "PASS" if (result.ratio or 0) >= target else "BELOW"
    return outcome


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
                        help="repeat cases a, b, j, d, e, f, g, n, h, i this many times, each "
                             "round between two floor runs, and report medians (default 1)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="unmeasured seconds of the same load before each case (default 2)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the 2 cores to the servers)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help=f"Redis to use if it answers (default {DEFAULT_REDIS_URL}); "
                             "otherwise a private redis-server is started")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results file (default bench/results.json)")
    parser.add_argument("--no-export", action="store_true",
                        help="skip measuring `authsvc audit export` over the run's audit file")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
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
    load_before = os.getloadavg()
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    outcomes: list[StoreResult] = []
    exports: list[ExportRun] = []
    try:
        # The OIDC issuers are a thread of this process: up until every server is stopped.
        with sigterm_as_interrupt(), BenchIssuers() as issuers:
            print(f"temp dir {tmp}; {os.cpu_count()} CPUs, load average "
                  f"{' '.join(f'{x:.2f}' for x in load_before)}")
            print(f"oidc: issuers {issuers.url('RS256')} and {issuers.url('ES256')}")
            fixture = make_fixture(tmp)
            try:
                for store in stores:
                    storage = "memory://"
                    if store == "redis":
                        storage = ensure_redis(processes, tmp, args.redis_url)
                    outcomes.append(run_store(store, storage, fixture, processes, options,
                                              issuers))
            finally:
                processes.stop_all()
            if not args.no_export:
                # Every file-sink server of the run wrote to this one file (next to the
                # configurations); all of them are stopped now.
                config = tmp / f"config-{stores[0]}-audit-file.yaml"
                print(f"\n== audit export of the run's audit file ({tmp / 'audit'})",
                      flush=True)
                exports = measure_exports(config, tmp)
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
    print(format_audit_table(outcomes))
    print()
    print(format_detector_table(outcomes))
    print()
    if exports:
        print(format_export_table(exports))
        print()
    for note in notes(outcomes, options):
        print(f"* {note}")
    write_json(args.output, outcomes, options, load_before, exports)
    print(f"\nresults written to {args.output}")
    failed = any(r.verdict in ("BELOW", "ERRORS") for o in outcomes for r in o.cases)
    failed = failed or any(row.verdict == "BELOW" for o in outcomes for row in audit_summary(o))
    failed = failed or any(row.verdict == "BELOW"
                           for o in outcomes for row in detector_summary(o))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
