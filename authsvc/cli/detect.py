"""``authsvc detect``: anomaly detection over the audit trail."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from authsvc.anomaly.replay import ReplayError, read_events, replay
from authsvc.anomaly.settings import AnomalySettings
from authsvc.cli.common import config_option, fail, load_config, main

__all__ = ["detect_group"]


@main.group("detect")
def detect_group() -> None:
    """Anomaly detection: replay an exported log, run the consumer, list alerts."""


@detect_group.command("replay")
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="exported audit events (JSON Lines; - for stdin)",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="alerts as JSON Lines (default: stdout)",
)
@config_option
def detect_replay(input_path: Path, output_path: Path | None, config: Path | None) -> None:
    """Run every configured detector over EVENTS on a fresh in-memory state.

    The same input and configuration give byte-identical output."""
    settings = load_config(config).anomaly if config is not None else AnomalySettings()
    try:
        source = sys.stdin if str(input_path) == "-" else input_path.open(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {input_path}: {exc.strerror or exc}")
    try:
        out = sys.stdout if output_path is None else output_path.open("w", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output_path}: {exc.strerror or exc}")
    try:
        with source, out:
            read, written = replay(read_events(source, str(input_path)), settings, out.write)
    except ReplayError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{input_path}: not UTF-8 text: {exc}")
    except ValueError as exc:  # a geo database that cannot be read
        fail(str(exc), 2)
    click.echo(f"{read} events, {written} alerts", err=True)
