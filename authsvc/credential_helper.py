"""``docker-credential-authsvc``: a Docker credential helper for AWS IAM identities.

Docker (and skopeo, podman, crane...) runs ``docker-credential-authsvc get`` with a
registry's address on stdin whenever it needs credentials for it. For a registry named
in the configuration this signs a fresh ``sts:GetCallerIdentity`` proof with the
machine's AWS credentials, exchanges it at authsvc for a session credential and answers
``{"ServerURL": ..., "Username": "<token>", "Secret": <session credential>}``. The
session credential is cached (``$XDG_CACHE_HOME/authsvc/credentials.json``, mode 0600)
until a minute before it expires, so a burst of pulls costs one exchange.

Configuration (``$AUTHSVC_CREDENTIAL_HELPER_CONFIG``, default
``~/.config/authsvc/credential-helper.json``)::

    {"registries": {"registry.example.com": {
        "server_id": "...",            # authsvc's identities.aws.server_id (required)
        "sts_host": "sts.amazonaws.com",
        "region": "us-east-1",         # default: the STS host's region
        "realm": "https://auth.example.com/token", "service": "registry.example.com"
    }}}                                # realm + service: default read from the registry

Use it per registry in ``~/.docker/config.json`` (``"credHelpers": {"registry.example.com":
"authsvc"}``), not as ``credsStore``: there is nothing to store, so ``store`` accepts and
discards what ``docker login`` hands it, and ``erase`` (``docker logout``) only forgets
the cached session credential. ``list`` shows the servers with a live cached one.

Errors go to stderr, and to stdout too when that is not a terminal, as the protocol
wants (Docker shows only stdout). A registry the configuration does not name answers
``credentials not found in native keychain`` with exit status 1, which Docker reads as
"no credentials": it goes on anonymously. No message ever contains a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "CACHE_MARGIN",
    "CONFIG_ENV",
    "NOT_FOUND",
    "TOKEN_USERNAME",
    "HelperError",
    "RegistryConfig",
    "cache_path",
    "config_path",
    "main",
    "server_key",
]

NAME = "docker-credential-authsvc"
#: The exact text Docker's helper client reads as "no credentials for this server".
NOT_FOUND = "credentials not found in native keychain"
#: The user name telling Docker that the secret is an identity (refresh) token.
TOKEN_USERNAME = "<token>"
#: The exact text Docker's helper client knows for an empty server URL.
MISSING_SERVER_URL = "no credentials server URL"
CONFIG_ENV = "AUTHSVC_CREDENTIAL_HELPER_CONFIG"
#: A cached session credential is used until this many seconds before it expires.
CACHE_MARGIN = 60
_CACHE_VERSION = 1


class HelperError(Exception):
    """What went wrong, for the user (never containing a secret)."""


class NotFound(HelperError):
    def __init__(self) -> None:
        super().__init__(NOT_FOUND)


@dataclass(frozen=True)
class RegistryConfig:
    server_id: str
    sts_host: str = "sts.amazonaws.com"
    region: str | None = None
    realm: str | None = None
    service: str | None = None

    def fingerprint(self) -> str:
        """What a cached credential was obtained with: a change of configuration or of
        ``AWS_PROFILE`` (another identity) makes it stale."""
        return json.dumps([asdict(self), os.environ.get("AWS_PROFILE")], sort_keys=True)


def config_path() -> Path:
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "authsvc" / "credential-helper.json"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "authsvc" / "credentials.json"


def server_key(server_url: str) -> str:
    """``registry.example.com:5000`` for ``https://Registry.example.com:5000/v2/``, for
    ``registry.example.com:5000`` and the like: the host (and port) names the registry."""
    value = server_url.strip()
    if "://" in value:
        value = urllib.parse.urlsplit(value).netloc
    return value.split("/", 1)[0].rsplit("@", 1)[-1].lower()


# -- configuration ----------------------------------------------------------------------


def _optional_str(entry: dict[str, Any], name: str, where: str) -> str | None:
    value = entry.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise HelperError(f"{where}: {name} must be a non-empty string")
    return value


def load_config(path: Path) -> dict[str, RegistryConfig]:
    """The configured registries by server key; none when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HelperError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HelperError(f"{path} is not JSON: {exc}") from exc
    registries = data.get("registries") if isinstance(data, dict) else None
    if not isinstance(registries, dict):
        raise HelperError(f'{path} must be {{"registries": {{"HOST": {{...}}}}}}')
    result: dict[str, RegistryConfig] = {}
    for name, entry in registries.items():
        where = f"{path}: registries.{name}"
        if not isinstance(entry, dict):
            raise HelperError(f"{where} must be an object")
        unknown = set(entry) - {"server_id", "sts_host", "region", "realm", "service"}
        if unknown:
            raise HelperError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        server_id = _optional_str(entry, "server_id", where)
        if server_id is None:
            raise HelperError(f"{where}: server_id is required")
        realm = _optional_str(entry, "realm", where)
        service = _optional_str(entry, "service", where)
        if (realm is None) != (service is None):
            raise HelperError(f"{where}: give realm and service together (or neither)")
        result[server_key(name)] = RegistryConfig(
            server_id=server_id,
            sts_host=_optional_str(entry, "sts_host", where) or "sts.amazonaws.com",
            region=_optional_str(entry, "region", where),
            realm=realm,
            service=service,
        )
    return result


# -- the cache --------------------------------------------------------------------------


@dataclass
class _Cache:
    servers: dict[str, dict[str, Any]]
    #: When a proof was last signed: SigV4 dates have one-second resolution, so two
    #: proofs signed by the same credentials within a second are identical, and authsvc
    #: takes the second for a replay.
    last_signed: float = 0.0


def _load_cache(path: Path) -> _Cache:
    """The cache; an unreadable or foreign file counts as empty (it is rewritten)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _Cache({})
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return _Cache({})
    servers = data.get("servers")
    last_signed = data.get("last_signed")
    return _Cache(
        {k: v for k, v in servers.items() if isinstance(v, dict)}
        if isinstance(servers, dict)
        else {},
        float(last_signed) if isinstance(last_signed, int | float) else 0.0,
    )


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)


def _save_cache(path: Path, cache: _Cache) -> None:
    """Write atomically: a 0600 file in a 0700 directory, replaced in one step."""
    _private_directory(path.parent)
    fd, temporary = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(
                {"version": _CACHE_VERSION, "last_signed": cache.last_signed,
                 "servers": cache.servers},
                handle,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise helpers updating the cache (BuildKit and ``compose pull`` ask in
    parallel): one exchanges, the others then find its session credential cached.
    Without ``fcntl`` (Windows) or a writable cache directory it goes unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        _private_directory(path.parent)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _live(entry: dict[str, Any], now: float) -> bool:
    expires_at = entry.get("expires_at")
    return (
        isinstance(entry.get("secret"), str)
        and isinstance(expires_at, int | float)
        and now < expires_at - CACHE_MARGIN
    )


# -- the actions ------------------------------------------------------------------------


def _cached(cache: _Cache, key: str, registry: RegistryConfig) -> str | None:
    entry = cache.servers.get(key)
    if entry and entry.get("fingerprint") == registry.fingerprint() and _live(entry, time.time()):
        secret = entry["secret"]
        assert isinstance(secret, str)  # _live checked it
        return secret
    return None


def get(server_url: str) -> dict[str, str]:
    key = server_key(server_url)
    registry = load_config(config_path()).get(key)
    if registry is None:
        raise NotFound()
    path = cache_path()
    secret = _cached(_load_cache(path), key, registry)
    if secret is None:
        with _locked(path):
            cache = _load_cache(path)  # another helper may have renewed it meanwhile
            secret = _cached(cache, key, registry) or _renew(
                server_url, key, registry, path, cache
            )
    return {"ServerURL": server_url, "Username": TOKEN_USERNAME, "Secret": secret}


def _renew(server_url: str, key: str, registry: RegistryConfig, path: Path,
           cache: _Cache) -> str:
    from authsvc import awsclient

    if registry.realm is not None and registry.service is not None:
        challenge = awsclient.challenge_for(realm=registry.realm, service=registry.service)
    else:
        challenge = awsclient.challenge_for(registry=server_url)
    wait = int(cache.last_signed) + 1 - time.time()
    if wait > 0:  # a proof was signed this very second: the next one must differ
        time.sleep(wait)
    now = time.time()
    cache.servers = {k: v for k, v in cache.servers.items() if k != key and _live(v, now)}
    try:
        credential = awsclient.login(
            challenge,
            server_id=registry.server_id,
            sts_host=registry.sts_host,
            region=registry.region,
        )
    except BaseException:
        cache.last_signed = time.time()  # the refused proof may have been spent too
        with contextlib.suppress(OSError):
            _save_cache(path, cache)
        raise
    cache.last_signed = time.time()
    if credential.expires_in > CACHE_MARGIN:
        cache.servers[key] = {
            "server_url": server_url,
            "secret": credential.secret,
            "expires_at": int(now) + credential.expires_in,
            "fingerprint": registry.fingerprint(),
        }
    try:
        _save_cache(path, cache)
    except OSError as exc:  # the credential is still good: only the cache is lost
        print(f"{NAME}: cannot write {path}: {exc.strerror}", file=sys.stderr)
    return credential.secret


def erase(server_url: str) -> None:
    path = cache_path()
    with _locked(path):
        cache = _load_cache(path)
        if cache.servers.pop(server_key(server_url), None) is not None:
            _save_cache(path, cache)


def list_servers() -> dict[str, str]:
    now = time.time()
    return {
        str(entry.get("server_url") or key): TOKEN_USERNAME
        for key, entry in _load_cache(cache_path()).servers.items()
        if _live(entry, now)
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("authsvc")
    except PackageNotFoundError:
        return "unknown"


def _server_url(stdin: TextIO) -> str:
    value = stdin.read().strip()
    if not value:
        raise HelperError(MISSING_SERVER_URL)
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``docker-credential-authsvc get|store|erase|list|version``; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    from authsvc.login import LoginError

    try:
        if len(args) != 1:
            raise HelperError(f"Usage: {NAME} <store|get|erase|list|version>")
        action = args[0]
        if action == "get":
            stdout.write(json.dumps(get(_server_url(stdin))) + "\n")
        elif action == "store":
            stdin.read()  # nothing to keep: a session credential is made fresh on `get`
        elif action == "erase":
            erase(_server_url(stdin))
        elif action == "list":
            stdout.write(json.dumps(list_servers()) + "\n")
        elif action == "version":
            stdout.write(f"{NAME} (authsvc) {_version()}\n")
        else:
            raise HelperError(f"Unknown credential action `{action}`")
    except NotFound as exc:
        return _fail(str(exc), stdout, stderr, prefix=False)
    except (HelperError, LoginError) as exc:
        return _fail(str(exc), stdout, stderr)
    except OSError as exc:
        return _fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}", stdout, stderr)
    return 0


def _fail(message: str, stdout: TextIO, stderr: TextIO, *, prefix: bool = True) -> int:
    print(f"{NAME}: {message}" if prefix else message, file=stderr)
    if not stdout.isatty():  # the protocol: Docker reads errors, verbatim, from stdout
        print(message, file=stdout)
    return 1


if __name__ == "__main__":
    sys.exit(main())
