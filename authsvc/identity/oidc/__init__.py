"""Workload and SSO identity from OIDC ID tokens (CI runners, clusters, clouds, SSO).

    settings.py   the `identities.oidc.NAME` configuration, validated at load
    presets.py    what each platform's tokens carry and what rules on them must pin
    fetch.py      fetching documents: https only (loopback http), no redirects, caps
    jwk.py        JWKS documents to public keys; choosing the key for a token
    keys.py       per-issuer JWKS cache (discovery, TTL, kid-miss cooldown, staleness)
    verify.py     the only place that decodes an incoming JWT
    authenticator.py  verified token -> Identity, one-time use (jti), password reuse
"""
