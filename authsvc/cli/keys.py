"""`authsvc keys ...` and `authsvc users hash`.

The commands that change the ring record one event each (``authsvc.cli.recording``):
``key.generate``, ``key.rotate`` and ``key.retire``, whose ``key`` member is
``{id, kid, algorithm, from_state, to_state}`` (``from_state`` null for a new key); a
rotation also names the key that stopped signing as ``previous``. A refused command
changes nothing and records nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from authsvc.cli.common import config_option, dir_option, fail, find_config, keys_dir, main
from authsvc.cli.recording import audit_trail, record
from authsvc.errors import KeyRingError
from authsvc.identity.static import hash_password
from authsvc.tokens import (
    ACTIVE,
    PREVIOUS,
    RETIRED,
    KeyInfo,
    KeyRing,
    generate_key,
    list_keys,
    retire,
    rotate,
)
from authsvc.tokens.ring import RING_FILE

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
    settings = find_config(config)
    where = keys_dir(directory, settings)
    with audit_trail(settings) as audit:
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
        record(
            audit,
            "key.generate",
            "KEY_GENERATED",
            {"key": _transition(info, None, info.state)},
            change=f"key {info.id} generated ({info.state})",
        )


@keys_group.command("list")
@dir_option
@config_option
def keys_list(directory: Path | None, config: Path | None) -> None:
    """List the keys with their state, libtrust kid and RFC 7638 thumbprint."""
    try:
        infos = list_keys(keys_dir(directory, find_config(config)))
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
    settings = find_config(config)
    where = keys_dir(directory, settings)
    with audit_trail(settings) as audit:
        try:
            before = _ring(where)
            info = rotate(where)
        except (KeyRingError, ValueError, OSError) as exc:
            fail(str(exc))
        click.echo(f"{info.id} {info.algorithm} active kid={info.libtrust_kid}")
        staged = before.get(info.id)  # None: made just now
        members = {"key": _transition(info, staged.state if staged else None, ACTIVE)}
        previous = next((k for k in before.values() if k.state == ACTIVE), None)
        if previous is not None:
            members["previous"] = _transition(previous, ACTIVE, PREVIOUS)
        record(audit, "key.rotate", "KEY_ROTATED", members, change=f"key {info.id} now signs")


@keys_group.command("retire")
@dir_option
@config_option
@click.argument("key_id")
def keys_retire(directory: Path | None, config: Path | None, key_id: str) -> None:
    """Stop publishing KEY_ID (tokens it signed stop verifying once registries reload)."""
    settings = find_config(config)
    where = keys_dir(directory, settings)
    with audit_trail(settings) as audit:
        try:
            before = _ring(where).get(key_id)
            retire(where, key_id)
        except (KeyRingError, ValueError, OSError) as exc:
            fail(str(exc))
        click.echo(f"{key_id} retired")
        assert before is not None, "retire refuses a key that is not in the ring"
        record(
            audit,
            "key.retire",
            "ALREADY_RETIRED" if before.state == RETIRED else "KEY_RETIRED",
            {"key": _transition(before, before.state, RETIRED)},
            change=f"key {key_id} retired",
        )


@keys_group.command("bundle")
@dir_option
@config_option
def keys_bundle(directory: Path | None, config: Path | None) -> None:
    """Print the PEM certificate bundle for the registry's auth.token.rootcertbundle."""
    try:
        click.echo(KeyRing.load(keys_dir(directory, find_config(config))).bundle_pem(), nl=False)
    except KeyRingError as exc:
        fail(str(exc))


def _ring(directory: Path) -> dict[str, KeyInfo]:
    """The ring's keys by id before a change ({} when there is no ring yet)."""
    if not (directory / RING_FILE).exists():
        return {}
    return {info.id: info for info in list_keys(directory)}


def _transition(info: KeyInfo, from_state: str | None, to_state: str) -> dict[str, Any]:
    """The ``key`` member of a key event."""
    return {
        "id": info.id,
        "kid": info.libtrust_kid,
        "algorithm": info.algorithm,
        "from_state": from_state,
        "to_state": to_state,
    }


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
