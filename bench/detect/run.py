"""Detector quality: simulate seeds, replay the detectors over them, score, report.

    python bench/detect/run.py [--seeds 5] [--days 14] [--out DIR] [--config FILE]

For each seed: ``simulate.py`` writes the events and labels, ``python -m authsvc detect
replay`` runs every detector over the events with the simulation's configuration
(``sim.yaml``, see :func:`sim_config`; ``--config FILE`` is merged over it, for tuning),
and ``score.py`` scores the alerts. The report (``report.md``, ``report.json``) covers
all seeds; the exit status is 1 when a detector is below its target, 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))  # `bench.*` when run as bench/detect/run.py

from authsvc.anomaly.settings import AnomalySettings  # noqa: E402
from bench.detect.context import DAY, WINDOW_START  # noqa: E402
from bench.detect.emit import SERVICE  # noqa: E402
from bench.detect.labels import Labels  # noqa: E402
from bench.detect.network import RUNNER_NETWORKS, networks_of  # noqa: E402
from bench.detect.report import build_report, markdown  # noqa: E402
from bench.detect.score import SeedScore, describe_events, read_alerts, score  # noqa: E402
from bench.detect.simulate import Settings, simulate  # noqa: E402

__all__ = ["sim_config"]

#: false alerts per detector whose events are looked up for the report's examples
_DESCRIBED = 20


def sim_config(labels: Labels, warmup_days: int) -> dict[str, Any]:
    """The configuration the detectors run with: the runner networks and offices
    declared, as an operator would. The log starts with the dormant accounts' activity
    months before the window, and ``first_time_push`` learns from the first event of
    the log: its learning is stretched to the end of the warm-up so that it learns
    from everyone's traffic, as it would have in months of operation."""
    first = min((p.start for p in labels.patterns), default=labels.window_start)
    first = min([first, *(c.start for c in labels.campaigns), labels.window_start])
    learning = (WINDOW_START + warmup_days * DAY - first) // 1000
    return {
        "services": [SERVICE],
        "anomaly": {
            "networks": {
                "runners": list(RUNNER_NETWORKS),
                "offices": [n.cidr for n in networks_of("office")],
            },
            "detectors": {
                "ci_outside_ci": {"runner_networks": ["runners"]},
                "first_time_push": {"learning": max(learning, 7 * 86_400)},
            },
        },
    }


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _severities(config: Mapping[str, Any]) -> dict[str, str]:
    detectors = AnomalySettings.model_validate(config.get("anomaly") or {}).detectors
    return {
        name: getattr(detectors, name).severity
        for name in type(detectors).model_fields
        if getattr(detectors, name).enabled
    }


def _run_seed(
    settings: Settings, out: Path, overrides: Mapping[str, Any], keep: bool
) -> tuple[SeedScore, dict[str, Any], dict[str, dict[str, Any]]]:
    out.mkdir(parents=True, exist_ok=True)
    events, alerts, config_path = out / "events.jsonl", out / "alerts.jsonl", out / "sim.yaml"
    began = time.monotonic()
    labels = simulate(settings, events)
    labels.write(out / "labels.json")
    simulated = time.monotonic() - began
    config = _merge(sim_config(labels, settings.warmup_days), overrides)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "authsvc", "detect", "replay", "--input", str(events),
         "--output", str(alerts), "--config", str(config_path)],
        check=True, cwd=_REPO,
    )
    replayed = time.monotonic() - began
    result = score(labels, read_alerts(alerts))
    wanted: set[str] = set()
    per_detector: dict[str, int] = {}
    for alert in result.false_alerts:
        if per_detector.get(alert.detector, 0) < _DESCRIBED:
            per_detector[alert.detector] = per_detector.get(alert.detector, 0) + 1
            wanted.update(alert.event_ids[:2])
    described = describe_events(events, wanted)
    if not keep:
        events.unlink()
    timing = {"seed": settings.seed, "events": labels.events,
              "simulate_s": round(simulated, 1), "replay_s": round(replayed, 1),
              "events_per_s": round(labels.events / replayed) if replayed else None}
    print(f"seed {settings.seed}: {labels.events} events simulated in {simulated:.1f} s, "
          f"replayed in {replayed:.1f} s", file=sys.stderr)
    return result, timing, described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=14, help="simulated days per seed")
    parser.add_argument("--warmup-days", type=int, default=7,
                        help="days before the first campaign (the detectors' learning)")
    parser.add_argument("--campaigns-per-type", type=int, default=3)
    parser.add_argument("--out", type=Path, default=_REPO / "bench/detect/results")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML merged over the simulation's configuration")
    parser.add_argument("--keep-events", action="store_true",
                        help="keep each seed's events.jsonl (about 120 MB each)")
    args = parser.parse_args(argv)
    overrides: Mapping[str, Any] = {}
    if args.config is not None:
        overrides = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    try:
        runs = [
            _run_seed(
                Settings(seed, days=args.days, warmup_days=args.warmup_days,
                         campaigns_per_type=args.campaigns_per_type),
                args.out / f"seed-{seed}", overrides, args.keep_events,
            )
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        config = yaml.safe_load((args.out / f"seed-{args.first_seed}/sim.yaml").read_text())
        severities = _severities(config)
    except (subprocess.CalledProcessError, ValueError, OSError) as exc:
        print(f"bench/detect: could not run: {exc}", file=sys.stderr)
        return 2
    described: dict[str, dict[str, Any]] = {}
    for _, _, seen in runs:
        described.update(seen)
    report = build_report([r for r, _, _ in runs], severities, described)
    report.data["timing"] = [t for _, t, _ in runs]
    report.data["settings"] = {"days": args.days, "warmup_days": args.warmup_days,
                               "campaigns_per_type": args.campaigns_per_type}
    table = markdown(report, days=args.days)
    (args.out / "report.json").write_text(json.dumps(report.data, indent=1) + "\n")
    (args.out / "report.md").write_text(table)
    print(table)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
