"""Explain a decision: for each requested scope and action, the verdict and its rules.

``explain`` calls the very ``Policy.decide`` the token endpoint calls, and renders the
``Decision`` it returns; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from authsvc.errors import BadRequest
from authsvc.identity import ANONYMOUS, Identity, Kind
from authsvc.policy.engine import Decision, Policy
from authsvc.scopes import format_scope, parse_scopes

__all__ = ["as_json", "build_identity", "explain", "render_text"]

#: The kinds a named identity can have (anonymous is asked for with ``anonymous``).
_KINDS: tuple[Kind, ...] = ("human", "robot", "ci")


def build_identity(
    *,
    account: str | None,
    groups: Iterable[str] = (),
    kind: str | None = None,
    provider: str | None = None,
    claims: Mapping[str, object] | None = None,
    anonymous: bool = False,
) -> Identity:
    """The identity to explain for, from its parts (refused with a reason if they clash)."""
    if anonymous:
        if account or list(groups) or claims or kind or provider:
            raise BadRequest(
                "an anonymous identity has no account, groups, claims, kind or provider"
            )
        return ANONYMOUS
    if not account:
        raise BadRequest("give an account (or ask for the anonymous identity)")
    if kind is not None and kind not in _KINDS:
        raise BadRequest(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    return Identity(
        subject=account,
        kind=kind or "human",
        provider=provider or "static",
        account=account,
        groups=frozenset(groups),
        claims=dict(claims or {}),
    )


def explain(policy: Policy, identity: Identity, scopes: Iterable[str]) -> Decision:
    return policy.decide(identity, parse_scopes(scopes))


def as_json(identity: Identity, decision: Decision) -> dict[str, Any]:
    return {
        "policy": decision.policy,
        "identity": {
            "account": identity.account,
            "kind": identity.kind,
            "provider": identity.provider,
            "groups": sorted(identity.groups),
            "claims": dict(identity.claims),
        },
        "matched_rules": list(decision.matched_rules),
        "scopes": [
            {
                "scope": format_scope(scope.requested),
                "actions": [
                    {
                        "action": a.action,
                        "decision": "granted" if a.granted else "denied",
                        "allowed_by": list(a.allowed_by),
                        "denied_by": list(a.denied_by),
                        "explanation": a.explanation,
                    }
                    for a in scope.actions
                ],
            }
            for scope in decision.scopes
        ],
        "granted": [format_scope(s) for s in decision.granted],
    }


def render_text(identity: Identity, decision: Decision) -> str:
    who = "anonymous" if identity.anonymous else (
        f"{identity.account} (kind {identity.kind}, provider {identity.provider}"
        + (f", groups {', '.join(sorted(identity.groups))}" if identity.groups else "")
        + ")"
    )
    lines = [
        f"identity: {who}",
        f"rules matching the identity: {', '.join(decision.matched_rules) or 'none'}",
    ]
    for scope in decision.scopes:
        resource = format_scope(scope.requested).rsplit(":", 1)[0]
        for action in scope.actions:
            verdict = "GRANTED" if action.granted else "DENIED "
            lines.append(f"{verdict} {resource} {action.action}: {action.explanation}")
    granted = " ".join(format_scope(s) for s in decision.granted) or "(nothing)"
    lines.append(f"token access: {granted}")
    return "\n".join(lines)
