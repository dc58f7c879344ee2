"""CI credentials out of place: used off the runners, or replayed.

* ``ci_outside_runners``: a CI identity's proof (an OIDC token, a signed AWS request)
  exchanged from a residential address instead of a runner, and the session used to
  pull and push the team's images.
* ``proof_reuse``: a job runs normally on a runner; 2-60 minutes later its proof
  (copied from a log or an artefact) is presented again for an exchange from somewhere
  else, 1-4 times; authsvc refuses each as TOKEN_REPLAYED. The job itself is benign:
  only the replays are the campaign's.
"""

from __future__ import annotations

import random

from bench.detect.attacks.common import Cast, Planned, attacker_address, start_time
from bench.detect.clients import FAMILIES
from bench.detect.context import MINUTE, SECOND, Context
from bench.detect.emit import EXCHANGE, Request, proof
from bench.detect.machines import run_job

__all__ = ["ci_outside_runners", "proof_reuse"]


def ci_outside_runners(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    w = cast.workload(rng, ctx.world.ci)
    t = start_time(ctx, rng, 30 * MINUTE)
    ip = attacker_address(ctx, rng, residential=True)
    agent = rng.choice(FAMILIES["docker-darwin"] + FAMILIES["docker-linux"] + FAMILIES["curl"])
    run_job(ctx, w, rng, t, ip, campaign=cid, agent=agent)
    return Planned(f"{w.name}'s proof exchanged from a home network",
                   {"ip": [ip], "account": [w.principal.account or w.name]})


def proof_reuse(ctx: Context, rng: random.Random, cid: str, cast: Cast) -> Planned:
    w = cast.workload(rng, ctx.world.ci)
    t = start_time(ctx, rng, 2 * 60 * MINUTE)
    job = run_job(ctx, w, rng, t, w.network_address(rng))
    ip = attacker_address(ctx, rng, residential=rng.random() < 0.5)
    agent = rng.choice(FAMILIES["curl"] + FAMILIES["python-requests"] + FAMILIES["go-http"])
    scope = f"repository:{ctx.world.namespaces[w.team].pick(rng)}:pull,push"
    request = Request(ip, agent, (scope,), EXCHANGE)
    t = job.end + rng.randrange(2 * MINUTE, 60 * MINUTE)
    for _ in range(rng.randint(1, 4)):
        ctx.recorder.refuse(t, proof(job.proof), request, "TOKEN_REPLAYED",
                            provider=job.principal.provider, claims=job.claims, campaign=cid)
        t += rng.randrange(5 * SECOND, 2 * MINUTE)
    return Planned(f"a {w.name} job's proof replayed from elsewhere",
                   {"ip": [ip], "account": [w.principal.account or w.name]})
