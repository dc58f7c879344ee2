"""Published keys: JWKS for registries that read it, and the PEM certificate bundle."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

__all__ = ["bp"]

bp = Blueprint("keys", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    response = jsonify(current_app.extensions["authsvc"].keyring().jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.get("/certs.pem")
def bundle() -> Response:
    pem = current_app.extensions["authsvc"].keyring().bundle_pem()
    return Response(
        pem, mimetype="application/x-pem-file", headers={"Cache-Control": "public, max-age=60"}
    )
