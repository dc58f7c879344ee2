"""Machines' benign traffic: CI jobs and release days, deploy robots, anonymous pulls.

A CI job (on a runner network, a new runner address each time) exchanges its one-time
proof (an OIDC token, or a signed AWS request) for a session, pulls its base images
and pushes what it built; a few jobs re-send the exchange when the answer was lost,
which authsvc refuses as TOKEN_REPLAYED (the benign pattern ``exchange_retry``). Once
a week each CI identity has a release (``release_burst``): one job pushes every
repository it builds, within half an hour, and the deploy robots roll the new images
out (``release_rollout``: many distinct pulls in an hour, the staging cluster first).
Between releases the deploy robots pull around the clock from their clusters' NAT
addresses, and outside consumers pull ``public/`` images anonymously.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from bench.detect.clients import FAMILIES
from bench.detect.context import DAY, HOUR, MINUTE, SECOND, Context
from bench.detect.emit import (
    ANONYMOUS,
    EXCHANGE,
    NO_CREDENTIAL,
    Credential,
    Request,
    password,
    proof,
    refresh,
)
from bench.detect.policy import Principal
from bench.detect.world import Workload

__all__ = ["Job", "job_identity", "run_job", "simulate_machines"]

_RETRY_RATE = 0.003


@dataclass(frozen=True)
class Job:
    """What a job presented (for a campaign that replays its proof)."""

    end: int
    proof: str
    principal: Principal
    claims: dict[str, str]


def simulate_machines(ctx: Context) -> None:
    releases: list[tuple[int, tuple[str, ...]]] = []
    for workload in ctx.world.ci:
        releases += _ci(ctx, workload, ctx.stream("ci", workload.name))
    for robot in ctx.world.robots:
        _robot(ctx, robot, ctx.stream("robot", robot.name), sorted(releases))
    _public(ctx, ctx.stream("public"))


def _team_tz(ctx: Context, team: str) -> int:
    for person in ctx.world.humans:
        if person.team == team:
            return person.tz_minutes
    return 0


def _ci(ctx: Context, w: Workload, rng: random.Random) -> list[tuple[int, tuple[str, ...]]]:
    tz = _team_tz(ctx, w.team)
    releases = []
    for day in range(ctx.days):
        weekday = day % 7
        midnight = ctx.start + day * DAY - tz * MINUTE
        jobs = w.jobs_per_day if weekday < 5 else w.jobs_per_day // 6
        for _ in range(max(0, int(rng.gauss(jobs, jobs * 0.25)))):
            if rng.random() < 0.8:
                t = midnight + rng.randrange(8 * 60, 19 * 60) * MINUTE
            else:  # scheduled builds at 02:00 UTC
                t = ctx.start + day * DAY + 2 * HOUR + rng.randrange(90) * MINUTE
            run_job(ctx, w, rng, t, w.network_address(rng))
        if weekday == w.release_weekday:
            t = midnight + rng.randrange(14 * 60, 17 * 60) * MINUTE
            pid = ctx.recorder.pattern("release_burst", f"ci:{w.name}")
            job = run_job(ctx, w, rng, t, w.network_address(rng), release=True, pattern=pid)
            releases.append((job.end, w.repos))
    return releases


def job_identity(
    w: Workload, rng: random.Random, *, release: bool = False
) -> tuple[Principal, dict[str, str]]:
    """The identity and audited claims of one job of ``w``."""
    claims = dict(w.claims)
    principal = w.principal
    jti = f"{rng.getrandbits(96):024x}"
    if w.principal.provider in ("github", "gitlab"):
        roll = rng.random()
        branch = "main" if roll < 0.75 and not release else f"feature-{rng.randrange(900)}"
        tag = f"v{rng.randint(1, 9)}.{rng.randrange(30)}.{rng.randrange(10)}"
        if w.principal.provider == "github":
            ref = f"refs/tags/{tag}" if release else f"refs/heads/{branch}"
            claims.update(ref=ref, workflow="release" if release else "build", jti=jti,
                          run_id=str(rng.randrange(10**9, 10**10)))
            subject = f"repo:{claims['repository']}:ref:{ref}"
        else:
            kind, ref = ("tag", tag) if release else ("branch", branch)
            claims.update(ref=ref, ref_type=kind, jti=jti,
                          pipeline_id=str(rng.randrange(10**8, 10**9)))
            subject = f"project_path:{claims['project_path']}:ref_type:{kind}:ref:{ref}"
        principal = replace(principal, subject=subject, account=subject)
    else:
        session = f"job-{rng.randrange(10**6):06d}"
        claims.update(
            arn=f"arn:aws:sts::210987654321:assumed-role/{claims['role']}/{session}",
            session_name=session,
        )
    return principal, claims


def run_job(
    ctx: Context, w: Workload, rng: random.Random, t: int, ip: str, *, release: bool = False,
    pattern: str | None = None, campaign: str | None = None,
    scopes: tuple[str, ...] | None = None, agent: str | None = None, span: int | None = None,
) -> Job:
    """One job: the exchange, base image pulls, its pushes (or the given scopes)."""
    principal, claims = job_identity(w, rng, release=release)
    ns = ctx.world.namespaces
    agent = agent or rng.choice(FAMILIES[w.family])
    secret = f"proof:{w.name}:{rng.getrandbits(96):024x}"
    bases = tuple(f"repository:{ns['base'].pick(rng)}:pull" for _ in range(rng.randint(1, 3)))
    bases += tuple(f"repository:{ns['tools'].pick(rng)}:pull" for _ in range(rng.randint(0, 2)))
    exchange = Request(ip, agent, bases[:1], EXCHANGE)
    ctx.recorder.grant(t, principal, proof(secret), exchange, claims=claims,
                       campaign=campaign, pattern=pattern)
    if campaign is None and rng.random() < _RETRY_RATE:
        retry = ctx.recorder.pattern("exchange_retry", f"ci:{w.name}")
        ctx.recorder.refuse(t + rng.randrange(SECOND, 3 * SECOND), proof(secret), exchange,
                            "TOKEN_REPLAYED", provider=principal.provider, claims=claims,
                            pattern=retry)
    session = refresh(f"rt:{secret}")
    if scopes is None:
        pushed = w.repos if release else tuple(rng.sample(w.repos, rng.choice((1, 1, 2))))
        scopes = bases[1:] + tuple(f"repository:{r}:pull,push" for r in pushed)
    if span is None:
        span = 25 * MINUTE if release else 6 * MINUTE
    step = span // max(1, len(scopes))
    for scope in scopes:
        t += rng.randrange(SECOND, max(2 * SECOND, step))
        request = Request(ip, agent, (scope,), "refresh_token", "docker")
        ctx.recorder.grant(t, principal, session, request, claims=claims,
                           campaign=campaign, pattern=pattern)
    return Job(t, secret, principal, claims)


def _robot(
    ctx: Context, robot: Workload, rng: random.Random,
    releases: list[tuple[int, tuple[str, ...]]],
) -> None:
    nat = [robot.network_address(rng) for _ in range(3)]
    credential = password(robot.name, robot.password)
    agent = rng.choice(FAMILIES[robot.family])
    teams = ctx.world.teams
    rate = 5 if robot.name.endswith("prod") else 2
    t = ctx.start
    while t < ctx.end:  # steady pulls: rescheduled pods, node scale-ups
        t += int(rng.expovariate(rate / HOUR))
        repo = ctx.world.namespaces[rng.choice(teams)].pick(rng)
        _pull(ctx, robot.principal, credential, rng.choice(nat), agent, repo, t)
    lag = HOUR if robot.name.endswith("prod") else 5 * MINUTE
    for done, repos in releases:
        pid = ctx.recorder.pattern("release_rollout", f"robot:{robot.name}")
        t = done + lag + rng.randrange(20 * MINUTE)
        for repo in repos:
            t += rng.randrange(2 * SECOND, 40 * SECOND)
            _pull(ctx, robot.principal, credential, rng.choice(nat), agent, repo, t, pid)


def _pull(
    ctx: Context, principal: Principal, credential: Credential, ip: str, agent: str,
    repo: str, t: int, pattern: str | None = None,
) -> None:
    request = Request(ip, agent, (f"repository:{repo}:pull",), "password")
    ctx.recorder.grant(t, principal, credential, request, pattern=pattern)


def _public(ctx: Context, rng: random.Random) -> None:
    public = ctx.world.namespaces["public"]
    agents = FAMILIES["containerd"] + FAMILIES["docker-linux"]
    for ip in ctx.world.public_consumers:
        agent = rng.choice(agents)
        for day in range(ctx.days):
            if rng.random() < 0.25:
                t = ctx.start + day * DAY + rng.randrange(DAY)
                for _ in range(rng.randint(1, 3)):
                    t += rng.randrange(SECOND, 30 * SECOND)
                    request = Request(ip, agent, (f"repository:{public.pick(rng)}:pull",))
                    ctx.recorder.grant(t, ANONYMOUS, NO_CREDENTIAL, request)
