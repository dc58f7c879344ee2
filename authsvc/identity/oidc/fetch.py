"""Fetching an issuer's documents (discovery, JWKS) over HTTP(S).

Only https:// is fetched (http:// only on a loopback host, never through a proxy from
the environment); a redirect is refused, not followed; only a 200 answer with a JSON
(or no) Content-Type is read, within ``max_bytes`` and ``timeout``. Every failure is
a ``FetchError``.

``b64url_decode`` and ``loads_strict`` (see ``authsvc.strictjson``) stay importable
from here for the token verifier (``verify.py``) and the key code.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import IO, Final, Protocol
from urllib.parse import urlsplit

from authsvc.identity.oidc.settings import is_loopback_url
from authsvc.strictjson import b64url_decode, loads_strict

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "FetchError",
    "Fetcher",
    "KeysError",
    "UrllibFetcher",
    "b64url_decode",
    "check_fetch_url",
    "loads_strict",
]

#: Largest discovery or JWKS document accepted (GitHub's JWKS is ~2 KiB).
DEFAULT_MAX_BYTES: Final = 64 * 1024
#: Seconds for one fetch: per socket operation, and for the whole body.
DEFAULT_TIMEOUT: Final = 5.0


class KeysError(Exception):
    """Base of the OIDC key errors (``FetchError`` here, the others in jwk.py, keys.py)."""


class FetchError(KeysError):
    """A fetch failed, or the document it returned was refused."""


class Fetcher(Protocol):
    def get(self, url: str, *, timeout: float, max_bytes: int) -> bytes:
        """The body of a 200 answer to GET ``url``; ``FetchError`` otherwise."""


def check_fetch_url(url: str) -> None:
    """Refuse (``FetchError``) anything but https://, or http:// on a loopback host."""
    parts = urlsplit(url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_url(url))):
        raise FetchError(f"refusing {url!r}: https:// is required (http:// only on loopback)")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise FetchError(f"refusing {url!r}: no host, or user info in the URL")


# -- fetching ------------------------------------------------------------------------


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as an error (HTTPError) instead of being followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class UrllibFetcher:
    """GET over https:// (http:// on loopback): no redirects, a timeout and a size cap."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        # Loopback never goes through a proxy from the environment.
        self._loopback = urllib.request.build_opener(
            _RefuseRedirects, urllib.request.ProxyHandler({})
        )

    def get(self, url: str, *, timeout: float, max_bytes: int) -> bytes:
        check_fetch_url(url)
        # The scheme was checked just above: https, or http on loopback.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"Accept": "application/json", "User-Agent": "authsvc"}
        )
        opener = self._loopback if is_loopback_url(url) else self._opener
        deadline = time.monotonic() + timeout
        try:
            with opener.open(request, timeout=timeout) as response:
                return _read_body(response, url, deadline, max_bytes)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                where = exc.headers.get("Location", "?") if exc.headers else "?"
                raise FetchError(
                    f"{url}: redirect (HTTP {exc.code} to {where!r}) refused"
                ) from exc
            raise FetchError(f"{url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise FetchError(f"{url}: {reason or type(exc).__name__}") from exc


def _read_body(
    response: http.client.HTTPResponse, url: str, deadline: float, max_bytes: int
) -> bytes:
    if response.status != 200:
        raise FetchError(f"{url}: HTTP {response.status} (only 200 is accepted)")
    content_type = response.headers.get("Content-Type")
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if not media.endswith("json"):
            raise FetchError(f"{url}: Content-Type {media!r} is not JSON")
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url}: {length} bytes is over the {max_bytes}-byte cap")
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: the body took longer than the timeout")
        chunk = response.read1(max_bytes + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise FetchError(f"{url}: the body is over the {max_bytes}-byte cap")
