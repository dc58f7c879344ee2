"""What each identity provider can vouch for: its kinds and the claims it issues.

The policy lint reads these to refuse rules that could never match (a claim the
provider never issues) or that could be fooled (a ``glob`` on a claim the provider
says must be matched exactly, such as an owner or account id). Providers added by
later identity kinds (OIDC presets, AWS) declare their schema here.
"""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.identity import Kind

__all__ = ["ANONYMOUS_SCHEMA", "STATIC_SCHEMA", "ProviderSchema", "builtin_schemas"]


@dataclass(frozen=True)
class ProviderSchema:
    name: str
    kinds: frozenset[Kind]
    #: The claims the provider issues; None when it is not known in advance.
    claims: frozenset[str] | None
    #: Security-critical claims a rule must match exactly (never with ``glob``).
    exact_claims: frozenset[str] = frozenset()

    def issues(self, claim: str) -> bool:
        return self.claims is None or claim in self.claims


STATIC_SCHEMA = ProviderSchema("static", frozenset({"human", "robot"}), frozenset())
ANONYMOUS_SCHEMA = ProviderSchema("anonymous", frozenset({"anonymous"}), frozenset())


def builtin_schemas() -> dict[str, ProviderSchema]:
    return {s.name: s for s in (STATIC_SCHEMA, ANONYMOUS_SCHEMA)}
