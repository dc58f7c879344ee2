"""``authsvc detect``: anomaly detection over the audit trail."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click

from authsvc.anomaly.alerts import AlertFilter, jsonl_lines, table_lines
from authsvc.anomaly.replay import ReplayError, read_events, replay
from authsvc.anomaly.settings import AnomalySettings
from authsvc.audit.source import Filter, live_events, parse_when
from authsvc.cli.common import config_option, fail, load_config, main
from authsvc.errors import StoreUnavailable
from authsvc.store import open_store

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


@detect_group.command("run")
@config_option
@click.option("--consumer", "consumer_name", default=None,
              help="this consumer's name in the group (default: host:pid); a consumer "
                   "restarted under its old name first reads what it left unacknowledged")
@click.option("--batch", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="entries read at a time")
@click.option("--block-ms", type=click.IntRange(1, 60_000), default=1000, show_default=True,
              help="how long one read waits for new entries (also bounds the stop delay)")
@click.option("--min-idle", type=click.FloatRange(0.1, 86_400), default=30.0,
              show_default=True,
              help="seconds an entry stays pending with another consumer before this one "
                   "takes it over (anomaly.consumer_state: redis; with memory, the holder "
                   "takes over all pending entries)")
@click.option("--from-start", is_flag=True,
              help="a new group starts at the stream's first entry (default: its end); "
                   "an existing group keeps its position")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT",
              help="serve Prometheus metrics at http://HOST:PORT/metrics")
def detect_run(config: Path | None, consumer_name: str | None, batch: int, block_ms: int,
               min_idle: float, from_start: bool, metrics_bind: str | None) -> None:
    """Run the detectors over the live audit stream in Redis, as one consumer of the
    group anomaly.consumer_group, until SIGTERM or SIGINT."""
    from authsvc.anomaly.live import LiveConfigError, default_consumer_name, open_live
    from authsvc.anomaly.metrics import parse_bind

    settings = load_config(config)
    try:
        bind = parse_bind(metrics_bind) if metrics_bind is not None else None
    except ValueError as exc:
        fail(f"--metrics-bind: {exc}", 2)
    name = consumer_name or default_consumer_name()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        live = open_live(settings, consumer_name=name, batch=batch, block_ms=block_ms,
                         min_idle=min_idle, from_start=from_start, metrics_bind=bind)
    except LiveConfigError as exc:
        fail(str(exc), 2)
    except StoreUnavailable as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"--metrics-bind {metrics_bind}: {exc.strerror or exc}", 2)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer = live.consumer
    hook = settings.anomaly.webhook
    click.echo(
        f"authsvc: consumer {name} of group {consumer.stream.group} on {consumer.stream.key} "
        f"at redis {live.address}; {len(consumer.engine.detectors)} detectors; state: "
        f"{settings.anomaly.consumer_state}; webhook: "
        f"{hook.url if hook else 'none'}"
        + (f"; metrics: http://{metrics_bind}/metrics" if metrics_bind else ""),
        err=True,
    )
    failure = None
    try:
        consumer.run(stop)
    except StoreUnavailable as exc:
        failure = exc.message
    try:
        live.close()
    except Exception as exc:
        failure = failure or f"the audit log could not be sealed with a checkpoint: {exc}"
    metrics = consumer.metrics
    summary = (f"{metrics.count('events')} events, {sum(metrics.alerts().values())} alerts "
               f"recorded, {metrics.count('alerts_duplicate')} already recorded")
    if failure is not None:
        fail(f"stopped: {failure} [{summary}]")
    click.echo(f"authsvc: stopped: {summary}", err=True)


@detect_group.command("alerts")
@config_option
@click.option("--since", default=None, help="ISO 8601 (UTC unless a zone is given) or epoch s")
@click.option("--until", default=None, help="the same; the end is exclusive")
@click.option("--detector", default=None, help="one detector (e.g. password_spray)")
@click.option("--entity", default=None, help="one entity, exactly (e.g. ip:203.0.113.9)")
@click.option("--severity", type=click.Choice(["page", "signal"]), default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True)
def detect_alerts(config: Path | None, since: str | None, until: str | None,
                  detector: str | None, entity: str | None, severity: str | None,
                  fmt: str) -> None:
    """List the anomaly.alert events of the configured audit trail, oldest first."""
    from authsvc.anomaly.detectors import NAMES

    settings = load_config(config)
    if detector is not None and detector not in NAMES:
        fail(f"--detector: unknown detector {detector!r} (one of: {', '.join(NAMES)})", 2)
    try:
        wanted = AlertFilter(
            Filter(since_ms=parse_when(since) if since else None,
                   until_ms=parse_when(until) if until else None),
            detector=detector, entity=entity, severity=severity,
        )
    except ValueError as exc:
        fail(str(exc), 2)
    store = None
    if settings.audit.sink == "redis":
        if settings.storage.startswith("memory://"):
            fail("the audit trail is in the memory:// store, inside the server process: "
                 "list alerts from a redis:// store or a file sink", 2)
        store = open_store(settings.storage)

    def events() -> Iterator[dict[str, Any]]:
        yield from wanted.apply(live_events(settings, store))

    lines = jsonl_lines(events()) if fmt == "jsonl" else table_lines(events())
    try:
        for line in lines:
            sys.stdout.write(line)
    except StoreUnavailable as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the audit trail: {exc}")
    finally:
        if store is not None:
            store.close()
