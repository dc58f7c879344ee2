"""`authsvc config check` and `authsvc policy explain`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from authsvc.cli.common import fail, load_config, main
from authsvc.config import ENV_CONFIG, load_settings
from authsvc.errors import AuthsvcError, ConfigError, KeyRingError
from authsvc.identity.static import PROVIDER as STATIC_PROVIDER
from authsvc.policy import Policy
from authsvc.policy.explain import as_json, build_identity, explain, render_text
from authsvc.tokens import KeyRing

# -- config -----------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Check configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print every problem with its field path and exit non-zero."""
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        fail(str(exc), 1)
    for warning in settings.warnings:
        click.echo(f"authsvc: warning: {warning}", err=True)
    try:
        KeyRing.load(settings.keys.dir)
    except KeyRingError as exc:
        click.echo(f"authsvc: warning: keys.dir: {exc}", err=True)
    click.echo(
        f"{file}: valid ({len(settings.rules)} rules, {len(settings.services)} services, "
        f"sha256 {settings.digest[:12]})"
    )



# -- policy -----------------------------------------------------------------------------


@main.group("policy")
def policy_group() -> None:
    """Inspect the rules."""


@policy_group.command("explain")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help=f"configuration file (default: ${ENV_CONFIG})")
@click.option("--account", default=None, help="the account asking")
@click.option("--group", "groups", multiple=True,
              help="a group of the account (repeatable; default: a static user's own)")
@click.option("--kind", type=click.Choice(["human", "robot", "ci"]), default=None)
@click.option("--provider", default=None, help="identity provider (default: static)")
@click.option("--claims", "claims_json", default=None, help="verified claims as a JSON object")
@click.option("--anonymous", is_flag=True, help="explain for an anonymous caller")
@click.option("--json", "as_json_output", is_flag=True, help="print JSON")
@click.argument("scopes", nargs=-1, required=True)
def policy_explain(
    config: Path | None, account: str | None, groups: tuple[str, ...], kind: str | None,
    provider: str | None, claims_json: str | None, anonymous: bool, as_json_output: bool,
    scopes: tuple[str, ...],
) -> None:
    """For each SCOPE and action: the decision and the rules behind it."""
    settings = load_config(config)
    claims: dict[str, object] | None = None
    if claims_json is not None:
        try:
            parsed = json.loads(claims_json)
        except ValueError as exc:
            fail(f"--claims is not valid JSON: {exc}", 2)
        if not isinstance(parsed, dict):
            fail("--claims must be a JSON object", 2)
        claims = parsed
    user = settings.identities.static.users.get(account or "")
    if user is not None and provider in (None, STATIC_PROVIDER):
        groups = groups or user.groups
        kind = kind or user.kind
    try:
        identity = build_identity(account=account, groups=groups, kind=kind, provider=provider,
                                  claims=claims, anonymous=anonymous)
        decision = explain(Policy(settings.rules), identity, scopes)
    except AuthsvcError as exc:
        fail(exc.message, 2)
    if as_json_output:
        click.echo(json.dumps(as_json(identity, decision), indent=2))
    else:
        click.echo(render_text(identity, decision))
