"""Guessing passwords: sprays, brute force, credential stuffing, a spray that works.

* ``slow_spray``: one password against 100-160 accounts from one address, one try every
  5-10 minutes (12 hours or more); about three quarters of the names are real.
* ``fast_spray``: one password against 30-60 accounts in 2-5 minutes, from one address
  or from many addresses of one /24.
* ``brute_force``: 200-800 passwords against one real account from one address, one
  every 1-8 seconds.
* ``credential_stuffing``: 1,000-3,000 leaked name/password pairs in 30-60 minutes from
  40-300 residential addresses (a botnet or a proxy service); most names are unknown.
* ``success_after_spray``: a spray of 20-60 accounts with a password some people here
  really use; one of them (who uses it) lets the attacker in, who then pulls their
  team's images with it.
"""

from __future__ import annotations

import random

from bench.detect.attacks.common import Cast, Planned, attacker_address, start_time
from bench.detect.clients import FAMILIES
from bench.detect.context import MINUTE, SECOND, Context
from bench.detect.emit import Request, password
from bench.detect.network import networks_of
from bench.detect.world import FIRST_NAMES, LAST_NAMES, WEAK_PASSWORD

__all__ = [
    "brute_force", "credential_stuffing", "fast_spray", "slow_spray", "success_after_spray",
]

_GUESSES = ("admin", "root", "test", "docker", "registry", "jenkins", "deploy", "ci",
            "gitlab", "build", "devops", "support", "backup", "dev", "administrator")
_TOOLS = FAMILIES["python-requests"] + FAMILIES["curl"] + FAMILIES["go-http"]


def _known(ctx: Context) -> set[str]:
    return {p.username for p in (*ctx.world.humans, *ctx.world.dormant)} | {
        r.name for r in ctx.world.robots}


def _targets(ctx: Context, rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    """``count`` account names: about three quarters real, the rest guesses."""
    real = sorted(_known(ctx) - exclude)
    names = rng.sample(real, min(len(real), round(count * 0.75)))
    guesses = list(_GUESSES) + [f"{f}.{last}" for f in FIRST_NAMES[:20] for last in LAST_NAMES[:20]]
    names += rng.sample(guesses, count - len(names))
    rng.shuffle(names)
    return names


def _spray(
    ctx: Context, rng: random.Random, cid: str, names: list[str], secret: str,
    addresses: list[str], t: int, gap: tuple[int, int],
) -> int:
    known = _known(ctx)
    agent = rng.choice(_TOOLS)
    for name in names:
        request = Request(rng.choice(addresses), agent, ())
        reason = "INVALID_CREDENTIALS" if name in known else "UNKNOWN_USER"
        ctx.recorder.refuse(t, password(name, secret), request, reason, campaign=cid)
        t += rng.randrange(*gap)
    return t


def slow_spray(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    count = rng.randint(100, 160)
    t = start_time(ctx, rng, count * 10 * MINUTE)
    ip = attacker_address(ctx, rng)
    names = _targets(ctx, rng, count, set(ctx.world.weak))
    _spray(ctx, rng, cid, names, f"spray:{cid}", [ip], t, (5 * MINUTE, 10 * MINUTE))
    return Planned(f"{count} accounts, one password, every 5-10 min", {"ip": [ip]})


def fast_spray(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    count = rng.randint(30, 60)
    t = start_time(ctx, rng, 10 * MINUTE)
    if rng.random() < 0.5:
        addresses = [attacker_address(ctx, rng)]
        how = "one address"
    else:
        subnet = ctx.alloc.subnet(rng.choice(networks_of("hosting")))
        addresses = sorted({subnet.address(rng) for _ in range(rng.randint(8, 40))})
        how = f"{len(addresses)} addresses of {subnet.cidr}"
    names = _targets(ctx, rng, count, set(ctx.world.weak))
    span = rng.randint(2, 5) * MINUTE // count
    _spray(ctx, rng, cid, names, f"spray:{cid}", addresses, t, (span // 2, span * 3 // 2))
    return Planned(f"{count} accounts in minutes from {how}", {"ip": addresses})


def brute_force(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    victim = cast.person(rng, ctx.world.humans, lambda p: True)
    count = rng.randint(200, 800)
    t = start_time(ctx, rng, count * 8 * SECOND)
    ip = attacker_address(ctx, rng)
    request = Request(ip, rng.choice(_TOOLS), ())
    for _ in range(count):
        guess = password(victim.username, f"guess:{rng.getrandbits(64):016x}")
        ctx.recorder.refuse(t, guess, request, "INVALID_CREDENTIALS", campaign=cid)
        t += rng.randrange(SECOND, 8 * SECOND)
    return Planned(f"{count} passwords against {victim.username}",
                   {"ip": [ip], "account": [victim.username]})


def credential_stuffing(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    count = rng.randint(1000, 3000)
    duration = rng.randint(30, 60) * MINUTE
    t = start_time(ctx, rng, duration)
    homes = networks_of("residential") + networks_of("mobile")
    bots = [ctx.alloc.address(rng.choice(homes)) for _ in range(rng.randint(40, 300))]
    known = sorted(_known(ctx) - set(ctx.world.weak))
    agents = FAMILIES["browser"] + FAMILIES["python-requests"]
    domains = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "mail.ru", "qq.com")
    for i in range(count):
        if rng.random() < 0.15:
            name, reason = rng.choice(known), "INVALID_CREDENTIALS"
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name = f"{first}.{last}{rng.randrange(100)}@{rng.choice(domains)}"
            reason = "UNKNOWN_USER"
        request = Request(rng.choice(bots), rng.choice(agents), ())
        secret = f"leak:{cid}:{i}:{rng.getrandbits(48):012x}"
        ctx.recorder.refuse(t + duration * i // count, password(name, secret), request, reason,
                            campaign=cid)
    return Planned(f"{count} leaked pairs from {len(bots)} addresses", {"ip": bots})


def success_after_spray(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    weak = set(ctx.world.weak)
    victim = cast.person(rng, ctx.world.humans, lambda p: p.username in weak)
    count = rng.randint(20, 60)
    gap = (5 * SECOND, 30 * SECOND)
    t = start_time(ctx, rng, count * gap[1] + 40 * MINUTE)
    ip = attacker_address(ctx, rng)
    names = _targets(ctx, rng, count - 1, weak | {victim.username})
    names.insert(rng.randrange(len(names) + 1), victim.username)
    known = _known(ctx)
    agent = rng.choice(_TOOLS)
    for name in names:
        request = Request(ip, agent, ())
        credential = password(name, WEAK_PASSWORD)
        if name == victim.username:
            ctx.recorder.grant(t, victim.principal, credential, request, campaign=cid)
        else:
            reason = "INVALID_CREDENTIALS" if name in known else "UNKNOWN_USER"
            ctx.recorder.refuse(t, credential, request, reason, campaign=cid)
        t += rng.randrange(*gap)
    skopeo = rng.choice(FAMILIES["skopeo"])
    team = ctx.world.namespaces[victim.team]
    for _ in range(rng.randint(5, 20)):
        t += rng.randrange(10 * SECOND, 2 * MINUTE)
        request = Request(ip, skopeo, (f"repository:{team.pick(rng)}:pull",))
        ctx.recorder.grant(t, victim.principal, password(victim.username, WEAK_PASSWORD),
                           request, campaign=cid)
    return Planned(f"{count} accounts, {victim.username} uses the password",
                   {"ip": [ip], "account": [victim.username]})
