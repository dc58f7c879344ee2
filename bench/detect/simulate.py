"""One seed's audit log: benign traffic, attack campaigns, and their labels.

    python bench/detect/simulate.py --seed 1 [--days 14] [--out DIR]

writes DIR/events.jsonl (time-ordered ``authsvc.audit/1`` events, one a line) and
DIR/labels.json (``labels.py``). The same settings give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # `bench.*` when run as bench/detect/simulate.py

from bench.detect.attacks import EXPECTED, GENERATORS, Cast  # noqa: E402
from bench.detect.context import DAY, Context  # noqa: E402
from bench.detect.emit import Recorder  # noqa: E402
from bench.detect.labels import CampaignLabel, Labels, PatternLabel  # noqa: E402
from bench.detect.machines import simulate_machines  # noqa: E402
from bench.detect.network import RUNNER_NETWORKS  # noqa: E402
from bench.detect.people import simulate_people  # noqa: E402
from bench.detect.world import build_world  # noqa: E402

__all__ = ["Settings", "simulate"]


@dataclass(frozen=True)
class Settings:
    """What a simulation is made of; the seed decides everything else."""

    seed: int
    days: int = 14
    warmup_days: int = 7
    humans: int = 200
    teams: int = 10
    ci: int = 30
    campaigns_per_type: int = 3

    def __post_init__(self) -> None:
        if self.warmup_days < 1:
            raise ValueError(f"warmup_days: at least 1, not {self.warmup_days}")
        if self.days < self.warmup_days + 3:
            raise ValueError(f"days: at least warmup_days + 3 = {self.warmup_days + 3}, "
                             f"not {self.days}")
        if not 2 <= self.teams <= 10:
            raise ValueError(f"teams: 2 to 10, not {self.teams}")
        if self.humans < 5 * self.teams:
            raise ValueError(f"humans: at least 5 per team ({5 * self.teams}), "
                             f"not {self.humans}")
        if self.ci < 3 * self.campaigns_per_type:
            raise ValueError(f"ci: at least 3 per campaign of a type "
                             f"({3 * self.campaigns_per_type}), not {self.ci}")
        if self.campaigns_per_type < 0:
            raise ValueError(f"campaigns_per_type: not negative ({self.campaigns_per_type})")


def simulate(settings: Settings, events_path: Path) -> Labels:
    """Writes the events file and returns its labels."""
    world, alloc = build_world(
        settings.seed, humans=settings.humans, teams=settings.teams, ci=settings.ci,
        dormant=settings.campaigns_per_type + 6, weak=settings.campaigns_per_type + 2,
    )
    ctx = Context(settings.seed, settings.days, settings.warmup_days, world, alloc,
                  Recorder(settings.seed, world.policy_digest))
    simulate_people(ctx)
    simulate_machines(ctx)
    cast = Cast()
    planned = {}
    for kind in EXPECTED:
        for k in range(settings.campaigns_per_type):
            cid = f"{kind}-{k + 1}"
            planned[cid] = (kind, GENERATORS[kind](ctx, ctx.stream("campaign", cid), cid, cast))
    campaign_events: dict[str, list[tuple[str, int]]] = {cid: [] for cid in planned}
    pattern_events: dict[str, list[tuple[str, int]]] = {}
    count = 0
    with events_path.open("w", encoding="utf-8", newline="\n") as out:
        for event_id, line, draft in ctx.recorder.lines(ctx.stream("event-ids")):
            out.write(line)
            count += 1
            if draft.campaign is not None:
                campaign_events[draft.campaign].append((event_id, draft.time))
            elif draft.pattern is not None:
                pattern_events.setdefault(draft.pattern, []).append((event_id, draft.time))
    campaigns = []
    for cid, (kind, plan) in planned.items():
        events = campaign_events[cid]
        campaigns.append(CampaignLabel(
            id=cid, type=kind, start=events[0][1], end=events[-1][1], expected=EXPECTED[kind],
            description=plan.description, entities=plan.entities,
            event_ids=tuple(e for e, _ in events),
        ))
    patterns = []
    for pid, (name, entity) in ctx.recorder.patterns.items():
        events = pattern_events.get(pid, [])
        if events:
            patterns.append(PatternLabel(pid, name, entity, events[0][1], events[-1][1],
                                         tuple(e for e, _ in events)))
    return Labels(
        seed=settings.seed, days=settings.days, window_start=ctx.start,
        window_end=ctx.start + settings.days * DAY, events=count,
        runner_networks=RUNNER_NETWORKS, campaigns=tuple(campaigns),
        patterns=tuple(patterns),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--campaigns-per-type", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/detect/results/seed-1"))
    args = parser.parse_args(argv)
    settings = Settings(args.seed, days=args.days, campaigns_per_type=args.campaigns_per_type)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = simulate(settings, args.out / "events.jsonl")
    labels.write(args.out / "labels.json")
    print(f"{labels.events} events ({labels.benign_events} benign), "
          f"{len(labels.campaigns)} campaigns -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
