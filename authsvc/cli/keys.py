"""`authsvc keys ...` and `authsvc users hash`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from authsvc.cli.common import config_option, dir_option, fail, keys_dir, main
from authsvc.errors import KeyRingError
from authsvc.identity.static import hash_password
from authsvc.tokens import KeyRing, generate_key, list_keys, retire, rotate

# -- keys -------------------------------------------------------------------------------


@main.group("keys")
def keys_group() -> None:
    """Manage the signing key ring."""


@keys_group.command("generate")
@dir_option
@config_option
@click.option(
    "--algorithm",
    type=click.Choice(["ES256", "ES384", "ES512", "RS256"]),
    default="ES256",
    show_default=True,
)
def keys_generate(directory: Path | None, config: Path | None, algorithm: str) -> None:
    """Add a key: active if the ring has none, else staged (published, not yet signing)."""
    where = keys_dir(directory, config)
    try:
        info = generate_key(where, algorithm)
    except (KeyRingError, ValueError, OSError) as exc:
        fail(str(exc))
    click.echo(f"{info.id} {info.algorithm} {info.state} kid={info.libtrust_kid}")
    if info.state == "staged":
        click.echo(
            "staged: publish `authsvc keys bundle` to the registry, then "
            "`authsvc keys rotate` to start signing with it",
            err=True,
        )


@keys_group.command("list")
@dir_option
@config_option
def keys_list(directory: Path | None, config: Path | None) -> None:
    """List the keys with their state, libtrust kid and RFC 7638 thumbprint."""
    try:
        infos = list_keys(keys_dir(directory, config))
    except KeyRingError as exc:
        fail(str(exc))
    for info in infos:
        click.echo(
            f"{info.id}\t{info.algorithm}\t{info.state}\t{info.libtrust_kid}\t{info.thumbprint}"
        )


@keys_group.command("rotate")
@dir_option
@config_option
def keys_rotate(directory: Path | None, config: Path | None) -> None:
    """Promote the newest staged key to signing (or make and activate a new one)."""
    try:
        info = rotate(keys_dir(directory, config))
    except (KeyRingError, ValueError, OSError) as exc:
        fail(str(exc))
    click.echo(f"{info.id} {info.algorithm} active kid={info.libtrust_kid}")


@keys_group.command("retire")
@dir_option
@config_option
@click.argument("key_id")
def keys_retire(directory: Path | None, config: Path | None, key_id: str) -> None:
    """Stop publishing KEY_ID (tokens it signed stop verifying once registries reload)."""
    try:
        retire(keys_dir(directory, config), key_id)
    except (KeyRingError, ValueError, OSError) as exc:
        fail(str(exc))
    click.echo(f"{key_id} retired")


@keys_group.command("bundle")
@dir_option
@config_option
def keys_bundle(directory: Path | None, config: Path | None) -> None:
    """Print the PEM certificate bundle for the registry's auth.token.rootcertbundle."""
    try:
        click.echo(KeyRing.load(keys_dir(directory, config)).bundle_pem(), nl=False)
    except KeyRingError as exc:
        fail(str(exc))



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
        fail("no password on standard input")
    try:
        click.echo(hash_password(password, cost=cost))
    except ValueError as exc:
        fail(str(exc))
