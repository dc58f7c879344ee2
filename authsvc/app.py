"""``create_app(settings, *, deps=None)``: wiring only.

The app holds one ``Runtime`` in ``app.extensions["authsvc"]``: the long-lived pieces
(store, verified-credential cache, audit sink, key ring source) and the current
``TokenService`` built from the current settings. ``Runtime.reload()`` validates a new
configuration first and swaps the service only if it is valid; the old one keeps
serving otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask

from authsvc.anomaly.backoff import Backoff
from authsvc.anomaly.risk import OpenAlerts
from authsvc.audit import AuditLog, new_event_id
from authsvc.audit.build import build_audit
from authsvc.audit.fingerprint import Fingerprinter, load_or_create_key
from authsvc.audit.sinks import SpoolingAuditLog
from authsvc.config import Settings, load_settings
from authsvc.errors import ConfigError, KeyRingError, StoreUnavailable
from authsvc.identity.aws.authenticator import AwsAuthenticator
from authsvc.identity.aws.settings import PROVIDER as AWS_PROVIDER
from authsvc.identity.aws.sts import StsClient
from authsvc.identity.cache import VerifiedCache
from authsvc.identity.oidc.authenticator import OidcAuthenticator
from authsvc.identity.oidc.build import KeyCaches, build_oidc
from authsvc.identity.oidc.fetch import Fetcher, UrllibFetcher
from authsvc.identity.sessions import IdentityLookup, Sessions
from authsvc.identity.static import PROVIDER as STATIC_PROVIDER
from authsvc.identity.static import StaticUsers
from authsvc.service import TokenService
from authsvc.store import Store, open_store
from authsvc.tokens import KeyRing, TokenMinter
from authsvc.web import audit as web_audit
from authsvc.web import errors as web_errors
from authsvc.web import health, keys, policy, token

__all__ = ["Dependencies", "KeyRingSource", "Runtime", "create_app"]

log = logging.getLogger(__name__)



def writer_id() -> str:
    """This process (host:pid), as the store and the audit log know it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class KeyRingSource:
    """The current key ring of a directory, re-read when its ``ring.json`` changes.

    A stat at most once a second keeps a rotation (``authsvc keys rotate``) effective in
    every worker without a restart; a ring that fails to load keeps the last good one.
    """

    def __init__(self, directory: Path, *, check_interval: float = 1.0) -> None:
        self.directory = directory
        self._interval = check_interval
        self._lock = threading.Lock()
        self._ring = KeyRing.load(directory)
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()

    def _read_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.directory / "ring.json")
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def __call__(self) -> KeyRing:
        if time.monotonic() - self._checked >= self._interval:
            self.refresh()
        return self._ring

    def refresh(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return
            try:
                ring = KeyRing.load(self.directory)
            except KeyRingError as exc:
                log.error(
                    "key ring in %s not reloaded, keeping the old one: %s", self.directory, exc
                )
                return
            self._ring, self._stamp = ring, stamp
            log.info("key ring reloaded: signing with %s", ring.signing_key.id)


@dataclass
class Dependencies:
    """Collaborators a test (or an embedder) may pass in instead of the defaults."""

    store: Store | None = None
    audit: AuditLog | None = None
    keyring: Callable[[], KeyRing] | None = None
    clock: Callable[[], float] = time.time
    cache_clock: Callable[[], float] = time.monotonic


@dataclass
class Runtime:
    settings: Settings
    store: Store
    audit: AuditLog
    keyring: Callable[[], KeyRing]
    cache: VerifiedCache
    clock: Callable[[], float]
    #: Keyed fingerprints of credentials for the audit trail.
    fingerprint: Callable[[str, str], str]
    #: The audit spool (``on_failure: spool``), whose state /readyz reports.
    spool: SpoolingAuditLog | None = None
    fetcher: Fetcher = field(default_factory=UrllibFetcher)
    service: TokenService = field(init=False)
    #: Per issuer: its key cache, kept across reloads that keep its key settings.
    oidc_keys: KeyCaches = field(default_factory=dict, init=False)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.service = self.build_service(self.settings)
        self._announce("config.load", self.settings, previous=None)

    def _validated(self, settings: Settings | None) -> Settings:
        if settings is None:
            if self.settings.source is None:
                raise ConfigError(["the running configuration has no file to re-read"])
            settings = load_settings(Path(self.settings.source))
        restart_only = [
            name
            # The running audit pipeline (its sink, spool and chain) is built once: a
            # reload that changed it would otherwise be silently ignored.
            for name in ("storage", "keys", "audit")
            if getattr(settings, name) != getattr(self.settings, name)
        ]
        if restart_only:
            raise ConfigError(
                [f"{name}: changing it needs a restart" for name in restart_only],
                source=settings.source,
            )
        return settings

    def _record_config_event(self, fields: dict[str, object]) -> None:
        event: dict[str, object] = {
            "event_id": new_event_id(),
            "time": int(self.clock()) * 1000,
            "writer": writer_id(),
            **fields,
        }
        try:
            self.audit.record(event)
        except Exception:  # not a token decision: log it, and keep serving
            log.exception("the audit log did not accept the %s event", fields["type"])

    def _announce(self, kind: str, settings: Settings, *, previous: Settings | None) -> None:
        """Tell the store and the audit log which configuration now decides."""
        for warning in settings.warnings:
            log.warning("policy lint: %s", warning)
        policy = self.service.policy.digest
        digest = settings.digest or policy
        event: dict[str, object] = {
            "type": kind,
            "outcome": "success",
            "reason": "CONFIG_APPLIED",
            "config": {"source": settings.source, "digest": digest, "policy": policy},
        }
        if previous is not None:
            event["previous"] = {"digest": previous.digest, "source": previous.source}
        self._record_config_event(event)
        now = int(self.clock())
        try:
            self.store.announce_config(writer_id(), digest, now)
        except StoreUnavailable as exc:
            log.warning("could not announce configuration %s to the store: %s",
                        digest[:12], exc.message)

    def build_service(self, settings: Settings) -> TokenService:
        users = StaticUsers(settings, self.cache)
        oidc = self._oidc(settings)
        providers: dict[str, IdentityLookup] = {STATIC_PROVIDER: users}
        if oidc is not None:
            providers.update(dict.fromkeys(settings.identities.oidc, oidc))
        aws = None
        if settings.identities.aws is not None:
            aws = AwsAuthenticator(
                settings.identities.aws, sts=StsClient(settings.identities.aws.sts_url),
                store=self.store, cache=self.cache,
            )
            providers[AWS_PROVIDER] = aws
        return TokenService(
            settings,
            users=users,
            sessions=Sessions(
                self.store, providers,
                audit=self.audit, fingerprint=self.fingerprint, clock=self.clock,
            ),
            minter=TokenMinter(self.keyring, settings.issuer),
            audit=self.audit,
            clock=self.clock,
            oidc=oidc,
            aws=aws,
            fingerprint=self.fingerprint,
            backoff=Backoff(self.store, settings.anomaly.backoff),
            open_alerts=OpenAlerts(self.store),
        )

    def _oidc(self, settings: Settings) -> OidcAuthenticator | None:
        authenticator, self.oidc_keys = build_oidc(
            settings.identities.oidc, store=self.store, cache=self.cache,
            fetcher=self.fetcher, clock=self.clock, previous=self.oidc_keys,
        )
        return authenticator

    def reload(self, settings: Settings | None = None) -> Settings:
        """Swap in a new configuration (re-read from its file when none is given).

        Raises ``ConfigError`` and keeps the current configuration when the new one is
        invalid or changes something that needs a restart.
        """
        with self._reload_lock:
            try:
                settings = self._validated(settings)
            except ConfigError as exc:
                self._record_config_event(
                    {"type": "config.reload", "outcome": "failure", "reason": "CONFIG_INVALID",
                     "problems": exc.problems, "config": {"source": exc.source}}
                )
                raise
            service = self.build_service(settings)
            if settings.identities.oidc != self.settings.identities.oidc:
                # Cached verified tokens were checked under the old issuer settings.
                self.cache.clear()
            self.cache.reconfigure(
                ttl=settings.credential_cache.ttl,
                max_entries=settings.credential_cache.max_entries,
            )
            if isinstance(self.keyring, KeyRingSource):
                self.keyring.refresh()
            previous = self.settings
            self.settings, self.service = settings, service
            log.info("configuration reloaded (policy %s)", service.policy.digest[:12])
            self._announce("config.reload", settings, previous=previous)
            return settings


def create_app(settings: Settings, *, deps: Dependencies | None = None) -> Flask:
    deps = deps or Dependencies()
    store = deps.store or open_store(settings.storage)
    keyring = deps.keyring or KeyRingSource(settings.keys.dir)
    spool = None
    audit = deps.audit
    if audit is None:
        audit, spool = build_audit(
            settings.audit, store=store, signer=lambda: keyring().signing_key
        )
    runtime = Runtime(
        settings=settings,
        store=store,
        audit=audit,
        spool=spool,
        fingerprint=Fingerprinter(load_or_create_key(settings.audit.key_file)),
        keyring=keyring,
        cache=VerifiedCache(
            ttl=settings.credential_cache.ttl,
            max_entries=settings.credential_cache.max_entries,
            clock=deps.cache_clock,
        ),
        clock=deps.clock,
    )
    app = Flask("authsvc")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["authsvc"] = runtime
    web_errors.init_app(app)
    for blueprint in (token.bp, health.bp, keys.bp, policy.bp, web_audit.bp):
        app.register_blueprint(blueprint)
    return app
