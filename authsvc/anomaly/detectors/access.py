"""Detectors of what a principal does with its access: probing for more, pulling
everything, pushing somewhere new, pushing at an hour it never works."""

from __future__ import annotations

from collections.abc import Iterator

from authsvc.anomaly.engine import Finding, Found
from authsvc.anomaly.settings import (
    DAY,
    HOUR,
    REMEMBER,
    FirstTimePush,
    MassPull,
    OffHoursPush,
    ScopeProbing,
)
from authsvc.anomaly.state import Handle, Ops
from authsvc.anomaly.view import EventView

__all__ = [
    "FirstTimePushDetector",
    "MassPullDetector",
    "OffHoursPushDetector",
    "ScopeProbingDetector",
]

#: Denied requests that a CI job or robot has no business making.
SENSITIVE_ACTIONS = frozenset({"delete", "*"})


def _machine(view: EventView) -> bool:
    return view.kind in ("ci", "robot") or view.provider == "aws"


class ScopeProbingDetector:
    """Distinct denied (repository, action) pairs per principal in a window; at once,
    any denied delete, ``*`` or catalog request by a CI or robot identity."""

    name = "scope_probing"

    def __init__(self, settings: ScopeProbing) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.denied or view.principal is None:
            return
        s = self.settings
        pairs = sorted(
            {f"{kind}:{name}:{action}" for kind, name, actions in view.denied for action in actions}
        )
        if _machine(view):
            sensitive = [
                p
                for p in pairs
                if p.startswith("registry:catalog:") or p.rsplit(":", 1)[1] in SENSITIVE_ACTIONS
            ]
            if sensitive:
                found(
                    Finding(
                        entity=view.principal,
                        window=HOUR,
                        key="sensitive",
                        evidence={"denied": sensitive, "kind": view.kind, "ip": view.ip},
                    )
                )
        distinct = ops.distinct(f"probe:{view.principal}", pairs, s.window)
        yield
        if distinct.value >= s.threshold:
            found(
                Finding(
                    entity=view.principal,
                    window=s.window,
                    evidence={
                        "distinct_denied": distinct.value,
                        "threshold": s.threshold,
                        "window_seconds": s.window,
                        "latest": pairs[:10],
                    },
                )
            )


class MassPullDetector:
    """Distinct repositories pulled in a sliding window per principal *and network*,
    above an absolute ``floor``, ``multiplier`` times the EWMA of its hourly counts and
    ``peak_factor`` times its decaying peak (a weekly rollout is its own normal).

    The baseline is kept per network: a deploy robot that rolls out 250 images from its
    cluster every week is quiet there, and alerted at the floor from anywhere else.
    Nothing is alerted in the principal's first ``learning`` seconds; an hour that
    alerted does not teach the baseline."""

    name = "mass_pull"

    def __init__(self, settings: MassPull) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded:
            return
        repos = view.repositories("pull")
        if not repos:
            return
        s = self.settings
        principal = view.principal
        assert principal is not None
        where = view.network or "net:unknown"
        key = f"{principal}|{where}"
        since = ops.first(f"pulls:since:{principal}", str(view.now), REMEMBER)
        pulled = ops.distinct(f"pulls:{key}", repos, s.window)
        baseline = ops.hgetall(f"pulls:baseline:{key}")
        yield
        count, base = pulled.value, baseline.value
        hour = view.now // s.window
        last_hour = int(base.get("hour", hour))
        last_count = int(base.get("count", 0))
        ewma = float(base.get("ewma", 0.0))
        peak = float(base.get("peak", 0.0))
        peak_at = int(base.get("peak_at", view.now))
        fired_hour = int(base.get("fired", -1))
        first_hour = int(base.get("first", hour))
        learning = since.value is None or view.now - int(since.value) < s.learning
        update: dict[str, str] = {} if base else {"first": str(hour)}
        if last_hour < hour:  # the previous hour is over: it teaches the baseline
            # Not an hour that alerted, nor the first hour on a network once the
            # principal is known: that may be the start of a theft in progress.
            learning_then = since.value is None or (
                (last_hour + 1) * s.window - int(since.value) <= s.learning
            )
            if fired_hour != last_hour and (last_hour > first_hour or learning_then):
                a = s.alpha
                ewma = (1 - a) * ewma + a * last_count if "ewma" in base else float(last_count)
                ewma *= (1 - a) ** min(1000, hour - last_hour - 1)  # the quiet hours between
                if last_count >= _decayed(peak, peak_at, view.now, s.peak_half_life):
                    peak, peak_at = float(last_count), last_hour * s.window
            update = {
                "hour": str(hour),
                "count": str(count),
                "ewma": repr(ewma),
                "peak": repr(peak),
                "peak_at": str(peak_at),
            }
        elif count > last_count or not base:
            update.update(hour=str(hour), count=str(count))
        limit = max(
            float(s.floor),
            s.multiplier * ewma,
            s.peak_factor * _decayed(peak, peak_at, view.now, s.peak_half_life),
        )
        if count >= limit and not learning:
            update["fired"] = str(hour)
            found(
                Finding(
                    entity=principal,
                    window=s.window,
                    evidence={
                        "distinct_repositories": count,
                        "network": where,
                        "floor": s.floor,
                        "baseline": f"{ewma:.2f}",
                        "peak": f"{peak:.0f}",
                        "limit": f"{limit:.2f}",
                        "window_seconds": s.window,
                    },
                )
            )
        if update:
            ops.hset(f"pulls:baseline:{key}", update, REMEMBER)


def _decayed(peak: float, at: int, now: int, half_life: int) -> float:
    return float(peak * 0.5 ** (max(0, now - at) / half_life))


class FirstTimePushDetector:
    """A push to a repository that no one in the pusher's groups pushed to before (a CI
    job's group is its source repository or project, whatever the branch or tag)."""

    name = "first_time_push"
    SINCE = "push:since"

    def __init__(self, settings: FirstTimePush) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded:
            return
        repos = view.repositories("push")
        if not repos:
            return
        assert view.principal is not None
        teams = list(view.groups) or [_team_of(view)]
        since = ops.first(self.SINCE, str(view.now), REMEMBER)
        news: list[tuple[str, list[Handle[bool]]]] = [
            (repo, [ops.remember(f"push:team:{team}", repo, REMEMBER) for team in teams])
            for repo in repos
        ]
        yield
        if since.value is None or view.now - int(since.value) < self.settings.learning:
            return
        for repo, flags in news:
            if all(flag.value for flag in flags):
                found(
                    Finding(
                        entity=view.principal,
                        window=DAY,
                        key=repo,
                        evidence={"repository": repo, "groups": teams, "ip": view.ip},
                    )
                )


def _team_of(view: EventView) -> str:
    """Who a principal without groups pushes with: a CI job's repository or project
    (its subject changes with every branch and tag), else the principal itself."""
    for claim in ("repository", "project_path"):
        value = view.claims.get(claim)
        if view.kind == "ci" and isinstance(value, str) and value:
            return f"{view.provider}:{claim}:{value}"
    assert view.principal is not None
    return view.principal


class OffHoursPushDetector:
    """A human's push in an hour band of the day (UTC) in which the principal was never
    active before today, nor in a band next to it.

    A band counts as the principal's once it was first seen ``settle`` seconds ago: the
    login an attacker makes seconds before pushing does not make 3 a.m. a working hour.
    Neighbouring bands count too, so a day that starts or ends an hour off is quiet."""

    name = "off_hours_push"

    def __init__(self, settings: OffHoursPush) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded or view.kind != "human":
            return
        s = self.settings
        principal = view.principal
        assert principal is not None
        bands_a_day = max(1, 24 // s.band)
        band = (view.now % DAY) // HOUR // s.band
        since = ops.first(f"hours:since:{principal}", str(view.now), REMEMBER)
        seen = ops.hgetall(f"hours:{principal}")
        yield
        first_seen = {int(b): int(t) for b, t in seen.value.items()}
        if band not in first_seen:
            ops.hset(f"hours:{principal}", {str(band): str(view.now)}, REMEMBER)
        pushes = view.repositories("push")
        if not pushes or since.value is None or view.now - int(since.value) < s.learning:
            return
        settled = {b for b, t in first_seen.items() if view.now - t >= s.settle}
        if len(settled) < s.min_active_bands:
            return
        near = {band, (band - 1) % bands_a_day, (band + 1) % bands_a_day}
        if near & settled:
            return
        found(
            Finding(
                entity=principal,
                window=DAY,
                key=str(band),
                evidence={
                    "hour_utc": (view.now % DAY) // HOUR,
                    "band_hours": s.band,
                    "active_bands": sorted(settled),
                    "repositories": pushes,
                    "ip": view.ip,
                },
            )
        )
