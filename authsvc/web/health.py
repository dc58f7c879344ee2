"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from authsvc.errors import KeyRingError, StoreUnavailable

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    runtime = current_app.extensions["authsvc"]
    problems: list[str] = []
    try:
        runtime.store.ping()
    except StoreUnavailable as exc:
        problems.append(f"store: {exc.message}")
    try:
        runtime.keyring()
    except KeyRingError as exc:
        problems.append(f"keys: {exc}")
    if problems:
        response = jsonify(status="unavailable", problems=problems)
        response.status_code = 503
        return response
    body: dict[str, object] = {"status": "ready", "policy": runtime.service.policy.digest}
    oidc = {}
    for name, (_, keys) in runtime.oidc_keys.items():
        status = keys.status()
        oidc[name] = {
            "keys_fetched_at": status.fetched_at,
            "stale": status.stale,
            "last_error": status.last_error,
        }
    if oidc:
        # Stale keys still verify (the last good set is kept): reported, not a failure.
        body["oidc"] = oidc
    return jsonify(body)
