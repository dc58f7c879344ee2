"""``POST /policy/explain``: why a token would (not) carry each requested action.

For admins only (``admin.accounts``, Basic auth). The body names an identity and the
scopes; the answer is the very decision the token endpoint would make, rule by rule.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from authsvc.errors import BadRequest
from authsvc.policy.explain import as_json, build_identity, explain
from authsvc.service import TokenService
from authsvc.web.client import request_client_ip
from authsvc.web.token import parse_basic_auth, read_body

__all__ = ["bp"]

bp = Blueprint("policy", __name__)

_FIELDS = {"account", "groups", "kind", "provider", "claims", "anonymous", "scopes"}


def _body() -> dict[str, Any]:
    if (request.mimetype or "") != "application/json":
        raise BadRequest("POST /policy/explain takes a JSON body (application/json)")
    try:
        body = json.loads(read_body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields {', '.join(unknown)} (use {', '.join(sorted(_FIELDS))})")
    return body


_JSON_TYPES = {str: "string", list: "array", dict: "object", bool: "boolean"}


def _typed(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, kind):
        raise BadRequest(f"{name!r} must be a JSON {_JSON_TYPES[kind]}")
    return value


@bp.post("/policy/explain")
def explain_endpoint() -> Response:
    service: TokenService = current_app.extensions["authsvc"].service
    service.authenticate_admin(
        parse_basic_auth(request.headers.get("Authorization")), client_ip=request_client_ip()
    )
    body = _body()
    scopes = _typed(body, "scopes", list, None)
    if not scopes or not all(isinstance(s, str) and s.strip() for s in scopes):
        raise BadRequest("'scopes' must be a non-empty list of non-empty scope strings")
    groups = _typed(body, "groups", list, [])
    if not all(isinstance(g, str) for g in groups):
        raise BadRequest("'groups' must be a list of strings")
    identity = build_identity(
        account=_typed(body, "account", str, None),
        groups=groups,
        kind=_typed(body, "kind", str, None),
        provider=_typed(body, "provider", str, None),
        claims=_typed(body, "claims", dict, None),
        anonymous=_typed(body, "anonymous", bool, False),
    )
    response = jsonify(as_json(identity, explain(service.policy, identity, scopes)))
    response.headers["Cache-Control"] = "no-store"
    return response
