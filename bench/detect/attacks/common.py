"""What the campaign generators share: casting victims, picking times and addresses."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.detect.context import DAY, HOUR, MINUTE, Context
from bench.detect.network import networks_of
from bench.detect.world import Human, Workload

__all__ = [
    "Cast", "Generator", "Planned", "attacker_address", "known_since", "settled", "start_time",
]


@dataclass(frozen=True)
class Planned:
    """What a generator says about the campaign it drafted."""

    description: str
    entities: dict[str, list[str]]


@dataclass
class Cast:
    """Who has already been a victim in this seed."""

    taken: set[str] = field(default_factory=set)

    def person(
        self, rng: random.Random, people: tuple[Human, ...], ok: Callable[[Human], bool]
    ) -> Human:
        choices = [p for p in people if p.username not in self.taken and ok(p)]
        if not choices:
            raise ValueError("the world is too small for this many campaigns")
        chosen = rng.choice(choices)
        self.taken.add(chosen.username)
        return chosen

    def workload(self, rng: random.Random, workloads: tuple[Workload, ...]) -> Workload:
        choices = [w for w in workloads if w.name not in self.taken]
        if not choices:
            raise ValueError("the world is too small for this many campaigns")
        chosen = rng.choice(choices)
        self.taken.add(chosen.name)
        return chosen


def start_time(
    ctx: Context, rng: random.Random, duration: int, victim: Human | None = None
) -> int:
    """A start after the warm-up (counted from the victim's first request, when there is
    a victim whose habits matter) that leaves the campaign and 15 min in the window."""
    first = ctx.start + ctx.warmup_days * DAY
    if victim is not None:
        first = max(first, known_since(ctx, victim) + ctx.warmup_days * DAY)
    last = ctx.end - duration - 15 * MINUTE
    if last <= first:
        raise ValueError(f"the window is too short for a campaign lasting {duration} ms")
    return rng.randrange(first, last)


def known_since(ctx: Context, person: Human) -> int:
    """When the person's first request was (the end of the window if there was none)."""
    return ctx.recorder.first_seen.get(person.principal.subject, ctx.end)


def settled(ctx: Context, person: Human, duration: int) -> bool:
    """Whether a campaign of ``duration`` against the person fits after their warm-up:
    detectors learn each principal's habits from its first request on."""
    return known_since(ctx, person) + ctx.warmup_days * DAY < ctx.end - duration - HOUR


def attacker_address(ctx: Context, rng: random.Random, residential: bool = False) -> str:
    """A fresh address at a hosting provider (or a residential ISP: a proxy, a laptop)."""
    kind = "residential" if residential else "hosting"
    return ctx.alloc.address(rng.choice(networks_of(kind)))


Generator = Callable[[Context, random.Random, str, "Cast"], Planned]
