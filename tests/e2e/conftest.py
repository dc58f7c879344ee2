"""The token-flow stack: a real `authsvc serve`, the real registry 2.8 and skopeo.

`stack` (module scope) builds, under one temporary directory:

* a key directory with one ACTIVE key and one STAGED key (`authsvc keys generate` twice),
  so that `authsvc keys rotate` in the middle of a run needs no registry restart: the
  registry's bundle already holds the staged key's certificate;
* the PEM bundle (`authsvc keys bundle`) the registry verifies tokens against;
* bcrypt hashes made by `authsvc users hash --cost 10`, and the YAML configuration;
* `authsvc serve --workers 1 --threads 8` with stdout/stderr (gunicorn's log and the
  `authsvc.audit` JSON lines) in `authsvc.log`, ready when GET /readyz answers 200;
* the registry with `auth.token` pointing at that realm.

Failure messages built with `Stack.explain` end with the tails of both logs.

`running_stack(workdir, configure)` builds the same stack for a module that needs another
configuration (test_oidc_flow.py adds OIDC issuers and their rules).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from authsvc.audit import StreamAuditLog

from .harness import (
    HttpResponse,
    Registry,
    Result,
    Skopeo,
    free_port,
    http_request,
    require_e2e_binaries,
)

SERVICE = "registry.e2e"
ISSUER = "authsvc-e2e"
PASSWORDS: Mapping[str, str] = {
    "alice": "alice-e2e-secret",
    "reader": "reader-e2e-secret",
    "admin": "admin-e2e-secret",
}
AUTHSVC_START_TIMEOUT = 30.0
LOG_TAIL_LINES = 40
AUDIT_LOGGER = StreamAuditLog.PREFIX


def authsvc_argv(*args: str) -> list[str]:
    """`authsvc ARGS...` run with this interpreter (the editable install)."""
    return [sys.executable, "-m", "authsvc", *args]


def run_authsvc(*args: str, stdin: str = "", timeout: float = 60.0) -> str:
    """Run one `authsvc` CLI command; return stdout, raise with stderr on failure."""
    proc = subprocess.run(
        authsvc_argv(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"authsvc {' '.join(args)} exited {proc.returncode}\n--- stderr:\n{proc.stderr}"
        )
    return proc.stdout


def basic_auth(username: str, password: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def _b64url_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return value


def jwt_header(token: str) -> dict[str, Any]:
    """The (unverified) JOSE header of a compact JWT."""
    return _b64url_json(token.split(".")[0])


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a compact JWT."""
    return _b64url_json(token.split(".")[1])


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _without_info(registry_log: str) -> str:
    """The registry's access-log lines, warnings and errors (its info lines are long)."""
    return "\n".join(line for line in registry_log.splitlines() if "level=info" not in line)


@dataclass(frozen=True)
class KeyEntry:
    """One line of `authsvc keys list`."""

    id: str
    algorithm: str
    state: str
    kid: str


def list_keys(keys_dir: Path) -> tuple[KeyEntry, ...]:
    """The key ring as `authsvc keys list` shows it now."""
    entries: list[KeyEntry] = []
    for line in run_authsvc("keys", "list", "--dir", str(keys_dir)).splitlines():
        key_id, algorithm, state, kid, _thumbprint = line.split("\t")
        entries.append(KeyEntry(key_id, algorithm, state, kid))
    return tuple(entries)


class AuthService:
    """`authsvc serve` as a subprocess, logging to `log_path`."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return self.url + "/token"

    def start(self, timeout: float = AUTHSVC_START_TIMEOUT) -> None:
        """Start `authsvc serve` and wait for GET /readyz == 200.

        A lost race for the port (taken between `free_port()` and gunicorn's bind) is
        retried on a fresh port, so start it before anything uses `realm`.
        """
        for attempt in range(3):
            mark = len(self.log_text())
            if self._spawn_and_wait(timeout):
                return
            if attempt < 2 and "Address already in use" in self.log_text()[mark:]:
                self.port = free_port()
                continue
            raise RuntimeError(
                f"authsvc serve on port {self.port} did not become ready; log:\n"
                + _tail(self.log_text())
            )

    def _spawn_and_wait(self, timeout: float) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        env["PYTHONUNBUFFERED"] = "1"
        argv = authsvc_argv(
            "serve",
            "--config",
            str(self.config_path),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--threads",
            "8",
        )
        with self.log_path.open("ab") as log:
            log.write(f"--- e2e: starting authsvc on port {self.port}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request("GET", self.url + "/readyz", timeout=1.0).status == 200:
                    return True
            time.sleep(0.1)
        self.stop()
        return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # gunicorn's arbiter stops its worker gracefully on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    """The running authsvc + registry pair and everything a test needs to talk to them."""

    workdir: Path
    keys_dir: Path
    bundle: Path
    authsvc: AuthService
    registry: Registry
    initial_keys: tuple[KeyEntry, ...]
    passwords: Mapping[str, str] = field(default_factory=lambda: dict(PASSWORDS))

    # -- addresses
    @property
    def host(self) -> str:
        return self.registry.host

    def ref(self, repository: str, tag: str = "latest") -> str:
        return self.registry.ref(repository, tag)

    def creds(self, user: str) -> str:
        return f"{user}:{self.passwords[user]}"

    # -- diagnostics
    def explain(self, what: str = "") -> str:
        """`what` followed by the tails of the authsvc and registry logs."""
        return (
            f"{what}\n--- authsvc log (tail):\n{_tail(self.authsvc.log_text())}"
            f"\n--- registry log (tail, level=info lines left out):\n"
            f"{_tail(_without_info(self.registry.log_text()))}"
        )

    def ok(self, result: Result) -> Result:
        """`result` when skopeo succeeded; otherwise fail with its stderr and both logs."""
        if result.returncode != 0:
            pytest.fail(
                self.explain(
                    f"skopeo failed (exit {result.returncode}): {' '.join(result.argv)}\n"
                    f"--- skopeo stderr:\n{result.stderr}\n--- skopeo stdout:\n{result.stdout}"
                ),
                pytrace=False,
            )
        return result

    def refused(self, result: Result, *reasons: str) -> Result:
        """`result` when skopeo failed and its stderr holds every one of `reasons`."""
        missing = [reason for reason in reasons if reason not in result.stderr]
        if result.returncode == 0 or missing:
            pytest.fail(
                self.explain(
                    f"expected skopeo to fail with {reasons!r}; exit {result.returncode}, "
                    f"missing {missing!r}: {' '.join(result.argv)}\n"
                    f"--- skopeo stderr:\n{result.stderr}\n--- skopeo stdout:\n{result.stdout}"
                ),
                pytrace=False,
            )
        return result

    def skopeo(self, name: str) -> Skopeo:
        """A fresh skopeo environment (own authfile and blob-info cache)."""
        directory = self.workdir / "skopeo" / name
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = self.workdir / "skopeo" / f"{name}-{suffix}"
        return Skopeo(directory)

    # -- talking to authsvc directly
    def token_response(
        self,
        scopes: Sequence[str] = (),
        *,
        user: str | None = None,
        password: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """GET /token as a client would (Basic auth when `user` is given)."""
        query: list[tuple[str, str]] = [("service", SERVICE)]
        query += [("scope", scope) for scope in scopes]
        headers: dict[str, str] = {"User-Agent": "authsvc-e2e-tests"}
        if user is not None:
            query.append(("account", user))
            secret = password if password is not None else self.passwords[user]
            headers.update(basic_auth(user, secret))
        query += list((extra or {}).items())
        url = self.authsvc.realm + "?" + urllib.parse.urlencode(query)
        return http_request("GET", url, headers=headers)

    def token(self, scopes: Sequence[str] = (), *, user: str | None = None) -> str:
        """A registry token for `scopes` (asserting that authsvc answered 200)."""
        response = self.token_response(scopes, user=user)
        assert response.status == 200, self.explain(
            f"GET /token as {user!r} for {scopes!r}: {response.status} {response.body!r}"
        )
        token: str = response.json()["token"]
        return token

    def audit_events(self) -> list[dict[str, Any]]:
        """Every token decision authsvc has logged so far (`token.issue`), oldest first."""
        events: list[dict[str, Any]] = []
        for line in self.authsvc.log_text().splitlines():
            found, payload = line.startswith(AUDIT_LOGGER), line[len(AUDIT_LOGGER) :]
            if found and payload.startswith("{"):
                event = json.loads(payload)
                if event.get("type") == "token.issue":
                    events.append(event)
        return events

    def key_ring(self) -> tuple[KeyEntry, ...]:
        """The key ring as `authsvc keys list` shows it now."""
        return list_keys(self.keys_dir)


def _config(keys_dir: Path, hashes: Mapping[str, str]) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "services": [SERVICE],
        "keys": {"dir": str(keys_dir)},
        "storage": "memory://",
        # the tests read each decision from authsvc's standard error
        "audit": {"stderr": True},
        "identities": {
            "static": {
                "users": {
                    "alice": {"password_hash": hashes["alice"], "groups": ["dev"]},
                    "reader": {"password_hash": hashes["reader"], "groups": ["readers"]},
                    "admin": {"password_hash": hashes["admin"]},
                }
            }
        },
        "rules": [
            {  # no delete for alice
                "id": "dev",
                "match": {"groups": ["dev"]},
                "allow": [{"repository": "team/**", "actions": ["pull", "push"]}],
            },
            {
                "id": "readers",
                "match": {"groups": ["readers"]},
                "allow": [{"repository": "team/**", "actions": ["pull"]}],
            },
            {
                "id": "admin",
                "match": {"account": "admin"},
                "allow": [
                    {"repository": "**", "actions": ["*"]},
                    {"registry": "catalog", "actions": ["*"]},
                ],
            },
            {
                "id": "public",
                "match": {"anonymous": True},
                "allow": [{"repository": "public/**", "actions": ["pull"]}],
            },
        ],
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach both logs' tails to a failed test that uses `stack`, unless its message has them."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    explained = "--- authsvc log (tail)" in str(report.longrepr)
    if report.failed and isinstance(stack, Stack) and not explained:
        report.sections.append(("authsvc log (tail)", _tail(stack.authsvc.log_text())))
        report.sections.append(
            (
                "registry log (tail, level=info lines left out)",
                _tail(_without_info(stack.registry.log_text())),
            )
        )
    return report


@contextlib.contextmanager
def running_stack(
    workdir: Path, configure: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[Stack]:
    """Keys, bundle, hashes and config under `workdir`; `authsvc serve`, then the registry.

    `configure` may change the configuration (a dict, as `_config` builds it) before it
    is written, e.g. to add OIDC issuers and their rules. Both processes are stopped on
    exit.
    """
    keys_dir = workdir / "keys"
    run_authsvc("keys", "generate", "--dir", str(keys_dir))  # active
    run_authsvc("keys", "generate", "--dir", str(keys_dir))  # staged: published, not signing
    bundle = workdir / "bundle.pem"
    bundle.write_text(run_authsvc("keys", "bundle", "--dir", str(keys_dir)))
    assert bundle.read_text().count("BEGIN CERTIFICATE") == 2

    hashes = {
        user: run_authsvc("users", "hash", "--cost", "10", stdin=password + "\n").strip()
        for user, password in PASSWORDS.items()
    }
    config = _config(keys_dir, hashes)
    if configure is not None:
        configure(config)
    config_path = workdir / "authsvc.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    initial_keys = list_keys(keys_dir)
    assert [k.state for k in initial_keys] == ["active", "staged"], initial_keys

    authsvc = AuthService(config_path, workdir / "authsvc.log")
    registry: Registry | None = None
    try:
        authsvc.start()  # first: the registry's realm names authsvc's (final) port
        registry = Registry(
            workdir / "registry",
            realm=authsvc.realm,
            service=SERVICE,
            issuer=ISSUER,
            rootcertbundle=bundle,
        )
        registry.start()
        yield Stack(
            workdir=workdir,
            keys_dir=keys_dir,
            bundle=bundle,
            authsvc=authsvc,
            registry=registry,
            initial_keys=initial_keys,
        )
    finally:
        if registry is not None:
            registry.stop()
        authsvc.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_e2e_binaries()
    with running_stack(tmp_path_factory.mktemp("token-flow")) as running:
        yield running
