"""The one place where errors become HTTP responses.

GET answers carry the Docker registry error shape ``{"errors": [{code, message,
detail}]}``; POST answers carry OAuth2's ``{"error", "error_description"}``. Anything
unexpected is logged with its stack trace and answered with a plain 500 that reveals
nothing.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from authsvc.errors import AuthsvcError, InvalidCredentials

__all__ = ["init_app", "render_error"]

log = logging.getLogger(__name__)


def render_error(error: AuthsvcError, *, realm: str) -> Response:
    if request.method == "POST":
        response = jsonify(error=error.oauth_error, error_description=error.message)
    else:
        entry: dict[str, object] = {"code": error.code, "message": error.message}
        if error.detail is not None:
            entry["detail"] = error.detail
        response = jsonify(errors=[entry])
    response.status_code = error.status
    if isinstance(error, InvalidCredentials):
        response.headers["WWW-Authenticate"] = f'Basic realm="{realm}"'
    response.headers.update(error.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask, *, realm: str) -> None:
    @app.errorhandler(AuthsvcError)
    def _authsvc_error(error: AuthsvcError) -> Response:
        return render_error(error, realm=realm)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        if request.method == "POST":
            response = jsonify(error="invalid_request", error_description=message)
        else:
            response = jsonify(
                errors=[{"code": error.name.upper().replace(" ", "_"), "message": message}]
            )
        response.status_code = status
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unexpected error while serving %s %s", request.method, request.path)
        if request.method == "POST":
            response = jsonify(error="server_error", error_description="internal error")
        else:
            response = jsonify(errors=[{"code": "UNKNOWN", "message": "internal error"}])
        response.status_code = 500
        return response
