"""Results: each case's runs against the floor, the table, the notes and the JSON file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.export import ExportRun
from bench.fixture import THREADS
from bench.load import Measurement, Options

#: Minimum tokens/s ratio to the floor, per store.
TARGETS: Mapping[str, float] = {"memory": 0.7, "redis": 0.6}
#: Cases measured and compared with the floor but with no target (verdict "info").
INFORMATIONAL = frozenset({"g-oidc-fresh"})
#: The OIDC cases, and what each adds to an anonymous request.
OIDC_CASES: Mapping[str, str] = {
    "e-oidc-rs256": "one RS256 signature check + the verified-credential cache",
    "f-oidc-es256": "one ES256 signature check + the verified-credential cache",
    "g-oidc-fresh": "one ES256 signature check + the jti claim, a store round trip",
}
#: The no-audit baseline (anonymous pull, auditing patched out: bench/noaudit.py), and
#: the audit cases compared with it (the same request and configuration but the sink).
NO_AUDIT = "n-no-audit"
AUDIT_CASES: Mapping[str, str] = {
    "h-audit-file": "file sink, one write per event (fsync off, the default)",
    "i-audit-redis": "redis sink",
}
#: An audited anonymous pull should reach this fraction of the no-audit baseline.
AUDIT_TARGET = 0.9
#: The baseline without the in-request detectors (Basic auth, credential cache warm,
#: ``anomaly.backoff.enabled: false``), and the cases compared with it: the same request
#: on the same configuration with the detectors on (the service's default).
NO_BACKOFF = "j-basic-nobackoff"
DETECTOR_CASES: Mapping[str, str] = {
    "b-basic-cached": "brute-force backoff on: one store read (backoff_state) per login",
}
#: With the in-request detectors a password login should reach this fraction of the
#: same login without them (issue #7: at most 10% of token throughput).
DETECTOR_TARGET = 0.9
#: A run whose slowest request took this long (and 10x its median) is called a stall.
STALL_MS = 250.0


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
    #: JWKS documents the OIDC issuers served while this store's servers ran.
    jwks_fetches: int = 0
    #: Tokens minted for case g (each sent once), and the reused tokens' lifetime (s).
    fresh_tokens: int = 0
    oidc_lifetime: int = 0

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
    return _columns(header, rows, {0, 1, 8})


def _signed(value: float) -> str:
    return f"{value:+.0f}"


def _extras(cpu_us: float | None, server_us: float | None, baseline: bool) -> tuple[str, str]:
    """The +cpu us and +server us columns of a row against its table's baseline."""
    def column(value: float | None) -> str:
        return "" if baseline or value is None else _signed(value)

    return column(cpu_us), column(server_us)


def _round_ratios(case: CaseResult, base: CaseResult) -> list[float]:
    """The case's tokens/s over the base's, round by round (runs of the same round)."""
    return [c.rate / b.rate for c, b in zip(case.runs, base.runs, strict=False) if b.rate > 0]


@dataclass
class AuditRow:
    """An audit case against the no-audit baseline, a-anonymous and the floor."""

    case: str
    store: str
    what: str
    rate: float
    errors: int
    #: Medians over the rounds of tokens/s / the same round's no-audit, a-anonymous.
    vs_no_audit: float | None
    vs_anonymous: float | None
    vs_floor: float | None
    cpu_us_per_token: float | None
    #: Per token over the no-audit baseline: CPU (us) and server time (1e6 / tokens/s).
    extra_cpu_us: float | None
    extra_server_us: float | None
    target: float | None
    verdict: str


def _against(
    r: CaseResult, base: CaseResult, goal: float, *, baseline: bool
) -> tuple[float | None, float | None, float | None, float | None, str]:
    """A case against the baseline case of its table: the median of the per-round
    ratios, the extra CPU and server time per token, and the target and verdict."""
    vs_base = _round_ratios(r, base)
    ratio = statistics.median(vs_base) if vs_base else None
    extra_cpu = extra_server = None
    if r.cpu_us_per_token is not None and base.cpu_us_per_token is not None:
        extra_cpu = r.cpu_us_per_token - base.cpu_us_per_token
    if r.rate > 0 and base.rate > 0:
        extra_server = 1e6 / r.rate - 1e6 / base.rate
    if baseline:
        return ratio, extra_cpu, extra_server, None, "baseline"
    if r.errors or base.errors:
        return ratio, extra_cpu, extra_server, goal, "ERRORS"
    return ratio, extra_cpu, extra_server, goal, "PASS" if (ratio or 0) >= goal else "BELOW"


def audit_summary(outcome: StoreResult) -> list[AuditRow]:
    """n-no-audit, a-anonymous (default sink: file), h and i, each against n."""
    by_case = {r.case: r for r in outcome.cases}
    base = by_case.get(NO_AUDIT)
    anonymous = by_case.get("a-anonymous")
    if base is None or not base.runs:
        return []
    rows = []
    what = {NO_AUDIT: "auditing patched out (baseline)",
            "a-anonymous": "service default: file sink, OIDC configured",
            **AUDIT_CASES}
    for case in (NO_AUDIT, "a-anonymous", *AUDIT_CASES):
        r = by_case.get(case)
        if r is None or not r.runs:
            continue
        vs_anon = _round_ratios(r, anonymous) if anonymous is not None else []
        ratio, extra_cpu, extra_server, target, verdict = _against(
            r, base, AUDIT_TARGET, baseline=case == NO_AUDIT
        )
        rows.append(AuditRow(
            case=case, store=outcome.store, what=what[case], rate=r.rate, errors=r.errors,
            vs_no_audit=ratio, vs_anonymous=statistics.median(vs_anon) if vs_anon else None,
            vs_floor=r.ratio, cpu_us_per_token=r.cpu_us_per_token,
            extra_cpu_us=extra_cpu, extra_server_us=extra_server, target=target,
            verdict=verdict))
    return rows


@dataclass
class DetectorRow:
    """A password-login case with the in-request detectors against the same login
    without them (j-basic-nobackoff)."""

    case: str
    store: str
    what: str
    rate: float
    errors: int
    #: Median over the rounds of tokens/s / the same round's j-basic-nobackoff run.
    vs_no_backoff: float | None
    vs_floor: float | None
    cpu_us_per_token: float | None
    #: Per token over the baseline: CPU (us) and server time (1e6 / tokens/s).
    extra_cpu_us: float | None
    extra_server_us: float | None
    target: float | None
    verdict: str


def detector_summary(outcome: StoreResult) -> list[DetectorRow]:
    """j-basic-nobackoff (the baseline) and b-basic-cached, each against j."""
    by_case = {r.case: r for r in outcome.cases}
    base = by_case.get(NO_BACKOFF)
    if base is None or not base.runs:
        return []
    what = {NO_BACKOFF: "anomaly.backoff.enabled: false (baseline)", **DETECTOR_CASES}
    rows = []
    for case in (NO_BACKOFF, *DETECTOR_CASES):
        r = by_case.get(case)
        if r is None or not r.runs:
            continue
        ratio, extra_cpu, extra_server, target, verdict = _against(
            r, base, DETECTOR_TARGET, baseline=case == NO_BACKOFF
        )
        rows.append(DetectorRow(
            case=case, store=outcome.store, what=what[case], rate=r.rate, errors=r.errors,
            vs_no_backoff=ratio, vs_floor=r.ratio, cpu_us_per_token=r.cpu_us_per_token,
            extra_cpu_us=extra_cpu, extra_server_us=extra_server, target=target,
            verdict=verdict))
    return rows


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]], left: set[int]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths))]
    for i, row in enumerate(rows):
        if i and row[1] != rows[i - 1][1]:
            out.append("")
        out.append(line(row))
    return "\n".join(out)


def format_audit_table(outcomes: Sequence[StoreResult]) -> str:
    """What the audit trail costs an anonymous pull, against the no-audit baseline."""
    header = ("audit case", "store", "tokens/s", "vs no-audit", "target", "verdict",
              "vs a-anon", "vs floor", "cpu us/tok", "+cpu us", "+server us", "sink")
    rows = []
    for outcome in outcomes:
        for row in audit_summary(outcome):
            rows.append((
                row.case, row.store,
                f"{row.rate:.1f}" if not row.errors else f"({row.rate:.1f})",
                _ratio(row.vs_no_audit),
                "" if row.target is None else f">= {row.target:.2f}", row.verdict,
                _ratio(row.vs_anonymous), _ratio(row.vs_floor), _micros(row.cpu_us_per_token),
                *_extras(row.extra_cpu_us, row.extra_server_us, row.case == NO_AUDIT),
                row.what))
    if not rows:
        return "(no audit cases)"
    return _columns(header, rows, {0, 1, 5, 11})


def format_detector_table(outcomes: Sequence[StoreResult]) -> str:
    """What the in-request detectors cost a password login, against the same login
    without them."""
    header = ("in-request detectors", "store", "tokens/s", "vs j", "target", "verdict",
              "vs floor", "cpu us/tok", "+cpu us", "+server us", "what")
    rows = []
    for outcome in outcomes:
        for row in detector_summary(outcome):
            rows.append((
                row.case, row.store,
                f"{row.rate:.1f}" if not row.errors else f"({row.rate:.1f})",
                _ratio(row.vs_no_backoff),
                "" if row.target is None else f">= {row.target:.2f}", row.verdict,
                _ratio(row.vs_floor), _micros(row.cpu_us_per_token),
                *_extras(row.extra_cpu_us, row.extra_server_us, row.case == NO_BACKOFF),
                row.what))
    if not rows:
        return "(no in-request detector cases)"
    return _columns(header, rows, {0, 1, 5, 10})


def format_export_table(exports: Sequence[ExportRun]) -> str:
    header = ("export", "events", "seconds", "events/s", "events/s net", "cpu us/event")
    rows = [(f"audit export --format {e.format}", str(e.events), f"{e.seconds:.2f}",
             f"{e.rate:.0f}", f"{e.net_rate:.0f}", _micros(e.cpu_us_per_event))
            for e in exports]
    return _columns(header, rows, {0})


def oidc_costs(outcome: StoreResult) -> str | None:
    """What a token as the password costs per token over a-anonymous: CPU (the cpu
    us/tok column) and server time (1e6 / tokens/s), for each OIDC case."""
    by_case = {r.case: r for r in outcome.cases}
    anonymous = by_case.get("a-anonymous")
    if anonymous is None or anonymous.cpu_us_per_token is None or anonymous.rate <= 0:
        return None
    parts = []
    for case, what in OIDC_CASES.items():
        r = by_case.get(case)
        if r is None or r.cpu_us_per_token is None or r.rate <= 0 or r.errors:
            continue
        cpu = r.cpu_us_per_token - anonymous.cpu_us_per_token
        wall = 1e6 / r.rate - 1e6 / anonymous.rate
        parts.append(f"{case} {_signed(cpu)} us CPU, {_signed(wall)} us of server time "
                     f"({what})")
    if not parts:
        return None
    text = (f"{outcome.store}: cost of an OIDC token as the password, per token over "
            f"a-anonymous ({anonymous.cpu_us_per_token:.0f} us CPU, "
            f"{1e6 / anonymous.rate:.0f} us of server time): " + "; ".join(parts))
    fresh, reused = by_case.get("g-oidc-fresh"), by_case.get("f-oidc-es256")
    if (fresh and reused and fresh.cpu_us_per_token and reused.cpu_us_per_token
            and fresh.rate > 0 and reused.rate > 0 and not fresh.errors and not reused.errors):
        text += (f". The jti claim itself (g - f, same algorithm): "
                 f"{_signed(fresh.cpu_us_per_token - reused.cpu_us_per_token)} us CPU, "
                 f"{_signed(1e6 / fresh.rate - 1e6 / reused.rate)} us of server time")
    return text + "."


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
        "e/f: one OIDC token (GitHub-Actions-shaped, from a local issuer) re-sent as the "
        "Basic password on every request, as docker/skopeo do: each request verifies its "
        "signature, then finds it in the verified-credential cache (no store trip). g: a "
        "never-used token every request (a new jti), from a pool minted before each run: "
        "signature check + the jti claim in the store; it has no target (info): a CI job "
        "pays it once per token. Cost = the case's figure minus a-anonymous's; CPU is "
        "the server's only (a Redis round trip's wait and redis-server's work are not "
        "CPU of the server: they show in the server time, 1e6 / tokens/s, which also "
        "moves with the noise).",
        f"audit: {NO_AUDIT} is authsvc with build_audit patched to a log that keeps "
        "nothing (bench/noaudit.py; the service has no such setting, and audit.file.path "
        "/dev/null is no way round it: the chain would still run, the lock file would be "
        "/dev/null.lock, and with fsync on, fdatasync on /dev/null fails with EINVAL). "
        "n, h and i share one configuration (no OIDC issuers) but for the audit section "
        "and run back to back in each round; a-anonymous is the service's default (file "
        "sink) with the OIDC issuers configured. vs no-audit / vs a-anon: median over the "
        "rounds of tokens/s / the same round's n (resp. a) run; vs floor = the ratio "
        f"column. Target: >= {AUDIT_TARGET:.2f} of no-audit (PASS/BELOW; a BELOW makes the "
        "exit status 1). +cpu us / +server us: per token over n (CPU of the server; "
        "1e6 / tokens/s). Every file-sink server of a run appends to one file (flock), "
        "audit/audit.jsonl in the temp dir. With Redis, i streams to a private "
        "redis-server (not a shared one's audit stream).",
        f"in-request detectors: {NO_BACKOFF} is case b's request (Basic auth, credential "
        "cache warm) on a server whose configuration is b's but for anomaly: {backoff: "
        "{enabled: false}}, run right after b in each round. vs j = median over the "
        "rounds of b's tokens/s / the same round's j. Target (issue #7): >= "
        f"{DETECTOR_TARGET:.2f} of j (PASS/BELOW; a BELOW makes the exit status 1). "
        "+cpu us / +server us: per token over j (memory: a dict read under a lock; "
        "Redis: one HMGET round trip, whose client side, redis-py and the socket calls, "
        "is CPU of the worker, and whose wait and redis-server's work show only in the "
        "server time).",
    ]
    for outcome in outcomes:
        by_case = {r.case: r for r in outcome.cases}
        cached, uncached = by_case.get("b-basic-cached"), by_case.get("c-basic-nocache")
        if cached and uncached and uncached.rate > 0:
            out.append(f"{outcome.store}: the credential cache makes Basic-auth requests "
                       f"{cached.rate / uncached.rate:.0f}x faster "
                       f"({cached.rate:.0f} vs {uncached.rate:.1f} tokens/s).")
        if (cost := oidc_costs(outcome)) is not None:
            out.append(cost)
        if outcome.fresh_tokens or outcome.jwks_fetches:
            expected = 2 * outcome.workers
            out.append(f"{outcome.store}: the issuers served their JWKS "
                       f"{outcome.jwks_fetches} times (expected {expected}: each worker "
                       "fetches each issuer's key set once, at its first token from it, "
                       "in the checks or a warm-up, then caches it"
                       + ("" if outcome.jwks_fetches <= expected
                          else "; more: a refetch, e.g. past jwks_ttl, 900 s")
                       + f"); {outcome.fresh_tokens} tokens minted for g-oidc-fresh, each "
                       f"sent once; e/f's tokens live {outcome.oidc_lifetime} s.")
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
               load_before: tuple[float, float, float],
               exports: Sequence[ExportRun] = ()) -> None:
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
                "oidc": {
                    "jwks_fetches": o.jwks_fetches,
                    "fresh_tokens": o.fresh_tokens,
                    "reused_token_lifetime": o.oidc_lifetime,
                    "cost_over_anonymous": oidc_costs(o),
                },
                "floor": {
                    "runs": [measurement(m) for m in o.floors],
                    "mean_tokens_per_s": round(o.floor_mean, 2),
                    "mean_cpu_us_per_token": _rounded(o.floor_cpu_us_per_token),
                    "drift": round(o.floor_drift, 3),
                },
                "audit": [asdict(row) for row in audit_summary(o)],
                "detectors": [asdict(row) for row in detector_summary(o)],
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
        "audit_export": [
            {**asdict(e), "events_per_s": round(e.rate, 1),
             "net_events_per_s": round(e.net_rate, 1),
             "cpu_us_per_event": _rounded(e.cpu_us_per_event)}
            for e in exports
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
