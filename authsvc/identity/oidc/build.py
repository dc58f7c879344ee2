"""Build the OIDC authenticator from ``identities.oidc`` (resolved by the config loader).

Key caches are expensive to warm and shared across reloads: an issuer whose key
settings (issuer URL, jwks_uri, algorithms, TTL, cooldown) are unchanged keeps its
cache; a changed or new one gets a fresh cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from authsvc.identity.cache import VerifiedCache
from authsvc.identity.oidc.authenticator import IssuerPolicy, OidcAuthenticator
from authsvc.identity.oidc.fetch import Fetcher
from authsvc.identity.oidc.keys import IssuerKeys
from authsvc.identity.oidc.settings import OidcIssuerSettings
from authsvc.identity.oidc.verify import IssuerConfig, OidcVerifier
from authsvc.store import Store

__all__ = ["KeyCaches", "build_oidc"]

#: Per issuer name: the key settings its cache was built for, and the cache.
KeyCaches = dict[str, tuple[tuple[object, ...], IssuerKeys]]


def build_oidc(
    issuers: Mapping[str, OidcIssuerSettings],
    *,
    store: Store,
    cache: VerifiedCache,
    fetcher: Fetcher,
    clock: Callable[[], float],
    previous: KeyCaches,
) -> tuple[OidcAuthenticator | None, KeyCaches]:
    if not issuers:
        return None, {}
    kept: KeyCaches = {}
    configs: dict[str, IssuerConfig] = {}
    policies: dict[str, IssuerPolicy] = {}
    for name, issuer in issuers.items():
        assert issuer.issuer is not None and issuer.kind is not None  # resolved at load
        built_for = (issuer.issuer, issuer.jwks_uri, issuer.algorithms, issuer.jwks_ttl,
                     issuer.jwks_refresh_cooldown)
        old = previous.get(name)
        keys = old[1] if old is not None and old[0] == built_for else IssuerKeys(
            name=name, issuer=issuer.issuer, jwks_uri=issuer.jwks_uri,
            algorithms=issuer.algorithms, jwks_ttl=issuer.jwks_ttl,
            refresh_cooldown=issuer.jwks_refresh_cooldown, store=store, fetcher=fetcher,
            clock=clock,
        )
        kept[name] = (built_for, keys)
        configs[name] = IssuerConfig(
            name=name, issuer=issuer.issuer, audience=issuer.audience, keys=keys,
            algorithms=issuer.algorithms, leeway=issuer.leeway,
            max_token_age=issuer.max_token_age, max_lifetime=issuer.max_lifetime,
            allow_audience_list=issuer.allow_audience_list,
        )
        policies[name] = IssuerPolicy(
            name=name, preset=issuer.preset, kind=issuer.kind,
            subject_claim=issuer.subject_claim or "sub",
            username_claim=issuer.username_claim, groups_claim=issuer.groups_claim,
            require_jti=bool(issuer.require_jti), password_reuse=issuer.password_reuse,
            leeway=issuer.leeway,
            max_token_age=issuer.max_token_age,
        )
    return OidcAuthenticator(OidcVerifier(configs), policies, store=store, cache=cache), kept
