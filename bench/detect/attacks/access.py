"""Valid credentials used badly: stolen, dormant, at night, for bulk reads, for probing.

* ``stolen_credential``: someone's real password, from an address at a hosting provider
  or an ISP in another region that this person never used, pulling their team's images.
* ``mass_pull``: a principal that may read everything (a platform engineer, a deploy
  robot) pulls 150-300 distinct repositories within an hour.
* ``scope_probing``: a person, a CI job or a robot asks for 40-150 scopes it mostly may
  not have: other teams' pushes, ``delete``, ``*``, the catalog, made-up repositories.
* ``dormant_reuse``: an account last used about four months ago logs in again (from its
  old home address or from somewhere new) and pulls.
* ``off_hours_push``: someone's account pushes between 2:30 and 4 a.m. their time,
  usually from their own home address and client (a hijacked session, an insider);
  half the time after a login, otherwise with a session it already holds.
"""

from __future__ import annotations

import random
from dataclasses import replace

from bench.detect.attacks.common import (
    Cast,
    Planned,
    attacker_address,
    known_since,
    settled,
    start_time,
)
from bench.detect.clients import FAMILIES, Client
from bench.detect.context import DAY, HOUR, MINUTE, SECOND, Context
from bench.detect.emit import Credential, Request, password, refresh
from bench.detect.machines import run_job
from bench.detect.people import login
from bench.detect.policy import CATALOG, Principal
from bench.detect.world import Human

__all__ = [
    "dormant_reuse", "mass_pull", "off_hours_push", "scope_probing", "stolen_credential",
]

_MADE_UP = ("admin/secrets", "internal/vault", "prod/db-backup", "infra/terraform-state",
            "security/keys", "finance/payroll", "legacy/app", "test/test", "library/ubuntu")


def _pulls(
    ctx: Context, rng: random.Random, cid: str, principal: Principal, credential: Credential,
    request: Request, repos: list[str], t: int, gap: tuple[int, int],
) -> int:
    for repo in repos:
        t += rng.randrange(*gap)
        scoped = replace(request, scopes=(f"repository:{repo}:pull",))
        ctx.recorder.grant(t, principal, credential, scoped, campaign=cid)
    return t


def _session(rng: random.Random, person: Human, client: Client) -> tuple[Credential, Request]:
    """What a client uses after a login: dockerd its new refresh token, the others the
    password (the returned request has no address or scopes yet)."""
    if client.uses_refresh_token:
        token = refresh(f"rt:{person.username}:{rng.getrandbits(64):016x}")
        return token, Request("", client.user_agent, (), "refresh_token", "docker")
    credential = password(person.username, person.password)
    return credential, Request("", client.user_agent, (), client.grant_type)


def _team_repos(ctx: Context, rng: random.Random, person: Human, count: int) -> list[str]:
    own = ctx.world.namespaces[person.team]
    return [own.pick(rng) for _ in range(count)]


def stolen_credential(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    duration = 2 * 60 * MINUTE
    victim = cast.person(rng, ctx.world.humans, lambda p: p.username not in ctx.world.weak
                         and settled(ctx, p, duration))
    t = start_time(ctx, rng, duration, victim)
    ip = attacker_address(ctx, rng, residential=rng.random() < 0.4)
    family = rng.choice(("docker-linux", "skopeo"))
    client = Client(family, rng.choice(FAMILIES[family]))
    t = login(ctx, victim, rng, client, ip, t, campaign=cid)
    credential, request = _session(rng, victim, client)
    request = replace(request, ip=ip)
    _pulls(ctx, rng, cid, victim.principal, credential, request,
           _team_repos(ctx, rng, victim, rng.randint(5, 30)), t, (20 * SECOND, 4 * MINUTE))
    return Planned(f"{victim.username}'s password from a new network",
                   {"ip": [ip], "account": [victim.username]})


def mass_pull(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    everything = sorted(
        repo for name, ns in ctx.world.namespaces.items() if name != "public"
        for repo in ns.repos
    )
    count = min(len(everything), rng.randint(150, 300))
    duration = rng.randint(20, 55) * MINUTE
    agent = rng.choice(FAMILIES["skopeo"] + FAMILIES["crane"])
    if rng.random() < 0.5:
        who = cast.person(rng, ctx.world.humans,
                          lambda p: "*" in p.principal.read and settled(ctx, p, duration))
        principal, secret, name = who.principal, who.password, who.username
        t = start_time(ctx, rng, duration, who)
        ip = who.home_ip if rng.random() < 0.5 else attacker_address(ctx, rng)
    else:
        robot = rng.choice(ctx.world.robots)
        principal, secret, name = robot.principal, robot.password, robot.name
        t = start_time(ctx, rng, duration)
        ip = attacker_address(ctx, rng)
    request = Request(ip, agent, ())
    gap = duration // count
    _pulls(ctx, rng, cid, principal, password(name, secret), request,
           rng.sample(everything, count), t, (gap // 2, gap * 3 // 2))
    return Planned(f"{name} pulls {count} repositories", {"ip": [ip], "account": [name]})


def _probe_scopes(ctx: Context, rng: random.Random, count: int, team: str) -> list[str]:
    others = [ns for name, ns in ctx.world.namespaces.items() if name not in (team, "public")]
    scopes = []
    for _ in range(count):
        repo = rng.choice(others).pick(rng) if rng.random() < 0.8 else rng.choice(_MADE_UP)
        roll = rng.random()
        if roll < 0.1:
            scopes.append(CATALOG)
        elif roll < 0.35:
            scopes.append(f"repository:{repo}:delete")
        elif roll < 0.55:
            scopes.append(f"repository:{repo}:*")
        else:
            scopes.append(f"repository:{repo}:pull,push")
    return scopes


def scope_probing(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    count = rng.randint(40, 150)
    duration = rng.randint(10, 45) * MINUTE
    t = start_time(ctx, rng, duration)
    roll = rng.random()
    if roll < 0.3:
        w = cast.workload(rng, ctx.world.ci)
        scopes = tuple(_probe_scopes(ctx, rng, count, w.team))
        run_job(ctx, w, rng, t, w.network_address(rng), campaign=cid, scopes=scopes,
                span=duration)
        return Planned(f"a {w.name} job asks for {count} scopes",
                       {"account": [w.principal.account or w.name]})
    if roll < 0.5:
        robot = rng.choice(ctx.world.robots)
        principal, name, secret, team = robot.principal, robot.name, robot.password, "-"
        ip = attacker_address(ctx, rng)
    else:
        who = cast.person(rng, ctx.world.humans, lambda p: not p.principal.admin)
        principal, name, secret, team = who.principal, who.username, who.password, who.team
        ip = who.home_ip if rng.random() < 0.5 else attacker_address(ctx, rng)
    agent = rng.choice(FAMILIES["curl"] + FAMILIES["python-requests"])
    for scope in _probe_scopes(ctx, rng, count, team):
        t += rng.randrange(duration // count // 2, duration // count * 3 // 2)
        ctx.recorder.grant(t, principal, password(name, secret), Request(ip, agent, (scope,)),
                           campaign=cid)
    return Planned(f"{name} asks for {count} scopes", {"ip": [ip], "account": [name]})


def dormant_reuse(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    person = cast.person(rng, ctx.world.dormant, lambda p: True)
    t = start_time(ctx, rng, 90 * MINUTE)
    if rng.random() < 0.5:
        ip, client = person.home_ip, person.clients[0]
    else:
        ip = attacker_address(ctx, rng, residential=rng.random() < 0.5)
        client = Client("docker-linux", rng.choice(FAMILIES["docker-linux"]))
    t = login(ctx, person, rng, client, ip, t, campaign=cid)
    credential, request = _session(rng, person, client)
    repos = _team_repos(ctx, rng, person, rng.randint(3, 15))
    _pulls(ctx, rng, cid, person.principal, credential, replace(request, ip=ip), repos, t,
           (20 * SECOND, 5 * MINUTE))
    return Planned(f"{person.username}, unused for months, logs in",
                   {"ip": [ip], "account": [person.username]})


def off_hours_push(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    victim = cast.person(rng, ctx.world.humans,
                         lambda p: p.team not in ("infra", "platform")
                         and p.clients[0].family != "browser" and settled(ctx, p, DAY))
    earliest = max(ctx.start, known_since(ctx, victim)) + ctx.warmup_days * DAY
    nights = [ctx.local_midnight(victim, day) + 150 * MINUTE for day in range(ctx.days)]
    night = rng.choice([n for n in nights if earliest <= n < ctx.end - 2 * HOUR])
    t = night + rng.randrange(90) * MINUTE
    if rng.random() < 0.6:
        ip, client = victim.home_ip, victim.clients[0]
    else:
        ip = attacker_address(ctx, rng, residential=True)
        client = Client("docker-linux", rng.choice(FAMILIES["docker-linux"]))
    # Half log in first; the others push straight away with a session they already hold
    # (a refresh token taken from the victim's machine, a credential helper's cache).
    fresh = rng.random() < 0.5
    if fresh:
        t = login(ctx, victim, rng, client, ip, t, campaign=cid)
    credential, request = _session(rng, victim, client)
    team = ctx.world.namespaces[victim.team]
    for _ in range(rng.randint(1, 5)):
        t += rng.randrange(30 * SECOND, 6 * MINUTE)
        push = (f"repository:{team.pick(rng)}:pull,push",)
        ctx.recorder.grant(t, victim.principal, credential,
                           replace(request, ip=ip, scopes=push), campaign=cid)
    how = "logs in and pushes" if fresh else "pushes with a session it holds"
    return Planned(f"{victim.username}'s account {how} at night",
                   {"ip": [ip], "account": [victim.username]})
