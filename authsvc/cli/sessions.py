"""`authsvc tokens ...` (refresh-token sessions) and `authsvc login oidc` (in CI).

`authsvc tokens revoke` records each revocation as one ``credential.revoke`` event
(``authsvc.cli.recording``), a session that is not there as a failure (``NOT_FOUND``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from authsvc.audit.sinks import AuditUnavailable
from authsvc.cli.common import config_option, fail, load_config, main
from authsvc.cli.recording import audit_trail, operator
from authsvc.config import Settings
from authsvc.errors import StoreUnavailable
from authsvc.identity.sessions import Sessions
from authsvc.identity.static import PROVIDER as STATIC_PROVIDER
from authsvc.store import Store, open_store

# -- tokens (refresh-token sessions) ----------------------------------------------------


@main.group("tokens")
def tokens_group() -> None:
    """List and revoke refresh tokens (needs a shared store: redis://)."""


def _store(settings: Settings) -> Store:
    if settings.storage.startswith("memory://"):
        fail(
            "the memory:// store lives inside the server process; "
            "manage refresh tokens from the command line with storage: redis://",
            2,
        )
    return open_store(settings.storage)


@tokens_group.command("list")
@config_option
@click.option("--subject", required=True, help="the user (or workload) the tokens belong to")
@click.option("--provider", default=STATIC_PROVIDER, show_default=True)
def tokens_list(config: Path | None, subject: str, provider: str) -> None:
    """List a subject's live refresh tokens (ids are hashes, never the tokens)."""
    store = _store(load_config(config))
    try:
        sessions = Sessions(store, {}).list(provider, subject, now=int(time.time()))
    except StoreUnavailable as exc:
        fail(exc.message)
    for s in sessions:

        def ts(value: int | None) -> str:
            return "-" if value is None else datetime.fromtimestamp(value, UTC).isoformat()

        click.echo(
            f"{s.id}\t{s.client_id or '-'}\tcreated {ts(s.created)}\t"
            f"expires {ts(s.expires_at)}\tlast used {ts(s.last_used)}"
        )


@tokens_group.command("revoke")
@config_option
@click.argument("ids", nargs=-1)
@click.option("--subject", default=None, help="revoke every token of this subject")
@click.option("--provider", default=STATIC_PROVIDER, show_default=True)
def tokens_revoke(
    config: Path | None, ids: tuple[str, ...], subject: str | None, provider: str
) -> None:
    """Revoke refresh tokens by id (or all of --subject's)."""
    if not ids and subject is None:
        fail("name token ids or --subject", 2)
    settings = load_config(config)
    store = _store(settings)
    by = operator()
    revoked, missing = 0, []
    with audit_trail(settings, store=store) as audit:
        sessions = Sessions(store, {}, audit=audit)
        try:
            targets = list(ids)
            if subject is not None:
                targets += [s.id for s in sessions.list(provider, subject, now=int(time.time()))]
            for target in targets:
                if sessions.revoke(target, by=by):
                    revoked += 1
                else:
                    missing.append(target)
        except StoreUnavailable as exc:
            fail(exc.message)
        except AuditUnavailable as exc:
            # Each further revocation would go unrecorded too: stop here.
            untried = len(targets) - revoked - len(missing) - 1
            fail(f"{exc.message}; {revoked} revoked and recorded before it, {untried} not tried")
    click.echo(f"revoked {revoked}")
    if missing:
        fail(f"not found: {', '.join(missing)}")


# -- login (in CI) ----------------------------------------------------------------------


@main.group("login")
def login_group() -> None:
    """Log in from a CI job without a stored password."""


@login_group.command("oidc")
@click.option("--registry", default=None,
              help="registry host (or URL): authsvc's realm and service are read from its "
                   "challenge")
@click.option("--realm", default=None, help="authsvc's token URL (instead of --registry)")
@click.option("--service", default=None, help="the registry's service name (with --realm)")
@click.option("--source", default="github", show_default=True,
              help="where the job's ID token comes from: github, env:VAR or file:PATH")
@click.option("--audience", default=None, help="the audience to ask GitHub for")
@click.option("--scope", "scopes", multiple=True, help="scopes for the first token (optional)")
def login_oidc(registry: str | None, realm: str | None, service: str | None, source: str,
               audience: str | None, scopes: tuple[str, ...]) -> None:
    """Exchange the job's OIDC token once; print the session credential for
    `docker login -u '<token>' --password-stdin`."""
    from authsvc import login

    try:
        if registry is not None:
            challenge = login.discover(registry)
        elif realm is not None and service is not None:
            challenge = login.Challenge(realm, service)
        else:
            raise login.LoginError("give --registry, or --realm and --service")
        token = login.read_platform_token(source, audience=audience)
        answer = login.exchange(challenge, token, scopes=list(scopes))
    except login.LoginError as exc:
        fail(str(exc))
    click.echo(answer["refresh_token"])
