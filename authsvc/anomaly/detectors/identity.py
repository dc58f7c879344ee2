"""Detectors of a credential used where or how it should not be: a CI identity outside
CI, a principal in a new context, a dormant credential, a one-time proof presented again."""

from __future__ import annotations

from collections.abc import Iterator

from authsvc.anomaly.engine import Finding, Found
from authsvc.anomaly.settings import (
    DAY,
    REMEMBER,
    CiOutsideCi,
    DormantCredential,
    NewContext,
    ProofReuse,
)
from authsvc.anomaly.state import Handle, Ops
from authsvc.anomaly.view import REPLAY_REASONS, EventView, prefix_of

__all__ = [
    "CiOutsideCiDetector",
    "DormantCredentialDetector",
    "NewContextDetector",
    "ProofReuseDetector",
]


class CiOutsideCiDetector:
    """A CI or robot identity used from outside its runner networks (declared, or the
    ones learned for its provider), or from an interactive client (page)."""

    name = "ci_outside_ci"

    def __init__(self, settings: CiOutsideCi) -> None:
        self.settings = settings
        self.severity = settings.severity

    def _watched(self, view: EventView) -> bool:
        s = self.settings
        return view.succeeded and (view.kind in s.kinds or view.provider in s.providers)

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not self._watched(view):
            return
        s = self.settings
        assert view.provider is not None and view.principal is not None
        declared = s.provider_networks.get(view.provider, s.runner_networks)
        evidence: dict[str, object] = {
            "ip": view.ip,
            "client": view.client,
            "provider": view.provider,
        }
        if view.claims.get("repository"):
            evidence["repository"] = view.claims["repository"]
        if view.client in s.interactive_clients:
            found(
                Finding(
                    entity=view.principal,
                    window=DAY,
                    key="client",
                    evidence={**evidence, "why": "interactive client"},
                )
            )
        if declared:
            if not set(declared) & set(view.named_networks):
                found(
                    Finding(
                        entity=view.principal,
                        window=DAY,
                        key=f"net:{view.network}",
                        evidence={
                            **evidence,
                            "why": "outside the runner networks",
                            "runner_networks": list(declared),
                        },
                    )
                )
            return
        network = prefix_of(view.ip, s.learn_prefix, min(128, s.learn_prefix * 3))
        if network is None:
            return
        since = ops.first(f"ci:since:{view.provider}", str(view.now), REMEMBER)
        new = ops.remember(f"ci:networks:{view.provider}", network, REMEMBER)
        yield
        if since.value is None or view.now - int(since.value) < s.learning or not new.value:
            return
        found(
            Finding(
                entity=view.principal,
                window=DAY,
                key=f"net:{network}",
                evidence={
                    **evidence,
                    "why": "a network never seen for this provider",
                    "network": network,
                },
            )
        )


class NewContextDetector:
    """A principal's first use of a network, ASN, country or client family after its
    learning period, unless many principals used that context lately."""

    name = "new_context"

    def __init__(self, settings: NewContext, watched_by_ci: CiOutsideCi) -> None:
        self.settings = settings
        self.severity = settings.severity
        self._ci = watched_by_ci

    def _contexts(self, view: EventView) -> list[tuple[str, str]]:
        wanted = self.settings.contexts
        found: list[tuple[str, str]] = []
        if "network" in wanted and view.network:
            found.append(("network", view.network))
        if "asn" in wanted and view.asn:
            found.append(("asn", view.asn))
        if "country" in wanted and view.country:
            found.append(("country", view.country))
        if "client" in wanted and view.client:
            found.append(("client", view.client))
        return found

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded or view.kind == "ci" or view.provider in self._ci.providers:
            return
        s = self.settings
        principal = view.principal
        assert principal is not None
        contexts = self._contexts(view)
        if not contexts:
            return
        since = ops.first(f"ctx:since:{principal}", str(view.now), REMEMBER)
        checks: list[tuple[str, str, Handle[bool], Handle[int]]] = []
        for dimension, value in contexts:
            checks.append(
                (
                    dimension,
                    value,
                    ops.remember(f"ctx:{dimension}:{principal}", value, REMEMBER),
                    ops.distinct(f"ctx:users:{dimension}:{value}", [principal], s.window),
                )
            )
        yield
        if since.value is None or view.now - int(since.value) < s.learning:
            return
        for dimension, value, new, sharing in checks:
            if new.value and sharing.value < s.shared_by:
                found(
                    Finding(
                        entity=principal,
                        window=s.window,
                        key=f"{dimension}:{value}",
                        evidence={
                            "context": dimension,
                            "value": value,
                            "principals_sharing": sharing.value,
                            "shared_by": s.shared_by,
                            "ip": view.ip,
                            "client": view.client,
                        },
                    )
                )


class DormantCredentialDetector:
    """A credential (by fingerprint) or account unused for ``idle`` seconds used again."""

    name = "dormant_credential"

    def __init__(self, settings: DormantCredential) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        if not view.succeeded:
            return
        idle = self.settings.idle
        keep = max(REMEMBER, idle * 4)
        assert view.principal is not None
        seen = [
            (
                "account",
                view.principal,
                ops.swap(f"seen:account:{view.principal}", str(view.now), keep),
            )
        ]
        if view.fingerprint and view.credential == "password":
            seen.append(
                (
                    "credential",
                    view.fingerprint,
                    ops.swap(f"seen:credential:{view.fingerprint}", str(view.now), keep),
                )
            )
        yield
        for what, which, last in seen:
            if last.value is not None and view.now - int(last.value) >= idle:
                found(
                    Finding(
                        entity=view.principal,
                        window=idle,
                        key=what,
                        evidence={
                            "unused_for_seconds": view.now - int(last.value),
                            "idle": idle,
                            "last_used": int(last.value),
                            what: which,
                        },
                    )
                )
                return


class ProofReuseDetector:
    """An OIDC token or AWS signed request presented for a second exchange (page),
    unless it is its own client retrying: the same address within ``grace`` seconds of
    the exchange that used it (a job whose answer was lost sends it again)."""

    name = "proof_reuse"

    def __init__(self, settings: ProofReuse) -> None:
        self.settings = settings
        self.severity = settings.severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        s = self.settings
        if view.credential == "subject_token" and view.fingerprint and view.succeeded:
            ops.first(f"proof:{view.fingerprint}", f"{view.now}|{view.ip}", s.remember)
            return
        if view.outcome != "failure" or view.reason not in REPLAY_REASONS:
            return
        first = ops.get(f"proof:{view.fingerprint}") if view.fingerprint else None
        yield
        if first is not None and first.value:
            used_at, _, used_from = first.value.partition("|")
            if used_from == view.ip and view.now - int(used_at) <= s.grace:
                return  # the client retrying its own exchange
        who = view.principal or (
            f"{view.provider}:{view.claims.get('sub')}"
            if view.provider and view.claims.get("sub")
            else None
        )
        entity = who or f"credential:{view.fingerprint or view.event_id}"
        evidence: dict[str, object] = {
            "ip": view.ip,
            "client": view.client,
            "claims": {
                k: v for k, v in view.claims.items() if k in ("iss", "jti", "repository", "arn")
            },
        }
        if first is not None and first.value:
            used_at, _, used_from = first.value.partition("|")
            evidence.update(
                first_used_from=used_from, seconds_after_first_use=view.now - int(used_at)
            )
        found(Finding(entity=entity, window=3600, key=view.fingerprint or "", evidence=evidence))
