"""The FLOOR: the least a Flask token endpoint under gunicorn can do per request.

It signs the same JWT authsvc signs (same header: ``alg``, ``typ``, ``kid`` = libtrust
key ID, ``x5c``; same claims: ``iss``, ``sub``, ``aud``, ``exp``, ``nbf``, ``iat``,
``jti``, ``access``) with the same key, loaded from the same key directory by
``authsvc.tokens.KeyRing.load`` and signed by pyjwt, and answers with the same JSON
shape and cache headers as ``GET /token``. It does no authentication, no policy, no
audit and no validation: the scope is split naively and granted as asked.

Run it under gunicorn with the same settings as ``authsvc serve``::

    AUTHSVC_BENCH_KEYS_DIR=/path/to/keys gunicorn -k gthread --workers 1 --threads 8 \\
        --bind 127.0.0.1:5002 'bench.floor_app:create()'

Environment: ``AUTHSVC_BENCH_KEYS_DIR`` (required), ``AUTHSVC_BENCH_ISSUER`` (default
``authsvc``), ``AUTHSVC_BENCH_TOKEN_TTL`` (seconds, default 300).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from typing import Any

import jwt
from flask import Flask, Response, jsonify, request

from authsvc.tokens import KeyRing

__all__ = ["ENV_ISSUER", "ENV_KEYS_DIR", "ENV_TOKEN_TTL", "create"]

ENV_KEYS_DIR = "AUTHSVC_BENCH_KEYS_DIR"
ENV_ISSUER = "AUTHSVC_BENCH_ISSUER"
ENV_TOKEN_TTL = "AUTHSVC_BENCH_TOKEN_TTL"
#: As authsvc.tokens.mint.JTI_BYTES: 144 bits of randomness in ``jti``.
JTI_BYTES = 18


def _access(scope: str | None) -> list[dict[str, object]]:
    """``type:name:actions`` split without any validation (the floor trusts its input)."""
    if not scope:
        return []
    resource_type, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return [{"type": resource_type, "name": name, "actions": actions.split(",")}]


def create() -> Flask:
    """The floor app; reads its key ring once, at start."""
    keys_dir = os.environ.get(ENV_KEYS_DIR)
    if not keys_dir:
        raise RuntimeError(f"set {ENV_KEYS_DIR} to the key directory")
    issuer = os.environ.get(ENV_ISSUER, "authsvc")
    ttl = int(os.environ.get(ENV_TOKEN_TTL, "300"))
    key = KeyRing.load(keys_dir).signing_key
    headers: dict[str, Any] = {"kid": key.libtrust_kid, "x5c": list(key.x5c)}

    app = Flask("authsvc_bench_floor")
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.get("/token")
    def token() -> Response:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": "",
            "aud": request.args.get("service", ""),
            "exp": now + ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(JTI_BYTES),
            "access": _access(request.args.get("scope")),
        }
        signed = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)
        response = jsonify(
            token=signed,
            access_token=signed,
            expires_in=ttl,
            issued_at=dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.get("/readyz")
    def readyz() -> Response:
        return jsonify(status="ready")

    return app
