"""Shared fixtures: settings and app factories, a key ring, basic-auth headers.

bcrypt hashes here use cost 4 so that tests stay fast; the service accepts any cost
bcrypt does, and the benchmark uses the production default of 12.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authsvc.app import Dependencies, create_app
from authsvc.audit import MemoryAuditLog, schema
from authsvc.audit.schema import PlainEvent
from authsvc.config import Settings, parse_settings
from authsvc.identity.static import hash_password
from authsvc.store import Store
from authsvc.store.memory import MemoryStore
from authsvc.tokens import KeyRing, generate_key

pytest_plugins = ["tests.redis_server", "tests.oidc_issuer", "tests.aws_sts"]

SERVICE = "registry.test"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "admin": "admin-secret"}
_HASHES = {name: hash_password(pw, cost=4) for name, pw in PASSWORDS.items()}


def basic(username: str, password: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def base_config(keys_dir: Path) -> dict[str, Any]:
    """A configuration with a developer, a read-only user, an admin and public pulls."""
    return {
        "issuer": "authsvc-test",
        "services": [SERVICE, "other.test"],
        "keys": {"dir": str(keys_dir)},
        "identities": {
            "static": {
                "users": {
                    "alice": {"password_hash": _HASHES["alice"], "groups": ["dev"]},
                    "bob": {"password_hash": _HASHES["bob"], "groups": ["readers"]},
                    "admin": {"password_hash": _HASHES["admin"], "kind": "robot"},
                }
            }
        },
        "rules": [
            {
                "id": "dev-team",
                "match": {"groups": ["dev"]},
                "allow": [{"repository": "team/**", "actions": ["pull", "push", "delete"]}],
                "deny": [{"repository": "team/prod/*", "actions": ["delete"]}],
            },
            {
                "id": "readers",
                "match": {"groups": ["readers"]},
                "allow": [{"repository": "team/**", "actions": ["pull"]}],
            },
            {
                "id": "admin",
                "match": {"account": "admin"},
                "allow": [
                    {"repository": "**", "actions": ["*"]},
                    {"registry": "catalog", "actions": ["*"]},
                ],
            },
            {
                "id": "public",
                "match": {"anonymous": True},
                "allow": [{"repository": "public/**", "actions": ["pull"]}],
            },
        ],
    }


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "ring"
    generate_key(directory)
    return directory


@pytest.fixture(scope="session")
def keyring(keys_dir: Path) -> KeyRing:
    return KeyRing.load(keys_dir)


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(keys_dir: Path, tmp_path: Path) -> MakeSettings:
    """``make_settings(**top_level_overrides)`` -> validated Settings."""

    def make(**overrides: Any) -> Settings:
        data = base_config(keys_dir)
        data.update(overrides)
        return parse_settings(data, base_dir=tmp_path, environ={})

    return make


@dataclass
class Clock:
    """A settable clock for the service (``now``) and the credential cache."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class PlainCheckingAuditLog(MemoryAuditLog):
    """Keeps events; holds each ``PlainEvent`` to its promise (what the chain trusts
    without walking it), so that every decision path the tests drive checks it."""

    def record(self, event: Mapping[str, Any]) -> None:
        if type(event) is PlainEvent:
            try:
                schema._plain(dict(event))  # the walk the chain skips for it
            except schema._Doubt:
                raise AssertionError(f"a PlainEvent holds another type: {event}") from None
        super().record(event)


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    audit: MemoryAuditLog
    store: Store
    clock: Clock


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness(make_settings: MakeSettings) -> MakeHarness:
    def make(settings: Settings | None = None, *, store: Store | None = None) -> Harness:
        audit = PlainCheckingAuditLog()
        clock = Clock()
        used_store = store or MemoryStore()
        app = create_app(
            settings or make_settings(),
            deps=Dependencies(store=used_store, audit=audit, clock=clock, cache_clock=clock),
        )
        app.testing = True
        return Harness(app, app.test_client(), audit, used_store, clock)

    return make


@pytest.fixture
def harness(make_harness: MakeHarness) -> Iterator[Harness]:
    yield make_harness()
