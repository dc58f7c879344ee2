"""People's benign traffic: working days, logins with typos, trips, new laptops.

Each person works on weekdays (sometimes not: leave, illness), sometimes a little at
the weekend or in the evening, from home, from their office on office days, or from
wherever they travel. Work is bursts of registry operations (a ``compose pull`` is
several pulls seconds apart); a push asks for ``pull,push`` on a team repository and
sometimes ``pull`` on the base image it mounts from. Docker users log in when their
refresh token has lapsed (every few days) and then use it; the other clients send the
password every time and log in now and then. A login goes wrong now and then: one or
two wrong passwords (or a mistyped user name), then the right one.

Episodes that a detector might take for an attack are named as benign patterns:
``typo``, ``travel`` (a few percent of people per week, 1-4 days on a hotel, airport,
coworking or mobile network), ``new_client`` (a new laptop: another client, a new
login), ``home_renumber`` (the ISP hands out another /24), ``denied_pull`` /
``denied_push`` (asking for a repository one may not use), ``catalog_browse`` (a
registry UI asking for the catalog), ``evening`` work, and, once a week or so, an
``expired_password_loop`` (a script retrying a changed password every minute for an
hour) and an ``oncall_night`` (a push between 1 and 4:30 a.m. local time, for an
incident).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.detect.clients import Client, pick_client
from bench.detect.context import DAY, HOUR, MINUTE, SECOND, Context
from bench.detect.emit import Credential, Request, password, refresh
from bench.detect.network import network, networks_of
from bench.detect.world import Human

__all__ = ["login", "operate", "simulate_people"]

_TRAVEL_PER_WEEK = 0.03
_LAPTOP_PER_WEEK = 0.02
_RENUMBER_PER_WEEK = 0.03
_TYPO_RATE = 0.1
#: days of the dormant accounts' last activity, relative to the window's first day
_DORMANT_DAYS = range(-125, -115)


@dataclass
class _State:
    """What changes while a person's days go by."""

    clients: list[Client]
    home_ip: str
    session: str | None = None
    session_until: int = 0
    pending_client: tuple[int, Client] | None = None  # (day, the new laptop's client)
    #: benign patterns waiting for the first day worked at the new address / client
    fresh_home: str | None = None
    fresh_client: str | None = None


def simulate_people(ctx: Context) -> None:
    for person in ctx.world.humans:
        _person(ctx, person, ctx.stream("person", person.username), range(ctx.days))
    for person in ctx.world.dormant:
        _person(ctx, person, ctx.stream("dormant", person.username), _DORMANT_DAYS)
    _expired_password_loops(ctx, ctx.stream("expired-loops"))
    _oncall_nights(ctx, ctx.stream("oncall"))


def _person(ctx: Context, person: Human, rng: random.Random, days: range) -> None:
    state = _State(list(person.clients), person.home_ip)
    trip: tuple[int, int, str, str] | None = None  # first day, last day, pattern, network
    for day in days:
        weekday = day % 7
        if weekday == 0 and day >= 0:
            trip = _maybe_trip(ctx, person, rng, day) or trip
            if rng.random() < _LAPTOP_PER_WEEK:
                _new_laptop(person, rng, state, day + rng.randrange(5))
        if day >= 0 and rng.random() < _RENUMBER_PER_WEEK / 7:
            state.home_ip = ctx.alloc.address(person.home.network)
            state.fresh_home = ctx.recorder.pattern("home_renumber", f"ip:{state.home_ip}")
        if state.pending_client is not None and state.pending_client[0] == day:
            state.clients[0] = state.pending_client[1]
            state.pending_client, state.session = None, None
            state.fresh_client = ctx.recorder.pattern("new_client", f"user:{person.username}")
        ip, pattern = state.home_ip, state.fresh_home
        if trip is not None and trip[0] <= day <= trip[1]:
            ip, pattern = ctx.alloc.address(network(trip[3])), trip[2]
        elif person.office_ip is not None and weekday in person.office_days:
            ip, pattern = person.office_ip, None
        if pattern is None:
            pattern = state.fresh_client
        midnight = ctx.local_midnight(person, day)
        if weekday < 5 and rng.random() > 0.07:
            begin = midnight + int((person.start_minute + rng.gauss(0, 25)) * MINUTE)
            end = begin + int((person.length_minutes + rng.gauss(0, 40)) * MINUTE)
            ops = max(2, int(rng.gauss(person.daily_ops, person.daily_ops * 0.3)))
            _workday(ctx, person, rng, state, ip, begin, end, ops, pattern)
            if rng.random() < 0.06:
                evening = ctx.recorder.pattern("evening", f"user:{person.username}")
                late = midnight + rng.randrange(19 * 60 + 30, 22 * 60 + 30) * MINUTE
                _workday(ctx, person, rng, state, ip, late, late + HOUR, rng.randint(1, 4),
                         pattern or evening)
        elif weekday >= 5 and rng.random() < 0.06:
            begin = midnight + rng.randrange(11 * 60, 17 * 60) * MINUTE
            _workday(ctx, person, rng, state, ip, begin, begin + rng.randint(1, 3) * HOUR,
                     rng.randint(1, 6), pattern)
        else:
            continue
        # the first day at the new address, or with the new client, has been worked
        if pattern is not None and pattern == state.fresh_home:
            state.fresh_home = None
        state.fresh_client = None


def _maybe_trip(
    ctx: Context, person: Human, rng: random.Random, week_start: int
) -> tuple[int, int, str, str] | None:
    if rng.random() >= _TRAVEL_PER_WEEK:
        return None
    first = week_start + rng.randrange(5)
    where = rng.choice(networks_of("travel") + networks_of("mobile")
                       + networks_of("residential"))
    return (first, first + rng.randrange(4),
            ctx.recorder.pattern("travel", f"user:{person.username}"), where.name)


def _new_laptop(person: Human, rng: random.Random, state: _State, day: int) -> None:
    current = state.clients[0]
    client = pick_client(rng)
    while client == current:
        client = pick_client(rng)
    state.pending_client = (day, client)


def _workday(
    ctx: Context, person: Human, rng: random.Random, state: _State, ip: str, begin: int,
    end: int, ops: int, pattern: str | None,
) -> None:
    bursts = max(1, ops // 3)
    times = sorted(rng.randrange(begin, max(begin + 1, end)) for _ in range(bursts))
    per_burst = [1] * bursts
    for _ in range(ops - bursts):
        per_burst[rng.randrange(bursts)] += 1
    for t, count in zip(times, per_burst, strict=True):
        client = state.clients[0]
        if len(state.clients) > 1 and rng.random() < 0.3:
            client = state.clients[1]
        credential = _credential(ctx, person, rng, state, client, ip, t, pattern)
        for _ in range(count):
            t += rng.randrange(2 * SECOND, 25 * SECOND)
            operate(ctx, person, rng, client, credential, ip, t, pattern)


def _credential(
    ctx: Context, person: Human, rng: random.Random, state: _State, client: Client, ip: str,
    t: int, pattern: str | None,
) -> Credential:
    if client.uses_refresh_token:
        if state.session is None or t >= state.session_until:
            login(ctx, person, rng, client, ip, t, pattern=pattern)
            state.session = f"rt:{person.username}:{rng.getrandbits(64):016x}"
            state.session_until = t + rng.randint(2, 9) * DAY
        return refresh(state.session)
    if rng.random() < 0.03:
        login(ctx, person, rng, client, ip, t, pattern=pattern)
    return password(person.username, person.password)


def login(
    ctx: Context, person: Human, rng: random.Random, client: Client, ip: str, t: int, *,
    pattern: str | None = None, campaign: str | None = None, typos: bool = True,
) -> int:
    """``docker login`` (or podman's, skopeo's): perhaps a typo or two, then success.
    Returns the time of the successful login."""
    docker = client.uses_refresh_token
    request = Request(ip, client.user_agent, (), None if docker else client.grant_type,
                      "docker" if docker else None, docker)
    if typos and campaign is None and rng.random() < _TYPO_RATE:
        typo = ctx.recorder.pattern("typo", f"user:{person.username}")
        for _ in range(rng.choice((1, 1, 1, 2))):
            if rng.random() < 0.85:
                wrong = password(person.username, f"typo:{rng.getrandbits(64):016x}")
                ctx.recorder.refuse(t, wrong, request, "INVALID_CREDENTIALS", pattern=typo)
            else:
                name = _mistype(rng, person.username)
                ctx.recorder.refuse(t, password(name, person.password), request,
                                    "UNKNOWN_USER", pattern=typo)
            t += rng.randrange(4 * SECOND, 40 * SECOND)
    ctx.recorder.grant(t, person.principal, password(person.username, person.password),
                       request, campaign=campaign, pattern=pattern)
    return t


def _mistype(rng: random.Random, name: str) -> str:
    i = rng.randrange(len(name) - 1)
    if rng.random() < 0.5:
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    return name[:i] + name[i + 1:]


def operate(
    ctx: Context, person: Human, rng: random.Random, client: Client, credential: Credential,
    ip: str, t: int, pattern: str | None = None, campaign: str | None = None,
) -> None:
    """One registry operation as this person would do it."""
    ns = ctx.world.namespaces
    mark = pattern
    if client.family == "browser" and rng.random() < 0.1:
        scopes: tuple[str, ...] = ("registry:catalog:*",)
        if campaign is None and not person.principal.admin:
            mark = ctx.recorder.pattern("catalog_browse", f"user:{person.username}")
    elif client.family != "browser" and rng.random() < person.push_share:
        target = ns[person.team]
        if campaign is None and rng.random() < 0.02:
            target = ns[rng.choice(person.neighbours)]
            mark = ctx.recorder.pattern("denied_push", f"user:{person.username}")
        scopes = (f"repository:{target.pick(rng)}:pull,push",)
        if rng.random() < 0.3:
            scopes += (f"repository:{ns['base'].pick(rng)}:pull",)
    else:
        roll = rng.random()
        if campaign is None and roll < 0.015:
            outsider = [t for t in ctx.world.teams if not person.principal.may_pull(f"{t}/x")]
            if outsider:
                target = ns[rng.choice(outsider)]
                mark = ctx.recorder.pattern("denied_pull", f"user:{person.username}")
            else:
                target = ns[person.team]
        elif roll < 0.5:
            target = ns[person.team]
        elif roll < 0.7:
            target = ns["base"]
        elif roll < 0.8:
            target = ns["tools"]
        else:
            target = ns[rng.choice(person.neighbours)]
        scopes = (f"repository:{target.pick(rng)}:pull",)
    refreshing = credential.kind == "refresh_token"
    request = Request(ip, client.user_agent, scopes,
                      "refresh_token" if refreshing else client.grant_type,
                      "docker" if refreshing else None)
    ctx.recorder.grant(t, person.principal, credential, request, campaign=campaign,
                       pattern=mark)


def _expired_password_loops(ctx: Context, rng: random.Random) -> None:
    """A script on someone's machine retrying a changed password every minute."""
    for _ in range(max(1, round(ctx.days / 7))):
        person = rng.choice(ctx.world.humans)
        day = rng.randrange(ctx.days)
        t = ctx.local_midnight(person, day) + rng.randrange(8 * 60, 17 * 60) * MINUTE
        ip = person.office_ip or person.home_ip
        pid = ctx.recorder.pattern("expired_password_loop", f"user:{person.username}")
        old = password(person.username, f"old:{person.password}")
        request = Request(ip, rng.choice(("python-requests/2.31.0", "skopeo/1.13.3")),
                          (f"repository:{ctx.world.namespaces[person.team].pick(rng)}:pull",))
        for _ in range(rng.randint(60, 75)):
            ctx.recorder.refuse(t, old, request, "INVALID_CREDENTIALS", pattern=pid)
            t += MINUTE + rng.randrange(-3 * SECOND, 3 * SECOND)


def _oncall_nights(ctx: Context, rng: random.Random) -> None:
    """An incident: someone on call pushes a fix in the middle of their night."""
    oncall = [p for p in ctx.world.humans if p.team in ("infra", "platform")]
    for _ in range(max(1, round(ctx.days / 7))):
        person = rng.choice(oncall or list(ctx.world.humans))
        day = rng.randrange(ctx.days)
        t = ctx.local_midnight(person, day) + rng.randrange(60, 270) * MINUTE
        pid = ctx.recorder.pattern("oncall_night", f"user:{person.username}")
        client = person.clients[0]
        login(ctx, person, rng, client, person.home_ip, t, pattern=pid, typos=False)
        credential = (refresh(f"rt:oncall:{rng.getrandbits(64):016x}")
                      if client.uses_refresh_token
                      else password(person.username, person.password))
        for _ in range(rng.randint(2, 6)):
            t += rng.randrange(30 * SECOND, 8 * MINUTE)
            push = f"repository:{ctx.world.namespaces[person.team].pick(rng)}:pull,push"
            grant = "refresh_token" if client.uses_refresh_token else client.grant_type
            request = Request(person.home_ip, client.user_agent, (push,), grant,
                              "docker" if client.uses_refresh_token else None)
            ctx.recorder.grant(t, person.principal, credential, request, pattern=pid)
