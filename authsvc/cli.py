"""The ``authsvc`` command: serve, config check, keys, users, tokens.

Every refusal prints what was wrong on stderr and exits non-zero; no stack traces.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import NoReturn

import click

from authsvc.config import ENV_CONFIG, Settings, load_settings, load_yaml_text, parse_settings
from authsvc.errors import AuthsvcError, ConfigError, KeyRingError, StoreUnavailable
from authsvc.identity.sessions import Sessions
from authsvc.identity.static import PROVIDER as STATIC_PROVIDER
from authsvc.identity.static import hash_password
from authsvc.policy import Policy
from authsvc.policy.explain import as_json, build_identity, explain, render_text
from authsvc.store import open_store
from authsvc.tokens import KeyRing, generate_key, list_keys, retire, rotate

__all__ = ["main"]

DEFAULT_BIND = "127.0.0.1:5001"
DEMO_USER = "demo"


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"authsvc: {message}", err=True)
    sys.exit(code)


def _load(config: Path | None) -> Settings:
    path = config or (Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None)
    if path is None:
        _fail(f"no configuration: give --config FILE or set {ENV_CONFIG}", 2)
    try:
        return load_settings(path)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _embedded_default() -> tuple[Settings, str]:
    """The packaged example configuration plus a demo user with a fresh password."""
    text = resources.files("authsvc").joinpath("default_config.yaml").read_text("utf-8")
    data = load_yaml_text(text, source="embedded default")
    assert isinstance(data, dict)
    password = secrets.token_urlsafe(12)
    data.setdefault("identities", {}).setdefault("static", {})["users"] = {
        DEMO_USER: {"password_hash": hash_password(password), "groups": ["demo"]}
    }
    return parse_settings(data, base_dir=Path.cwd(), source=None), password


@click.group()
@click.version_option(package_name="authsvc")
def main() -> None:
    """authsvc: a token authorization service for container registries."""


# -- serve ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help=f"configuration file (default: ${ENV_CONFIG}, else the embedded default)",
)
@click.option("--bind", default=DEFAULT_BIND, show_default=True, help="HOST:PORT to listen on")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
def serve(config: Path | None, bind: str, workers: int, threads: int) -> None:
    """Run the token service under gunicorn."""
    from authsvc.server import Server

    password: str | None = None
    if config is None and not os.environ.get(ENV_CONFIG):
        settings, password = _embedded_default()
    else:
        settings = _load(config)
    if settings.storage.startswith("memory://") and workers > 1:
        _fail(
            "the memory:// store lives inside one process, so it cannot serve "
            f"{workers} workers: use --workers 1 (with --threads), or storage: redis://",
            2,
        )
    try:
        KeyRing.load(settings.keys.dir)
        generated = None
    except KeyRingError as exc:
        if password is None:
            _fail(f"{exc} (create one with `authsvc keys generate --dir {settings.keys.dir}`)", 2)
        generated = generate_key(settings.keys.dir, settings.keys.algorithm)
    if password is not None:
        lines = [
            "no configuration given (--config or AUTHSVC_CONFIG): running the EMBEDDED "
            "DEFAULT, for trying authsvc out — not for production.",
            "  storage:  memory:// (one process; sessions are lost on restart)",
            f"  keys:     {settings.keys.dir}"
            + (f" (generated development key {generated.id})" if generated else ""),
            f"  service:  {settings.services[0]}   realm: http://{bind}/token",
            f"  demo user: {DEMO_USER} / {password}   (a new password at every start)",
            f"  registry bundle: authsvc keys bundle --dir {settings.keys.dir}",
        ]
        click.echo("\n".join("authsvc: " + line for line in lines), err=True)
    try:
        open_store(settings.storage).ping()
    except StoreUnavailable as exc:
        _fail(f"storage: {exc.message}", 2)
    Server(settings, bind=bind, workers=workers, threads=threads).run()


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
        _fail(str(exc), 1)
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
    settings = _load(config)
    claims: dict[str, object] | None = None
    if claims_json is not None:
        try:
            parsed = json.loads(claims_json)
        except ValueError as exc:
            _fail(f"--claims is not valid JSON: {exc}", 2)
        if not isinstance(parsed, dict):
            _fail("--claims must be a JSON object", 2)
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
        _fail(exc.message, 2)
    if as_json_output:
        click.echo(json.dumps(as_json(identity, decision), indent=2))
    else:
        click.echo(render_text(identity, decision))


# -- keys -------------------------------------------------------------------------------


def _keys_dir(directory: Path | None, config: Path | None) -> Path:
    if directory is not None:
        return directory
    if config is not None or os.environ.get(ENV_CONFIG):
        return _load(config).keys.dir
    return Path("keys")


_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="key directory (default: keys.dir of --config, else ./keys)",
)
_config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="configuration file naming keys.dir",
)


@main.group("keys")
def keys_group() -> None:
    """Manage the signing key ring."""


@keys_group.command("generate")
@_dir_option
@_config_option
@click.option(
    "--algorithm",
    type=click.Choice(["ES256", "ES384", "ES512", "RS256"]),
    default="ES256",
    show_default=True,
)
def keys_generate(directory: Path | None, config: Path | None, algorithm: str) -> None:
    """Add a key: active if the ring has none, else staged (published, not yet signing)."""
    where = _keys_dir(directory, config)
    try:
        info = generate_key(where, algorithm)
    except (KeyRingError, ValueError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"{info.id} {info.algorithm} {info.state} kid={info.libtrust_kid}")
    if info.state == "staged":
        click.echo(
            "staged: publish `authsvc keys bundle` to the registry, then "
            "`authsvc keys rotate` to start signing with it",
            err=True,
        )


@keys_group.command("list")
@_dir_option
@_config_option
def keys_list(directory: Path | None, config: Path | None) -> None:
    """List the keys with their state, libtrust kid and RFC 7638 thumbprint."""
    try:
        infos = list_keys(_keys_dir(directory, config))
    except KeyRingError as exc:
        _fail(str(exc))
    for info in infos:
        click.echo(
            f"{info.id}\t{info.algorithm}\t{info.state}\t{info.libtrust_kid}\t{info.thumbprint}"
        )


@keys_group.command("rotate")
@_dir_option
@_config_option
def keys_rotate(directory: Path | None, config: Path | None) -> None:
    """Promote the newest staged key to signing (or make and activate a new one)."""
    try:
        info = rotate(_keys_dir(directory, config))
    except (KeyRingError, ValueError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"{info.id} {info.algorithm} active kid={info.libtrust_kid}")


@keys_group.command("retire")
@_dir_option
@_config_option
@click.argument("key_id")
def keys_retire(directory: Path | None, config: Path | None, key_id: str) -> None:
    """Stop publishing KEY_ID (tokens it signed stop verifying once registries reload)."""
    try:
        retire(_keys_dir(directory, config), key_id)
    except (KeyRingError, ValueError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"{key_id} retired")


@keys_group.command("bundle")
@_dir_option
@_config_option
def keys_bundle(directory: Path | None, config: Path | None) -> None:
    """Print the PEM certificate bundle for the registry's auth.token.rootcertbundle."""
    try:
        click.echo(KeyRing.load(_keys_dir(directory, config)).bundle_pem(), nl=False)
    except KeyRingError as exc:
        _fail(str(exc))


# -- users ------------------------------------------------------------------------------


@main.group("users")
def users_group() -> None:
    """Static users."""


@users_group.command("hash")
@click.option("--cost", type=click.IntRange(10, 16), default=12, show_default=True)
def users_hash(cost: int) -> None:
    """Read a password from stdin (first line) and print its bcrypt hash."""
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        _fail("no password on standard input")
    try:
        click.echo(hash_password(password, cost=cost))
    except ValueError as exc:
        _fail(str(exc))


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
        _fail(str(exc))
    click.echo(answer["refresh_token"])


# -- tokens (refresh-token sessions) ----------------------------------------------------


@main.group("tokens")
def tokens_group() -> None:
    """List and revoke refresh tokens (needs a shared store: redis://)."""


def _sessions(config: Path | None) -> Sessions:
    settings = _load(config)
    if settings.storage.startswith("memory://"):
        _fail(
            "the memory:// store lives inside the server process; "
            "manage refresh tokens from the command line with storage: redis://",
            2,
        )
    store = open_store(settings.storage)
    return Sessions(store, {})


@tokens_group.command("list")
@_config_option
@click.option("--subject", required=True, help="the user (or workload) the tokens belong to")
@click.option("--provider", default=STATIC_PROVIDER, show_default=True)
def tokens_list(config: Path | None, subject: str, provider: str) -> None:
    """List a subject's live refresh tokens (ids are hashes, never the tokens)."""
    try:
        sessions = _sessions(config).list(provider, subject, now=int(time.time()))
    except StoreUnavailable as exc:
        _fail(exc.message)
    for s in sessions:

        def ts(value: int | None) -> str:
            return "-" if value is None else datetime.fromtimestamp(value, UTC).isoformat()

        click.echo(
            f"{s.id}\t{s.client_id or '-'}\tcreated {ts(s.created)}\t"
            f"expires {ts(s.expires_at)}\tlast used {ts(s.last_used)}"
        )


@tokens_group.command("revoke")
@_config_option
@click.argument("ids", nargs=-1)
@click.option("--subject", default=None, help="revoke every token of this subject")
@click.option("--provider", default=STATIC_PROVIDER, show_default=True)
def tokens_revoke(
    config: Path | None, ids: tuple[str, ...], subject: str | None, provider: str
) -> None:
    """Revoke refresh tokens by id (or all of --subject's)."""
    if not ids and subject is None:
        _fail("name token ids or --subject", 2)
    try:
        sessions = _sessions(config)
        targets = list(ids)
        if subject is not None:
            targets += [s.id for s in sessions.list(provider, subject, now=int(time.time()))]
        missing = [t for t in targets if not sessions.revoke(t)]
    except StoreUnavailable as exc:
        _fail(exc.message)
    click.echo(f"revoked {len(targets) - len(missing)}")
    if missing:
        _fail(f"not found: {', '.join(missing)}")
