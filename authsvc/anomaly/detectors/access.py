"""Detectors of what a principal does with its access: probing for more, pulling
everything, pushing somewhere new, pushing at an hour it never works."""

from __future__ import annotations

from collections.abc import Iterator

from authsvc.anomaly.engine import Finding, Found
from authsvc.anomaly.settings import FirstTimePush, MassPull, OffHoursPush, ScopeProbing
from authsvc.anomaly.state import Handle, Ops
from authsvc.anomaly.view import EventView

__all__ = [
    "FirstTimePushDetector",
    "MassPullDetector",
    "OffHoursPushDetector",
    "ScopeProbingDetector",
]

HOUR = 3600
DAY = 86400
REMEMBER = 400 * DAY
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
    """Distinct repositories pulled per principal per hour, above an absolute floor and
    ``multiplier`` times the principal's own EWMA of its hourly counts."""

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
        hour = view.now // s.window  # the key holds the hour: a tumbling window
        pulled = ops.distinct(f"pulls:{principal}:{hour}", repos, s.window)
        base_key = f"pulls:baseline:{principal}"
        baseline = ops.hgetall(base_key)
        yield
        count, base = pulled.value, baseline.value
        ewma = float(base.get("ewma", 0.0))
        last_hour = int(base.get("hour", hour))
        last_count = int(base.get("count", 0))
        if last_hour < hour:  # the previous hour is over: it teaches the baseline
            a = s.alpha
            # The first hour seen is the first estimate; later ones move it by alpha.
            ewma = (1 - a) * ewma + a * last_count if "ewma" in base else float(last_count)
            ewma *= (1 - a) ** min(1000, hour - last_hour - 1)  # the quiet hours between
            ops.hset(
                base_key, {"hour": str(hour), "count": str(count), "ewma": repr(ewma)}, REMEMBER
            )
        elif count > last_count or not base:
            ops.hset(base_key, {"hour": str(hour), "count": str(count)}, REMEMBER)
        limit = max(float(s.floor), s.multiplier * ewma)
        if count >= limit:
            found(
                Finding(
                    entity=principal,
                    window=s.window,
                    evidence={
                        "distinct_repositories": count,
                        "floor": s.floor,
                        "baseline": f"{ewma:.2f}",
                        "limit": f"{limit:.2f}",
                        "hour_start": hour * s.window,
                    },
                )
            )


class FirstTimePushDetector:
    """A push to a repository that no one in the pusher's groups pushed to before."""

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
        teams = list(view.groups) or [view.principal]
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


class OffHoursPushDetector:
    """A human's push in an hour band of the day (UTC) the principal was never active in."""

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
        band = (view.now % DAY) // HOUR // s.band
        pushes = view.repositories("push")
        since = ops.first(f"hours:since:{principal}", str(view.now), REMEMBER)
        new = ops.remember(f"hours:{principal}", str(band), REMEMBER)
        bands = ops.cardinality(f"hours:{principal}")
        yield
        if not pushes or not new.value or since.value is None:
            return
        if view.now - int(since.value) < s.learning or bands.value - 1 < s.min_active_bands:
            return
        found(
            Finding(
                entity=principal,
                window=DAY,
                key=str(band),
                evidence={
                    "hour_utc": (view.now % DAY) // HOUR,
                    "band_hours": s.band,
                    "active_bands": bands.value - 1,
                    "repositories": pushes,
                    "ip": view.ip,
                },
            )
        )
