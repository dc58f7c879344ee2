"""`authsvc audit verify` and `authsvc audit export`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from authsvc.audit.source import Filter, live_events, parse_when
from authsvc.audit.verify import public_keys, read_jsonl, verify_events
from authsvc.cli.common import config_option, fail, load_config, main
from authsvc.config import Settings
from authsvc.errors import KeyRingError, StoreUnavailable
from authsvc.store import open_store
from authsvc.tokens import KeyRing


@main.group("audit")
def audit_group() -> None:
    """Verify and export the audit trail."""


def _live_events(settings: Settings) -> Iterator[dict[str, Any]]:
    store = None
    if settings.audit.sink == "redis":
        if settings.storage.startswith("memory://"):
            fail("the memory:// store lives inside the server process; read the audit "
                 "trail from a redis:// store or a file (or GET /audit/export)", 2)
        store = open_store(settings.storage)
    return live_events(settings, store)


@audit_group.command("verify")
@config_option
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--partial", is_flag=True,
              help="the events are an excerpt (a time-filtered export): writers may start "
                   "mid-chain")
def audit_verify(config: Path | None, files: tuple[Path, ...], partial: bool) -> None:
    """Check hash chains, sequences and signed checkpoints of FILES (JSON Lines), or of
    the configured sink; name the first bad event and exit non-zero."""
    settings = load_config(config)
    try:
        keys = public_keys(KeyRing.load(settings.keys.dir))
    except KeyRingError as exc:
        fail(f"cannot check checkpoint signatures without the key ring: {exc}", 2)

    def events() -> Iterator[dict[str, Any]]:
        if files:
            for path in files:
                yield from read_jsonl(path)
        else:
            yield from _live_events(settings)

    try:
        report = verify_events(events(), keys=keys, allow_partial=partial)
    except StoreUnavailable as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot read the audit trail: {exc}")
    summary = (f"{report.events} events, {report.writers} writers, {report.checkpoints} "
               f"checkpoints, {report.uncovered} after the last checkpoint")
    problem = report.first_problem
    if problem is not None:
        fail(f"FAILED at event {problem.position} ({problem.event_id}, writer {problem.writer}, "
             f"seq {problem.seq}): {problem.code}: {problem.message} [{summary}]")
    click.echo(f"ok: {summary}")


@audit_group.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "ocsf", "ecs"]),
              default="jsonl", show_default=True)
@click.option("--since", default=None, help="ISO 8601 (UTC unless a zone is given) or epoch s")
@click.option("--until", default=None, help="the same; the end is exclusive")
@click.option("--actor", default=None, help="subject, account or user name")
@click.option("--repository", default=None, help="a repository named in the requested scopes")
@click.option("--outcome", type=click.Choice(["success", "partial", "failure"]), default=None)
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="a file (default: standard output)")
def audit_export(config: Path | None, fmt: str, since: str | None, until: str | None,
                 actor: str | None, repository: str | None, outcome: str | None,
                 output: Path | None) -> None:
    """Export the audit trail as JSON Lines, CSV, OCSF 1.8.0 or ECS (streamed)."""
    from authsvc.audit.formats import FORMATS

    settings = load_config(config)
    try:
        wanted = Filter(
            since_ms=parse_when(since) if since else None,
            until_ms=parse_when(until) if until else None,
            actor=actor, repository=repository, outcome=outcome,
        )
    except ValueError as exc:
        fail(str(exc), 2)
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    count = 0
    try:
        def counted() -> Iterator[dict[str, Any]]:
            nonlocal count
            for event in wanted.apply(_live_events(settings)):
                count += 1
                if output is not None and count % 100_000 == 0:
                    click.echo(f"authsvc: {count} events exported", err=True)
                yield event

        for chunk in FORMATS[fmt](counted()):
            out.write(chunk)
    except StoreUnavailable as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(f"export failed: {exc}")
    finally:
        if output is not None:
            out.close()
    if output is not None:
        click.echo(f"authsvc: {count} events exported to {output}", err=True)
