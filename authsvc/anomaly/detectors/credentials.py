"""Detectors of password guessing: spraying, success after a spray, brute force and
credential stuffing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from authsvc.anomaly.engine import Finding, Found
from authsvc.anomaly.settings import (
    REMEMBER,
    BruteForce,
    CredentialStuffing,
    PasswordSpray,
    SuccessAfterSpray,
)
from authsvc.anomaly.state import Handle, Ops
from authsvc.anomaly.view import EventView

__all__ = [
    "BruteForceDetector",
    "CredentialStuffingDetector",
    "SprayDetector",
    "SuccessAfterSprayDetector",
]

#: State key prefix of a source flagged by ``password_spray`` (read by
#: ``success_after_spray``; the flag lasts that detector's window). Fields: ``until``
#: (seconds) and ``since`` (milliseconds: the time of the failure that flagged it first).
SPRAYED = "sprayed:"
#: State key prefix of the password logins that succeeded from a source, written by
#: ``success_after_spray`` and read by ``password_spray`` when it flags the source:
#: ``succeeded:{source}:{bucket}``, principal -> "time_ms event_id" (its latest), one
#: hash per ``window`` seconds of event time (``bucket`` = time // window), kept two
#: windows: a busy source's hash holds the accounts of one window, not of all time.
SUCCEEDED = "succeeded:"


def _succeeded(source: str, now: int, window: int) -> str:
    return f"{SUCCEEDED}{source}:{now // window}"


def _spray_sources(view: EventView) -> list[str]:
    """The entities a spray flag is kept for: the address, and its network if known."""
    return [f"ip:{view.ip}", *([view.network] if view.network else [])]


class SprayDetector:
    """Distinct accounts failing from one address, and from one network (/24, /48, ASN
    or named set), in a window; and, slowly, over a day.

    A source many people log in from (an office NAT) sees typos from many accounts: it
    is a spray only when the failing accounts also outnumber ``shared_source_ratio``
    times the accounts that logged in from it successfully over the slow window.

    It flags a source it alerts on for ``success_after_spray`` (``flag_for`` seconds).
    With ``successes`` (that detector runs) it also does that detector's half of the
    join for the successes handled before the flag was set, which several consumers
    sharing a stream do: a success from the source no earlier than the failure that set
    the flag is reported for ``success_after_spray`` here."""

    name = "password_spray"

    def __init__(self, settings: PasswordSpray, flag_for: int, *, successes: bool = False) -> None:
        self.settings = settings
        self.severity = settings.severity
        self._flag_for = flag_for
        self._successes = successes

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        s = self.settings
        if view.succeeded and view.credential == "password" and view.ip:
            assert view.principal is not None
            ops.distinct(f"spray:ok:ip:{view.ip}", [view.principal], s.slow_window)
            if view.network:
                ops.distinct(f"spray:ok:{view.network}", [view.principal], s.slow_window)
            return
        if not view.bad_password or not view.ip:
            return
        assert view.username is not None
        succeeded = {f"ip:{view.ip}": ops.distinct_count(f"spray:ok:ip:{view.ip}", s.slow_window)}
        if view.network:
            succeeded[view.network] = ops.distinct_count(f"spray:ok:{view.network}", s.slow_window)
        checks: list[tuple[str, int, int, Handle[int]]] = [
            (
                f"ip:{view.ip}",
                s.threshold,
                s.window,
                ops.distinct(f"spray:ip:{view.ip}", [view.username], s.window),
            ),
            (
                f"ip:{view.ip}",
                s.slow_threshold,
                s.slow_window,
                ops.distinct(f"spray:slow:ip:{view.ip}", [view.username], s.slow_window),
            ),
        ]
        sources = _spray_sources(view)
        # The flags as they stand, for the time they were first set (``since``).
        flags = [ops.hgetall(SPRAYED + source) for source in sources] if self._successes else []
        if view.network:
            checks.append(
                (
                    view.network,
                    s.network_threshold,
                    s.window,
                    ops.distinct(f"spray:{view.network}", [view.username], s.window),
                )
            )
            checks.append(
                (
                    view.network,
                    s.slow_threshold,
                    s.slow_window,
                    ops.distinct(f"spray:slow:{view.network}", [view.username], s.slow_window),
                )
            )
        yield
        flagged = False
        keys = [(entity, "slow" if window != s.window else "") for entity, _, window, _ in checks]
        for (entity, threshold, window, accounts), (_, key) in zip(checks, keys, strict=True):
            shared = succeeded[entity].value * s.shared_source_ratio
            if accounts.value >= threshold and accounts.value > shared:
                flagged = True
                found(
                    Finding(
                        entity=entity,
                        window=window,
                        key=key,
                        evidence={
                            "distinct_accounts": accounts.value,
                            "threshold": threshold,
                            "window_seconds": window,
                            "accounts_succeeding": succeeded[entity].value,
                        },
                        covers=[k for k in keys if k != (entity, key)],
                    )
                )
                break  # the finest grain that fires stands for the coarser ones
        if not flagged:
            return
        until = view.now + self._flag_for
        for position, source in enumerate(sources):
            fields = {"until": str(until)}
            if self._successes:
                fields["since"] = _since(flags[position].value, view)
            # prompt: success_after_spray reads it, maybe in another consumer
            ops.hset(SPRAYED + source, fields, self._flag_for, prompt=True)
        if not self._successes:
            return
        # In the same batch as the flag: a success handled meanwhile elsewhere either
        # finds the flag or is found here (its batch writes the success, then reads).
        # Successes no earlier than this failure are in its window's hash or the next.
        logins_from = [
            [ops.hgetall(_succeeded(source, at, self._flag_for))
             for at in (view.now, view.now + self._flag_for)]
            for source in sources
        ]  # fmt: skip
        yield
        from_ip: set[str] = set()  # the address's own successes are not the network's
        for source, handles in zip(sources, logins_from, strict=True):
            logins = _logins(handle.value for handle in handles)
            hits = [
                login for login in logins
                if login[2] not in from_ip and view.time_ms <= login[0] <= until * 1000
            ]  # fmt: skip
            from_ip |= {event_id for _, _, event_id in logins}
            if not hits:
                continue
            _, account, event_id = min(hits)  # the earliest (ties: by account)
            found(
                Finding(
                    entity=source,
                    window=self._flag_for,
                    evidence={"account": account, "sprayed_source": source},
                    event_ids=[event_id, view.event_id],
                    detector=SuccessAfterSprayDetector.name,
                )
            )


class SuccessAfterSprayDetector:
    """A successful login from an address or network flagged for spraying (page)."""

    name = "success_after_spray"

    def __init__(self, settings: SuccessAfterSpray) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded or not view.ip or view.credential != "password":
            return
        assert view.principal is not None
        seen = {view.principal: f"{view.time_ms} {view.event_id}"}
        window = self.settings.window
        flags = []
        for source in _spray_sources(view):
            # Written before the flag is read (see SprayDetector): one of the two
            # events' batches sees the other's write, whichever consumer runs it.
            ops.hset(_succeeded(source, view.now, window), seen, 2 * window, prompt=True)
            flags.append((source, ops.hgetall(SPRAYED + source)))
        yield
        for entity, flag in flags:
            if _flagged_at(flag.value, view):
                found(
                    Finding(
                        entity=entity,
                        window=self.settings.window,
                        # One page per sprayed source and window, not one per account
                        # (an office whose network was sprayed logs in all morning).
                        evidence={"account": view.principal, "sprayed_source": entity},
                    )
                )
                return


def _stands(flag: dict[str, str], view: EventView) -> bool:
    """Whether the flag's ``until`` is not past at the event."""
    until = flag.get("until")
    return until is not None and int(until) >= view.now


def _since(flag: dict[str, str], view: EventView) -> str:
    """The flag's ``since`` if it still stands, else this event's time (ms)."""
    since = flag.get("since")
    return since if since is not None and _stands(flag, view) else str(view.time_ms)


def _flagged_at(flag: dict[str, str], view: EventView) -> bool:
    """Whether the source was flagged when the event happened: the flag stands, and the
    event is no earlier than its ``since`` (the first failure that set it; a flag
    without one, written before it existed, has no lower bound)."""
    since = flag.get("since")
    return _stands(flag, view) and (since is None or int(since) <= view.time_ms)


def _logins(records: Iterable[dict[str, str]]) -> list[tuple[int, str, str]]:
    """(time_ms, account, event_id) of each account's latest success in ``records``
    (``SUCCEEDED`` hashes, oldest first: a later one's entry for an account wins)."""
    latest: dict[str, str] = {}
    for record in records:
        latest.update(record)
    out: list[tuple[int, str, str]] = []
    for account, seen in latest.items():
        time_ms, _, event_id = seen.partition(" ")
        out.append((int(time_ms), account, event_id))
    return out


class BruteForceDetector:
    """Distinct passwords failing per (account, address) in a window (by credential
    fingerprint: a tool retrying one expired password is not guessing)."""

    name = "brute_force"

    def __init__(self, settings: BruteForce) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.bad_password or not view.ip:
            return
        s = self.settings
        entity = f"account:{view.username}@ip:{view.ip}"
        tried = [view.fingerprint or view.event_id]
        failures = ops.distinct(f"bf:{entity}", tried, s.window)
        yield
        if failures.value >= s.threshold:
            found(
                Finding(
                    entity=entity,
                    window=s.window,
                    evidence={
                        "distinct_passwords": failures.value,
                        "threshold": s.threshold,
                        "window_seconds": s.window,
                    },
                )
            )


def _ratio(value: float) -> str:
    return f"{value:.4f}"


class CredentialStuffingDetector:
    """The failure ratio and unknown-account share of password requests in the current
    bucket against their own EWMA baseline (mean and mean absolute deviation).

    Checked on every failure as the bucket fills (the failure that crosses the limit is
    the alert's evidence); the baseline learns from each closed bucket with at least
    ``min_requests`` requests that stayed under the limit, so an attack, even one too
    small to alert, does not teach it."""

    name = "credential_stuffing"
    BASELINE = "stuffing:baseline"
    MEASURES = ("failure_ratio", "unknown_share")

    def __init__(self, settings: CredentialStuffing) -> None:
        self.settings = settings
        self.severity = settings.severity

    def _limit(self, base: dict[str, str], name: str) -> tuple[float, float, float]:
        s = self.settings
        mean = float(base.get(f"{name}_mean", 0.0))
        dev = float(base.get(f"{name}_dev", 0.0))
        return mean, dev, min(s.max_limit, mean + max(s.min_rise, s.deviations * dev))

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if view.credential != "password":
            return
        s = self.settings
        bucket = view.now // s.bucket
        keep = s.bucket * 4
        total = ops.incr(f"stuffing:total:{bucket}", 1, keep)
        failed = ops.incr(f"stuffing:failed:{bucket}", int(view.bad_password), keep)
        unknown = ops.incr(f"stuffing:unknown:{bucket}", int(view.reason == "UNKNOWN_USER"), keep)
        baseline = ops.hgetall(self.BASELINE)
        # The first event of a bucket closes the one before it (once, whoever sees it).
        closer = ops.first(f"stuffing:closed:{bucket - 1}", "1", keep)
        yield
        base = baseline.value
        since = int(base.get("since", view.now))
        learned = view.now - since >= s.learning and "learned" in base
        if view.bad_password and learned and failed.value >= s.min_failures:
            measures = (failed.value / total.value, unknown.value / total.value)
            for name, value in zip(self.MEASURES, measures, strict=True):
                mean, dev, limit = self._limit(base, name)
                if value > limit:
                    found(
                        Finding(
                            entity="global",
                            window=s.bucket,
                            key=name,
                            evidence={
                                "measure": name,
                                "value": _ratio(value),
                                "baseline": _ratio(mean),
                                "deviation": _ratio(dev),
                                "limit": _ratio(limit),
                                "requests": total.value,
                                "failures": failed.value,
                                "unknown_accounts": unknown.value,
                                "bucket_start": bucket * s.bucket,
                            },
                        )
                    )
        if closer.value is not None:
            return
        previous = bucket - 1
        counts = [ops.get(f"stuffing:{part}:{previous}") for part in ("total", "failed", "unknown")]
        yield
        requests, failures, unknowns = (int(c.value or 0) for c in counts)
        fields = {"since": str(since)}
        closed = (failures / requests, unknowns / requests) if requests else (0.0, 0.0)
        quiet = all(
            value <= self._limit(base, name)[2]
            for name, value in zip(self.MEASURES, closed, strict=True)
        )
        if requests >= s.min_requests and (quiet or not learned):
            a = s.alpha
            for name, value in zip(self.MEASURES, closed, strict=True):
                mean = float(base.get(f"{name}_mean", value))
                dev = float(base.get(f"{name}_dev", 0.0))
                fields[f"{name}_mean"] = repr((1 - a) * mean + a * value)
                fields[f"{name}_dev"] = repr((1 - a) * dev + a * abs(value - mean))
            fields["learned"] = "1"
        ops.hset(self.BASELINE, fields, REMEMBER)
