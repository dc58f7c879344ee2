"""The one place where errors become HTTP responses.

GET answers carry the Docker registry error shape ``{"errors": [{code, message,
detail}]}``; POST answers carry OAuth2's ``{"error", "error_description"}`` plus the
error's own ``oauth_fields`` (``retry_after`` of a 429). Anything
unexpected is logged with its stack trace and answered with a plain 500 that reveals
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from authsvc.errors import AuthsvcError, InvalidCredentials

__all__ = ["init_app", "render_error"]

log = logging.getLogger(__name__)


def _render(
    status: int,
    *,
    code: str,
    oauth_error: str,
    message: str,
    detail: object = None,
    oauth_fields: Mapping[str, object] | None = None,
) -> Response:
    if request.method == "POST" and request.path == "/token":
        body: dict[str, object] = {"error": oauth_error, "error_description": message}
        for name, value in (oauth_fields or {}).items():
            body.setdefault(name, value)  # never replacing the two the protocol defines
        response = jsonify(body)
    else:
        entry: dict[str, object] = {"code": code, "message": message}
        if detail is not None:
            entry["detail"] = detail
        response = jsonify(errors=[entry])
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def render_error(error: AuthsvcError) -> Response:
    response = _render(
        error.status,
        code=error.code,
        oauth_error=error.oauth_error,
        message=error.message,
        detail=error.detail,
        oauth_fields=error.oauth_fields,
    )
    if isinstance(error, InvalidCredentials):
        realm = current_app.extensions["authsvc"].settings.realm
        response.headers["WWW-Authenticate"] = f'Basic realm="{realm}"'
    response.headers.update(error.headers)
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(AuthsvcError, render_error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        response = _render(
            error.code or 500,
            code=error.name.upper().replace(" ", "_"),
            oauth_error="invalid_request",
            message=error.description or error.name,
        )
        allow = error.get_response().headers.get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unexpected error while serving %s %s", request.method, request.path)
        return _render(500, code="UNKNOWN", oauth_error="server_error", message="internal error")
