"""KeyRing.load refuses a broken key directory with a message naming file and problem."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authsvc.errors import KeyRingError
from authsvc.tokens import KeyInfo, KeyRing, generate_key, list_keys, retire

from .conftest import NOW


@pytest.fixture
def active(key_dir: Path) -> KeyInfo:
    return generate_key(key_dir, now=NOW)


def _edit_ring(key_dir: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = key_dir / "ring.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _load_error(key_dir: Path) -> str:
    with pytest.raises(KeyRingError) as excinfo:
        KeyRing.load(key_dir)
    return str(excinfo.value)


def test_missing_directory(key_dir: Path) -> None:
    message = _load_error(key_dir)
    assert message.startswith(f"{key_dir}: key directory does not exist")
    assert "authsvc keys generate" in message


def test_missing_ring_json(key_dir: Path) -> None:
    key_dir.mkdir()
    assert _load_error(key_dir) == (
        f"{key_dir / 'ring.json'}: missing (create a key with `authsvc keys generate`)"
    )


def test_ring_json_that_is_not_json(key_dir: Path, active: KeyInfo) -> None:
    (key_dir / "ring.json").write_text('{"version": 1, "keys": [')
    assert re.match(rf"{re.escape(str(key_dir / 'ring.json'))}: corrupt \(", _load_error(key_dir))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.update(version=True), "unsupported version True"),
        (lambda d: d.update(extra=1), 'exactly "version" and "keys"'),
        (lambda d: d["keys"][0].update(state="enabled"), "keys[0].state: unknown state 'enabled'"),
        (lambda d: d["keys"][0].update(id="../../etc/x"), "keys[0].id: invalid key id"),
        (lambda d: d["keys"][0].update(algorithm="HS256"), "unsupported algorithm 'HS256'"),
        (lambda d: d["keys"][0].update(created="yesterday"), "Invalid isoformat"),
        (lambda d: d["keys"][0].update(created="2026-11-28T04:35:00"), "has no time zone"),
        (lambda d: d["keys"][0].update(owner="me"), "keys[0] must have exactly the fields"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "keys[1].id: duplicate key id"),
    ],
)
def test_ring_json_with_a_bad_structure(
    key_dir: Path, active: KeyInfo, change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    _edit_ring(key_dir, change)
    message = _load_error(key_dir)
    assert message.startswith(f"{key_dir / 'ring.json'}: corrupt (")
    assert problem in message


def test_two_active_keys(key_dir: Path, active: KeyInfo) -> None:
    staged = generate_key(key_dir, now=NOW)
    _edit_ring(key_dir, lambda d: d["keys"][1].update(state="active"))
    assert staged.state == "staged"
    assert "more than one active key" in _load_error(key_dir)


def test_no_active_key(key_dir: Path, active: KeyInfo) -> None:
    _edit_ring(key_dir, lambda d: d["keys"][0].update(state="previous"))
    assert _load_error(key_dir) == (
        f"{key_dir / 'ring.json'}: no active key (run `authsvc keys rotate`)"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_private_key_readable_by_others(key_dir: Path, active: KeyInfo, mode: int) -> None:
    key_file = key_dir / f"{active.id}.key.pem"
    os.chmod(key_file, mode)
    message = _load_error(key_dir)
    assert message.startswith(f"{key_file}: private key is accessible by group or others")
    assert f"(mode {mode:04o})" in message
    assert f"run `chmod 600 {key_file}`" in message


def test_missing_certificate_file(key_dir: Path, active: KeyInfo) -> None:
    cert_file = key_dir / f"{active.id}.crt.pem"
    cert_file.unlink()
    assert _load_error(key_dir) == (f"{cert_file}: missing (active key {active.id} in ring.json)")


def test_missing_private_key_file_of_a_staged_key(key_dir: Path, active: KeyInfo) -> None:
    staged = generate_key(key_dir, now=NOW)
    key_file = key_dir / f"{staged.id}.key.pem"
    key_file.unlink()
    assert _load_error(key_dir) == f"{key_file}: missing (staged key {staged.id} in ring.json)"


def test_retired_keys_files_are_not_needed(key_dir: Path, active: KeyInfo) -> None:
    staged = generate_key(key_dir, now=NOW)
    retire(key_dir, staged.id)
    (key_dir / f"{staged.id}.key.pem").unlink()
    assert KeyRing.load(key_dir).signing_key.id == active.id


def test_algorithm_that_does_not_match_the_curve(key_dir: Path, active: KeyInfo) -> None:
    _edit_ring(key_dir, lambda d: d["keys"][0].update(algorithm="ES384"))
    message = _load_error(key_dir)
    key_file = key_dir / f"{active.id}.key.pem"
    assert message == (
        f"{key_file}: holds an EC secp256r1 key, which does not match its algorithm ES384 "
        f"(active key {active.id} in ring.json)"
    )


def test_ec_key_declared_rsa(key_dir: Path, active: KeyInfo) -> None:
    _edit_ring(key_dir, lambda d: d["keys"][0].update(algorithm="RS256"))
    assert "holds an EC secp256r1 key, which does not match its algorithm RS256" in (
        _load_error(key_dir)
    )


def test_certificate_of_another_key(key_dir: Path, active: KeyInfo) -> None:
    other = generate_key(key_dir, now=NOW)
    cert_file = key_dir / f"{active.id}.crt.pem"
    cert_file.write_bytes((key_dir / f"{other.id}.crt.pem").read_bytes())
    assert _load_error(key_dir) == (
        f"{cert_file}: certificate is not for the key in {active.id}.key.pem"
    )


def test_unparseable_private_key(key_dir: Path, active: KeyInfo) -> None:
    key_file = key_dir / f"{active.id}.key.pem"
    # (spelled in pieces: no file of the project holds anything that looks like a key)
    armour = "PRIVATE " + "KEY-----"
    key_file.write_text(f"-----BEGIN {armour}\nnonsense\n-----END {armour}\n")
    assert _load_error(key_dir).startswith(f"{key_file}: not an unencrypted PEM private key")


def test_unparseable_certificate(key_dir: Path, active: KeyInfo) -> None:
    cert_file = key_dir / f"{active.id}.crt.pem"
    cert_file.write_text("not a certificate")
    assert _load_error(key_dir).startswith(f"{cert_file}: not a PEM certificate")


def test_list_keys_and_retire_need_the_directory(key_dir: Path) -> None:
    with pytest.raises(KeyRingError, match="key directory does not exist"):
        list_keys(key_dir)
    with pytest.raises(KeyRingError, match="key directory does not exist"):
        retire(key_dir, "20261128T043500Z-abcdef")


def test_generate_refuses_a_file_where_the_directory_should_be(key_dir: Path) -> None:
    key_dir.write_text("")
    with pytest.raises(KeyRingError, match="exists and is not a directory"):
        generate_key(key_dir, now=NOW)
