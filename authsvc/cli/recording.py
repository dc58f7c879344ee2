"""The audit trail of the commands that change credentials and keys.

``authsvc tokens revoke`` and ``authsvc keys generate|rotate|retire`` record each change
as one event through the configured pipeline (``build_audit``: chain, spool, sink), as
a writer of their own (host:pid), and close it when they are done, which seals their
events with a signed checkpoint. The change is the fact, so it is made first and
recorded after: when the audit log refuses the event, the command says that the change
was made but not recorded, and exits 1. The actor is the operator: the login name
(``getpass.getuser()``) and the numeric uid, which the environment cannot change.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import click

from authsvc.audit import new_event_id
from authsvc.audit.build import build_audit
from authsvc.audit.chain import ChainedAuditLog
from authsvc.audit.schema import SCHEMA
from authsvc.cli.common import fail
from authsvc.config import ENV_CONFIG, Settings
from authsvc.store import Store, open_store
from authsvc.tokens import KeyRing

__all__ = ["OPERATOR", "audit_trail", "operator", "record"]

#: ``actor.kind`` of a person at the command line.
OPERATOR: Final = "operator"


def operator() -> dict[str, Any]:
    """Who runs this command: ``{"kind": "operator", "subject": <login name>, "uid"}``."""
    uid = os.getuid()
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's arbitrary uid)
        name = str(uid)
    return {"kind": OPERATOR, "subject": name, "uid": uid}


@contextmanager
def audit_trail(
    settings: Settings | None, *, store: Store | None = None
) -> Iterator[ChainedAuditLog | None]:
    """The configured audit pipeline for one command, closed (sealed) when it is done;
    None when there is no configuration to find it in."""
    if settings is None:
        yield None
        return
    if (
        store is None
        and settings.audit.sink == "redis"
        and settings.storage.startswith("memory://")
    ):
        fail(
            "the audit trail is in the memory:// store, inside the server process: "
            "this command cannot record there; nothing was changed",
            2,
        )
    directory = settings.keys.dir
    audit, _ = build_audit(
        settings.audit,
        store=store or open_store(settings.storage),
        signer=lambda: KeyRing.load(directory).signing_key,
    )
    try:
        yield audit
    finally:
        try:
            audit.close()
        except Exception as exc:  # the events are recorded; only their seal is missing
            click.echo(
                f"authsvc: warning: the audit events of this command are recorded but not "
                f"sealed by a signed checkpoint: {exc}",
                err=True,
            )


def record(
    audit: ChainedAuditLog | None,
    kind: str,
    reason: str,
    members: Mapping[str, Any],
    *,
    change: str,
) -> None:
    """Record one change the operator made (``kind`` is the event type); exit 1 if the
    audit log refuses it. ``change`` says what was done ("key K now signs"), for the
    message that it was done but not recorded."""
    if audit is None:
        click.echo(
            f"authsvc: {change}; not recorded in an audit trail: no configuration names one "
            f"(give --config or set {ENV_CONFIG})",
            err=True,
        )
        return
    event = {
        "schema": SCHEMA,
        "event_id": new_event_id(),
        "time": int(time.time() * 1000),
        "type": kind,
        "outcome": "success",
        "reason": reason,
        "actor": operator(),
        **members,
    }
    try:
        audit.record(event)
    except Exception as exc:
        fail(f"{change}, but the audit trail did not record it: {exc}")
