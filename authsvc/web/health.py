"""Liveness and readiness."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify

from authsvc.errors import KeyRingError, StoreUnavailable

__all__ = ["bp"]

bp = Blueprint("health", __name__)


def _writable(spool: object) -> bool:
    path = Path(str(spool))
    return os.access(path if path.exists() else path.parent, os.W_OK)


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
    if runtime.service.audit_failing:
        problems.append(f"audit: the last decision could not be recorded: "
                        f"{runtime.service.audit_failing}")
    spool = runtime.spool
    audit: dict[str, object] = {}
    if spool is not None:
        audit = spool.status()
        failing = audit.get("degraded") and audit.get("last_error")
        if failing and not _writable(audit.get("spool", "")):
            problems.append(f"audit: the sink and its spool both fail: {audit['last_error']}")
    if problems:
        response = jsonify(status="unavailable", problems=problems, **(
            {"audit": audit} if audit else {}))
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
    if audit:
        # Spooling while the sink is down keeps every decision: reported, not a failure.
        body["audit"] = audit
    return jsonify(body)
