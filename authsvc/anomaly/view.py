"""What detectors read of an audit event: one flat, typed view, built once per event.

The view never reads a clock: ``now`` is the event's own time (seconds), so replaying a
log gives the answers the live run gave. Sources are named as entities the alerts
carry: ``ip:203.0.113.9``, ``net:203.0.113.0/24`` (``/48`` for IPv6; the ASN,
``asn:AS64500``, when a database is configured; the name of an ``anomaly.networks``
set when the address is in one).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["EventView", "GeoLookup", "Networks", "client_family", "view_of"]

#: Failure reasons that mean "this user name and secret did not match".
BAD_PASSWORD = frozenset({"INVALID_CREDENTIALS", "UNKNOWN_USER"})
#: A one-time proof presented for a second exchange.
REPLAY_REASONS = frozenset({"TOKEN_REPLAYED"})


class GeoLookup(Protocol):
    def asn(self, ip: str) -> str | None: ...

    def country(self, ip: str) -> str | None: ...


class Networks:
    """Named CIDR sets (``anomaly.networks``) and the optional ASN/country databases."""

    def __init__(
        self, sets: Mapping[str, Sequence[str]] | None = None, geo: GeoLookup | None = None
    ) -> None:
        self._sets = [
            (name, ipaddress.ip_network(cidr))
            for name, cidrs in (sets or {}).items()
            for cidr in cidrs
        ]
        self._geo = geo
        self._cache: dict[str, tuple[str, ...]] = {}

    def named(self, ip: str) -> tuple[str, ...]:
        """The names of the sets holding ``ip`` (in configuration order)."""
        found = self._cache.get(ip)
        if found is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                found = ()
            else:
                found = tuple(dict.fromkeys(n for n, net in self._sets if address in net))
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[ip] = found
        return found

    def asn(self, ip: str) -> str | None:
        return self._geo.asn(ip) if self._geo is not None else None

    def country(self, ip: str) -> str | None:
        return self._geo.country(ip) if self._geo is not None else None


@functools.lru_cache(maxsize=65536)
def prefix_of(ip: str, v4: int = 24, v6: int = 48) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    bits = v4 if address.version == 4 else v6
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


@functools.lru_cache(maxsize=4096)
def client_family(user_agent: str) -> str:
    """A coarse client family from a User-Agent: docker, docker-desktop, podman, ..."""
    ua = user_agent.strip()
    lower = ua.lower()
    if not ua:
        return "none"
    if lower.startswith("mozilla/"):
        return "browser"
    if lower.startswith("docker/"):
        # Docker Desktop's engine runs in a Linux VM (os/linux); the CLI that called it
        # says where it runs in ``UpstreamClient(Docker-Client/24.0.7 \(darwin\))``.
        return "docker-desktop" if "darwin" in lower or "windows" in lower else "docker"
    for prefix, family in (
        ("libpod/", "podman"),
        ("podman/", "podman"),
        ("skopeo/", "skopeo"),
        ("buildah/", "buildah"),
        ("containerd/", "containerd"),
        ("cri-o/", "cri-o"),
        ("go-containerregistry", "crane"),
        ("crane/", "crane"),
        ("curl/", "curl"),
        ("python-requests/", "python"),
        ("go-http-client/", "go"),
        ("authsvc/", "authsvc"),
    ):
        if lower.startswith(prefix):
            return family
    return lower.split("/", 1)[0][:32] or "other"


def _scope_parts(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(type, name, actions) of ``type:name:actions`` (a name may hold ``host:port``)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return kind, name, tuple(a for a in actions.split(",") if a)


@dataclass(frozen=True)
class EventView:
    event_id: str
    time_ms: int
    type: str
    outcome: str
    reason: str
    #: Who was authenticated (``provider:account``), or None when nobody was.
    principal: str | None
    #: The user name a password request gave (failures have no principal).
    username: str | None
    kind: str | None
    provider: str | None
    credential: str
    fingerprint: str | None
    groups: tuple[str, ...]
    claims: Mapping[str, Any]
    ip: str
    #: ``net:`` entity of the source (a named set, the ASN, or the /24 or /48).
    network: str | None
    asn: str | None
    country: str | None
    #: Names of the ``anomaly.networks`` sets holding the address.
    named_networks: tuple[str, ...]
    client: str
    granted: tuple[tuple[str, str, tuple[str, ...]], ...] = field(default=())
    denied: tuple[tuple[str, str, tuple[str, ...]], ...] = field(default=())

    @property
    def now(self) -> int:
        return self.time_ms // 1000

    @property
    def succeeded(self) -> bool:
        return self.outcome in ("success", "partial") and self.principal is not None

    @property
    def bad_password(self) -> bool:
        return self.outcome == "failure" and self.reason in BAD_PASSWORD and bool(self.username)

    def repositories(self, action: str, *, granted: bool = True) -> list[str]:
        scopes = self.granted if granted else self.denied
        return sorted(
            {name for kind, name, actions in scopes if kind == "repository" and action in actions}
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _scopes(values: object) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    if not isinstance(values, list):
        return ()
    parsed = (_scope_parts(v) for v in values if isinstance(v, str))
    return tuple(p for p in parsed if p is not None)


def view_of(event: Mapping[str, Any], networks: Networks) -> EventView | None:
    """The view of a decision event, or None for events detectors do not read
    (checkpoints, configuration, alerts) or that lack an id or a time."""
    if event.get("type") != "token.issue":
        return None
    event_id, time_ms = event.get("event_id"), event.get("time")
    if not isinstance(event_id, str) or not isinstance(time_ms, int):
        return None
    actor = event.get("actor") if isinstance(event.get("actor"), dict) else {}
    client = event.get("client") if isinstance(event.get("client"), dict) else {}
    decision = event.get("decision") if isinstance(event.get("decision"), dict) else {}
    assert isinstance(actor, dict) and isinstance(client, dict) and isinstance(decision, dict)
    provider = _text(actor.get("provider"))
    who = _text(actor.get("account")) or _text(actor.get("subject"))
    kind = _text(actor.get("kind"))
    principal = f"{provider}:{who}" if provider and who and kind != "anonymous" else None
    ip = _text(client.get("ip")) or ""
    named = networks.named(ip) if ip else ()
    asn = networks.asn(ip) if ip else None
    prefix = prefix_of(ip) if ip else None
    if named:
        network: str | None = f"net:{named[0]}"
    elif asn:
        network = f"asn:{asn}"
    else:
        network = f"net:{prefix}" if prefix else None
    groups = actor.get("groups")
    claims = actor.get("claims")
    return EventView(
        event_id=event_id,
        time_ms=time_ms,
        type="token.issue",
        outcome=_text(event.get("outcome")) or "",
        reason=_text(event.get("reason")) or "",
        principal=principal,
        username=_text(actor.get("username")),
        kind=kind,
        provider=provider,
        credential=_text(actor.get("credential")) or "",
        fingerprint=_text(actor.get("fingerprint")),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        claims=claims if isinstance(claims, dict) else {},
        ip=ip,
        network=network,
        asn=asn,
        country=networks.country(ip) if ip else None,
        named_networks=named,
        client=client_family(_text(client.get("user_agent")) or ""),
        granted=_scopes(decision.get("granted")),
        denied=_scopes(decision.get("denied")),
    )
