"""Workload and SSO identity from OIDC ID tokens (CI runners, clusters, clouds, SSO).

    settings.py   the `identities.oidc.NAME` configuration, validated at load
    presets.py    what each platform's tokens carry and what rules on them must pin
    keys.py       per-issuer JWKS cache (discovery, TTL, kid-miss cooldown, staleness)
    verify.py     the only place that decodes an incoming JWT
    authenticator.py  verified token -> Identity, one-time use (jti), password reuse
"""
