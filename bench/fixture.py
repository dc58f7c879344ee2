"""What the benchmark sets up: keys, password, configurations, Redis, the servers.

``Fixture`` and ``make_fixture`` are shared with ``bench/hotspots.py``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.processes import (
    REPO,
    BenchError,
    Processes,
    Server,
    free_port,
    http_request,
    run_cli,
)

if TYPE_CHECKING:
    from bench.oidc_issuer import BenchIssuers

SERVICE = "registry.bench"
ISSUER = "authsvc-bench"
USER = "bench"
THREADS = 8
#: Refresh tokens the benchmark creates in a shared Redis lapse after this (seconds);
#: the one it uses is also revoked at the end.
REFRESH_TTL = 600

ANON_PATH = f"/token?service={SERVICE}&scope=repository:public/app:pull"
USER_PATH = f"/token?service={SERVICE}&scope=repository:bench/app:pull,push"
OFFLINE_PATH = (
    f"/token?service={SERVICE}&scope=repository:bench/app:pull&offline_token=true&client_id=bench"
)
#: Cases e, f, g: a CI job's pull,push, the OIDC token sent as the Basic-auth password.
OIDC_PATH = f"/token?service={SERVICE}&scope=repository:ci/acme/app/cache:pull,push"


@dataclass(frozen=True)
class Fixture:
    """The temp dir's key ring, password and configurations (one per store and cache)."""

    tmp: Path
    keys_dir: Path
    password: str
    password_hash: str

    @property
    def basic_auth(self) -> str:
        raw = f"{USER}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def config(
        self,
        store: str,
        storage: str,
        *,
        cache_ttl: int,
        oidc: BenchIssuers | None = None,
        oidc_max_age: int = 3600,
        audit: dict[str, Any] | None = None,
        anomaly: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Path:
        """``oidc``: also trust its two issuers (``identities.oidc``, rule ``bench-ci``),
        accepting their tokens up to ``oidc_max_age`` seconds old. ``audit``: the
        ``audit`` section (default: none, i.e. the service's default, a file (fsync off) at
        ``audit/audit.jsonl`` in the temp dir, shared by every server). ``anomaly``: the
        ``anomaly`` section (default: none, i.e. the service's defaults, the brute-force
        backoff on; ``{"backoff": {"enabled": False}}`` turns it off). ``name``: the
        file's name (default ``config-STORE-cache|nocache``)."""
        data: dict[str, Any] = {
            "issuer": ISSUER,
            "services": [SERVICE],
            "token_ttl": 300,
            "keys": {"dir": str(self.keys_dir), "algorithm": "ES256"},
            "storage": storage,
            "identities": {"static": {"users": {USER: {"password_hash": self.password_hash}}}},
            "credential_cache": {"ttl": cache_ttl},
            "refresh_tokens": {"ttl": REFRESH_TTL},
            "rules": [
                {
                    "id": "bench-user",
                    "match": {"account": USER},
                    "allow": [{"repository": "bench/**", "actions": ["pull", "push"]}],
                },
                {
                    "id": "anonymous-public",
                    "match": {"anonymous": True},
                    "allow": [{"repository": "public/**", "actions": ["pull"]}],
                },
            ],
        }
        if oidc is not None:
            data["identities"]["oidc"] = oidc.identities(oidc_max_age)
            data["rules"].append(oidc.rule())
        if audit is not None:
            data["audit"] = audit
        if anomaly is not None:
            data["anomaly"] = anomaly
        name = name or f"config-{store}-{'cache' if cache_ttl else 'nocache'}"
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


def make_fixture(tmp: Path) -> Fixture:
    keys_dir = tmp / "keys"
    print(run_cli(["keys", "generate", "--dir", str(keys_dir), "--algorithm", "ES256"]).strip())
    password = secrets.token_urlsafe(18)
    password_hash = run_cli(["users", "hash", "--cost", "12"], stdin=password + "\n").strip()
    # The audit fingerprint key every server shares (audit/ next to the configurations),
    # made once here: servers started together would race to create it (O_EXCL, then a
    # write) and one could read it empty ("the audit key must be at least 32 bytes").
    from authsvc.audit.fingerprint import load_or_create_key

    load_or_create_key(tmp / "audit" / "fingerprint.key")
    return Fixture(tmp, keys_dir, password, password_hash)


def redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(processes: Processes, tmp: Path, url: str) -> str:
    """``url`` if a Redis answers there, else a private redis-server's URL."""
    if redis_answers(url):
        print(f"redis: using the running server at {url}")
        return url
    own = start_private_redis(processes, tmp, why=f"no Redis answers at {url}")
    print(f"redis: none at {url}; started a private redis-server at {own}")
    return own


def start_private_redis(processes: Processes, tmp: Path, *, why: str,
                        name: str = "redis-server") -> str:
    """A redis-server of the benchmark's own (no persistence) on a free port: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError(f"{why} and redis-server is not installed")
    port = free_port()
    process = processes.start(
        name,
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        log_path=tmp / f"{name}.log",
        env=None,
    )
    own = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while not redis_answers(own):
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"could not start redis-server:\n{process.log_tail()}")
        time.sleep(0.1)
    return own


def revoke_refresh_token(storage: str, token: str) -> None:
    """Remove the benchmark's refresh token from a shared store (never FLUSH anything)."""
    from authsvc.identity.sessions import Sessions
    from authsvc.store import open_store

    store = open_store(storage)
    try:
        Sessions(store, {}).revoke(token)
    finally:
        store.close()


def start_authsvc(
    processes: Processes, config: Path, *, name: str, workers: int, log_dir: Path,
    module: str = "authsvc",
) -> Server:
    """``python -m MODULE serve``: ``authsvc``, or ``bench.noaudit`` (audit off)."""
    port = free_port()
    argv = [
        sys.executable, "-m", module, "serve", "--config", str(config),
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(THREADS),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    process = processes.start(name, argv, log_path=log_dir / f"{name}.log", env=env)
    return Server(name, port, process)


def start_floor(processes: Processes, fixture: Fixture, *, name: str, workers: int) -> Server:
    """The floor under gunicorn with the settings ``authsvc.server.Server`` uses."""
    from bench.floor_app import ENV_ISSUER, ENV_KEYS_DIR, ENV_TOKEN_TTL

    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gthread", "--workers", str(workers), "--threads", str(THREADS),
        "--bind", f"127.0.0.1:{port}",
        "--timeout", "30", "--graceful-timeout", "10", "--keep-alive", "5",
        "--limit-request-line", "8190", "--limit-request-fields", "100",
        "--limit-request-field_size", "8190",
        "--error-logfile", "-", "--log-level", "info", "--no-control-socket",
        "--chdir", str(REPO),
        "bench.floor_app:create()",
    ]
    env = dict(os.environ)
    env.update({ENV_KEYS_DIR: str(fixture.keys_dir), ENV_ISSUER: ISSUER, ENV_TOKEN_TTL: "300"})
    process = processes.start(name, argv, log_path=fixture.tmp / f"{name}.log", env=env)
    return Server(name, port, process)


def fetch_refresh_token(server: Server, fixture: Fixture) -> str:
    status, body = http_request(
        server.port, OFFLINE_PATH, headers={"Authorization": fixture.basic_auth}
    )
    if status != 200:
        raise BenchError(f"GET {OFFLINE_PATH} answered {status}: {body[:300]!r}")
    token = json.loads(body).get("refresh_token")
    if not isinstance(token, str) or not token:
        raise BenchError(f"no refresh_token in the offline_token answer: {body[:300]!r}")
    return token


def check_oidc_login(server: Server, authorization: str, *, what: str) -> None:
    """``GET OIDC_PATH`` with this token as the password is granted pull and push (a
    token whose rule did not match would get 200 with no access: not the case measured).
    The first use claims the token's jti, so a reused token is a reuse from then on."""
    import jwt

    status, body = http_request(server.port, OIDC_PATH, headers={"Authorization": authorization})
    if status != 200:
        raise BenchError(f"{server.name}: {what} answered {status} to {OIDC_PATH}: "
                         f"{body[:300]!r}")
    claims = jwt.decode(json.loads(body)["token"], options={"verify_signature": False})
    actions = sorted(a for grant in claims.get("access", []) for a in grant.get("actions", []))
    if actions != ["pull", "push"]:
        raise BenchError(f"{server.name}: {what} was granted {claims.get('access')!r}, "
                         "expected pull and push on ci/acme/app/cache")


def check_user_login(server: Server, fixture: Fixture) -> None:
    """``GET USER_PATH`` with the bench user's password is granted pull and push (the
    request of cases b and j); in the worker that answers, it also fills the credential
    cache."""
    import jwt

    status, body = http_request(
        server.port, USER_PATH, headers={"Authorization": fixture.basic_auth}
    )
    if status != 200:
        raise BenchError(f"{server.name}: the bench user's password answered {status} to "
                         f"{USER_PATH}: {body[:300]!r}")
    claims = jwt.decode(json.loads(body)["token"], options={"verify_signature": False})
    actions = sorted(a for grant in claims.get("access", []) for a in grant.get("actions", []))
    if actions != ["pull", "push"]:
        raise BenchError(f"{server.name}: the bench user was granted {claims.get('access')!r}, "
                         "expected pull and push on bench/app")


def check_floor_token(floor: Server, authsvc: Server) -> None:
    """Both answer the anonymous request with 200 and the same JSON keys and JWT header."""
    import jwt

    shapes = []
    for server in (floor, authsvc):
        status, body = http_request(server.port, ANON_PATH)
        if status != 200:
            raise BenchError(f"{server.name} answered {status} to {ANON_PATH}: {body[:300]!r}")
        document = json.loads(body)
        header = jwt.get_unverified_header(document["token"])
        claims = jwt.decode(document["token"], options={"verify_signature": False})
        shapes.append((sorted(document), sorted(header), sorted(claims), header.get("kid")))
    if shapes[0] != shapes[1]:
        raise BenchError(f"the floor's answer differs in shape from authsvc's: {shapes}")
