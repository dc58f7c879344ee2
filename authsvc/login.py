"""``authsvc login oidc``: exchange a CI platform's OIDC token for a session credential.

Runs inside a CI job. It reads the job's ID token (GitHub Actions' token endpoint, an
environment variable such as GitLab's ``id_tokens``, or a file such as a Kubernetes
projected service-account token), finds authsvc's token endpoint from the registry's
``WWW-Authenticate`` challenge (or takes it as given), exchanges the token once
(RFC 8693) and prints the session credential, ready for
``docker login -u '<token>' --password-stdin``. The ID token is never printed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Challenge", "LoginError", "check_url", "discover", "exchange", "read_platform_token"]

TIMEOUT = 10.0
MAX_BYTES = 64 * 1024
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class LoginError(Exception):
    """What went wrong, said for a CI log (never containing a token)."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    service: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def check_url(url: str, what: str) -> None:
    parts = urllib.parse.urlsplit(url)
    loopback = (parts.hostname or "") in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise LoginError(f"{what} {url!r} must be https:// (http:// only on a loopback address)")


def _request(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with _OPENER.open(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read(MAX_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise LoginError(f"{request.full_url}: {exc}") from exc


def discover(registry: str) -> Challenge:
    """The realm and service from the registry's ``401 WWW-Authenticate: Bearer`` challenge."""
    base = registry if "://" in registry else f"https://{registry}"
    check_url(base, "registry")
    status, headers, _ = _request(
        urllib.request.Request(base.rstrip("/") + "/v2/")  # noqa: S310 - scheme checked above
    )
    challenge = next((v for k, v in headers.items() if k.lower() == "www-authenticate"), "")
    if status != 401 or not challenge.lower().startswith("bearer "):
        raise LoginError(
            f"{base}/v2/ answered {status} without a Bearer challenge: is token auth enabled?"
        )
    params = dict(_PARAM.findall(challenge))
    if "realm" not in params or "service" not in params:
        raise LoginError(f"the registry's challenge names no realm and service: {challenge!r}")
    check_url(params["realm"], "realm")
    return Challenge(params["realm"], params["service"])


def read_platform_token(source: str, *, audience: str | None) -> str:
    """``github``, ``env:VAR`` or ``file:PATH``."""
    if source == "github":
        url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
        bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            raise LoginError(
                "ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN are not set: give the job "
                "`permissions: id-token: write`"
            )
        if not audience:
            raise LoginError("--audience is required with --source github")
        check_url(url, "ACTIONS_ID_TOKEN_REQUEST_URL")
        separator = "&" if "?" in url else "?"
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            f"{url}{separator}audience={urllib.parse.quote(audience, safe='')}",
            headers={"Authorization": f"bearer {bearer}", "Accept": "application/json"},
        )
        status, _, body = _request(request)
        if status != 200:
            raise LoginError(f"GitHub's token endpoint answered {status}")
        try:
            value = json.loads(body)["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LoginError("GitHub's token endpoint sent no token ('value')") from exc
        if not isinstance(value, str):
            raise LoginError("GitHub's token endpoint sent no token ('value')")
        return value
    if source.startswith("env:"):
        value = os.environ.get(source[4:], "")
        if not value.strip():
            raise LoginError(f"the environment variable {source[4:]} is empty or not set")
        return value.strip()
    if source.startswith("file:"):
        try:
            return Path(source[5:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LoginError(f"cannot read the token file {source[5:]}: {exc.strerror}") from exc
    raise LoginError(f"unknown --source {source!r}: use github, env:VAR or file:PATH")


def exchange(
    challenge: Challenge,
    token: str,
    *,
    scopes: list[str],
    subject_token_type: str = "urn:ietf:params:oauth:token-type:id_token",  # noqa: S107
) -> dict[str, object]:
    """POST the RFC 8693 token exchange; the answer, or a LoginError with authsvc's reason."""
    form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", token),
        ("subject_token_type", subject_token_type),
        ("service", challenge.service),
        ("client_id", "authsvc-login"),
        *(("scope", s) for s in scopes),
    ]
    check_url(challenge.realm, "realm")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        challenge.realm,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    status, _, body = _request(request)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise LoginError(f"{challenge.realm} answered {status} with no JSON")
    if status != 200:
        reason = answer.get("error_description") or answer.get("error") or "refused"
        raise LoginError(f"authsvc refused the token ({status}): {reason}")
    if not isinstance(answer.get("refresh_token"), str):
        raise LoginError("authsvc issued no session credential (refresh_token)")
    return answer
