"""OidcVerifier against real issuers on 127.0.0.1: the attack table, then happy paths.

Every refusal asserts its reason code and a fragment of its message, and that the
message does not repeat the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from authsvc.errors import InvalidCredentials, ServiceUnavailable
from authsvc.identity.oidc.keys import IssuerKeys, UrllibFetcher
from authsvc.identity.oidc.verify import (
    MAX_TOKEN_BYTES,
    IssuerConfig,
    OidcVerifier,
    VerifiedToken,
    looks_like_jwt,
    unverified_issuer,
)
from authsvc.store.memory import MemoryStore
from tests import oidc_issuer
from tests.oidc_issuer import AUDIENCE, JWKS, Fault, MakeIssuer, TestIssuer, b64url

# The fixtures, by assignment (an import would be "redefined" by each test's argument).
issuer = oidc_issuer.issuer
make_issuer = oidc_issuer.make_issuer

LEEWAY = 30
MAX_AGE = 3600
MAX_LIFETIME = 86400

MakeVerifier = Callable[..., OidcVerifier]


@pytest.fixture
def now() -> int:
    return int(time.time())


@pytest.fixture
def make_verifier() -> MakeVerifier:
    """``make_verifier(*issuers, **IssuerConfig overrides)``: issuers named i0, i1..."""
    store = MemoryStore()

    def make(*issuers: TestIssuer, **overrides: Any) -> OidcVerifier:
        configs: dict[str, IssuerConfig] = {}
        for number, test_issuer in enumerate(issuers):
            name = f"i{number}"
            algorithms = overrides.get("algorithms", ("RS256", "ES256"))
            keys = IssuerKeys(
                name, test_issuer.url, None, algorithms, 900, 60, store, UrllibFetcher()
            )
            options: dict[str, Any] = {
                "name": name,
                "issuer": test_issuer.url,
                "audience": AUDIENCE,
                "keys": keys,
                "algorithms": algorithms,
                "leeway": LEEWAY,
                "max_token_age": MAX_AGE,
                "max_lifetime": MAX_LIFETIME,
            } | overrides
            configs[name] = IssuerConfig(**options)
        return OidcVerifier(configs)

    return make


def refused(verifier: OidcVerifier, token: str, now: int) -> InvalidCredentials:
    with pytest.raises(InvalidCredentials) as caught:
        verifier.verify(token, now=now)
    error = caught.value
    assert not token or token not in error.message
    assert all(part not in error.message for part in token.split(".") if len(part) > 8)
    return error


# -- hand-made tokens -----------------------------------------------------------------


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64url(_json(header))}.{b64url(_json(payload))}."


def hs256_with_public_key(test_issuer: TestIssuer, now: int) -> str:
    """The key-confusion attack: HMAC keyed with the issuer's public key (PEM)."""
    key = test_issuer.key("RS256")
    secret = key.private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64url(_json(header))}.{b64url(_json(test_issuer.claims(iat=now)))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def with_attacker_key_header(test_issuer: TestIssuer, now: int, name: str, where: str) -> str:
    """Signed by an attacker's key, which the header carries or points at."""
    private = attacker_key()
    public = private.public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    values: dict[str, Any] = {
        "jwk": RSAAlgorithm.to_jwk(public, as_dict=True),
        "jku": where + "/jwks",
        "x5u": where + "/cert.pem",
        "x5c": [base64.b64encode(der).decode()],  # stands for the attacker's certificate
    }
    payload = test_issuer.claims(iat=now)
    return jwt.encode(
        payload, private, algorithm="RS256", headers={"kid": "attacker", name: values[name]}
    )


@dataclass(frozen=True)
class Case:
    build: Callable[[TestIssuer, int], str]
    reason: str
    fragment: str
    config: dict[str, Any] | None = None


def _mint(**kwargs: Any) -> Callable[[TestIssuer, int], str]:
    """A token from the issuer's real key; ``iat`` defaults to ``now``."""

    def build(test_issuer: TestIssuer, now: int) -> str:
        claims = {
            name: value(test_issuer, now) if callable(value) else value
            for name, value in kwargs.get("claims", {}).items()
        }
        options = {"iat": now, **kwargs, "claims": claims}
        return test_issuer.mint(**options)

    return build


def _raw(header: bytes, payload: Callable[[TestIssuer, int], bytes]) -> Callable[..., str]:
    def build(test_issuer: TestIssuer, now: int) -> str:
        return test_issuer.mint_raw(header, payload(test_issuer, now))

    return build


def _dup_sub(test_issuer: TestIssuer, now: int) -> bytes:
    claims = test_issuer.claims(iat=now)
    text = _json(claims).decode()
    # {"iss":...,"sub":"repo:acme/app:...",...} plus a second "sub" that a lax parser
    # would keep (last wins) while a policy engine saw the first.
    return (text[:-1] + ',"sub":"repo:acme/prod:ref:refs/heads/main"}').encode()


def _iss(template: str) -> Callable[[TestIssuer, int], str]:
    return lambda test_issuer, now: template.format(
        url=test_issuer.url, port=test_issuer.port, URL=test_issuer.url.upper()
    )


ATTACKS: dict[str, Case] = {
    # -- algorithms
    "alg-none": Case(
        lambda i, now: unsigned({"alg": "none", "typ": "JWT"}, i.claims(iat=now)),
        "ALGORITHM_NOT_ALLOWED", "algorithm 'none' is not accepted",
    ),
    "alg-None-cased": Case(
        lambda i, now: unsigned({"alg": "None"}, i.claims(iat=now)),
        "ALGORITHM_NOT_ALLOWED", "never none or HMAC",
    ),
    "alg-missing": Case(
        lambda i, now: unsigned({"typ": "JWT"}, i.claims(iat=now)),
        "ALGORITHM_NOT_ALLOWED", "algorithm None is not accepted",
    ),
    "hs256-keyed-with-the-public-key": Case(
        hs256_with_public_key, "ALGORITHM_NOT_ALLOWED", "algorithm 'HS256' is not accepted"
    ),
    "es256-when-only-rs256-is-allowed": Case(
        _mint(alg="ES256"), "ALGORITHM_NOT_ALLOWED",
        "algorithm 'ES256' is not allowed for issuer 'i0' (allowed: RS256)",
        {"algorithms": ("RS256",)},
    ),
    # -- keys carried by the token
    "jwk-header": Case(
        lambda i, now: with_attacker_key_header(i, now, "jwk", i.url), "FORBIDDEN_HEADER",
        "header 'jwk' is refused: keys come only from the issuer's own JWKS",
    ),
    "jku-header": Case(
        lambda i, now: with_attacker_key_header(i, now, "jku", i.url), "FORBIDDEN_HEADER",
        "header 'jku' is refused",
    ),
    "x5u-header": Case(
        lambda i, now: with_attacker_key_header(i, now, "x5u", i.url), "FORBIDDEN_HEADER",
        "header 'x5u' is refused",
    ),
    "x5c-header": Case(
        lambda i, now: with_attacker_key_header(i, now, "x5c", i.url), "FORBIDDEN_HEADER",
        "header 'x5c' is refused",
    ),
    "crit-unknown-extension": Case(
        _mint(headers={"crit": ["urn:example:ext"], "urn:example:ext": 1}),
        "FORBIDDEN_HEADER", "header 'crit' names extensions",
    ),
    "crit-b64-false": Case(
        _raw(b'{"alg":"RS256","b64":false,"crit":["b64"]}', lambda i, now: b"{}"),
        "FORBIDDEN_HEADER", "header 'crit' names extensions",
    ),
    "kid-not-a-string": Case(
        _raw(b'{"alg":"RS256","kid":7}', lambda i, now: _json(i.claims(iat=now))),
        "FORBIDDEN_HEADER", "header 'kid' must be a string",
    ),
    # -- issuers that are not the configured one, byte for byte
    "iss-trailing-slash": Case(
        _mint(claims={"iss": _iss("{url}/")}), "UNKNOWN_ISSUER", "/' is not configured"
    ),
    "iss-other-case": Case(
        _mint(claims={"iss": _iss("{URL}")}), "UNKNOWN_ISSUER", "issuer 'HTTP://127.0.0.1:"
    ),
    "iss-https-for-http": Case(
        _mint(claims={"iss": _iss("https://127.0.0.1:{port}")}), "UNKNOWN_ISSUER",
        "issuer 'https://127.0.0.1:",
    ),
    "iss-lookalike-host": Case(
        _mint(claims={"iss": _iss("http://127.0.0.1.evil.example:{port}")}),
        "UNKNOWN_ISSUER", ".evil.example:",
    ),
    "iss-localhost-alias": Case(
        _mint(claims={"iss": _iss("http://localhost:{port}")}), "UNKNOWN_ISSUER",
        "issuer 'http://localhost:",
    ),
    "iss-missing": Case(_mint(omit=["iss"]), "MALFORMED_TOKEN", "no string 'iss' claim"),
    "iss-not-a-string": Case(
        _mint(claims={"iss": ["x"]}), "MALFORMED_TOKEN", "no string 'iss' claim"
    ),
    # -- audience
    "aud-missing": Case(
        _mint(omit=["aud"]), "WRONG_AUDIENCE",
        f"the token has no 'aud' claim; the audience must be '{AUDIENCE}'",
    ),
    "aud-wrong": Case(
        _mint(claims={"aud": "https://registry.evil"}), "WRONG_AUDIENCE",
        f"wrong 'aud': the audience must be '{AUDIENCE}'",
    ),
    "aud-aws-platform-default": Case(
        _mint(claims={"aud": "sts.amazonaws.com"}), "WRONG_AUDIENCE", "wrong 'aud'"
    ),
    "aud-github-platform-default": Case(
        _mint(claims={"aud": "https://github.com/acme"}), "WRONG_AUDIENCE", "wrong 'aud'"
    ),
    "aud-prefix-of-ours": Case(
        _mint(claims={"aud": AUDIENCE + ".evil"}), "WRONG_AUDIENCE", "wrong 'aud'"
    ),
    "aud-list-by-default": Case(
        _mint(claims={"aud": [AUDIENCE, "https://other.test"]}), "WRONG_AUDIENCE",
        "'aud' is a list, and issuer 'i0' accepts only a single audience",
    ),
    "aud-list-without-ours": Case(
        _mint(claims={"aud": ["https://other.test"]}), "WRONG_AUDIENCE",
        f"the 'aud' list does not contain '{AUDIENCE}'", {"allow_audience_list": True},
    ),
    "aud-number": Case(
        _mint(claims={"aud": 1}), "WRONG_AUDIENCE", "neither a string nor a list"
    ),
    # -- times
    "expired-beyond-leeway": Case(
        lambda i, now: i.mint(iat=now - 400, lifetime=400 - LEEWAY), "TOKEN_EXPIRED",
        f"the token expired {LEEWAY} s ago (leeway {LEEWAY} s)",
    ),
    "expired-long-ago": Case(
        lambda i, now: i.mint(iat=now - 3000, lifetime=300), "TOKEN_EXPIRED",
        "the token expired 2700 s ago",
    ),
    "exp-missing": Case(_mint(omit=["exp"]), "MALFORMED_TOKEN", "the token has no 'exp' claim"),
    "exp-string": Case(
        _mint(claims={"exp": lambda i, now: str(now + 300)}), "MALFORMED_TOKEN",
        "claim 'exp' must be an integer number of seconds, not str",
    ),
    "exp-float": Case(
        _mint(claims={"exp": lambda i, now: now + 300.5}), "MALFORMED_TOKEN",
        "claim 'exp' must be an integer number of seconds, not float",
    ),
    "exp-boolean": Case(_mint(claims={"exp": True}), "MALFORMED_TOKEN", "not bool"),
    "iat-missing": Case(_mint(omit=["iat"]), "MALFORMED_TOKEN", "the token has no 'iat' claim"),
    "iat-string": Case(
        _mint(claims={"iat": lambda i, now: str(now)}), "MALFORMED_TOKEN",
        "claim 'iat' must be an integer",
    ),
    "nbf-float": Case(
        _mint(claims={"nbf": lambda i, now: now + 0.5}), "MALFORMED_TOKEN",
        "claim 'nbf' must be an integer",
    ),
    "exp-before-iat": Case(
        _mint(claims={"exp": lambda i, now: now - 1}), "MALFORMED_TOKEN",
        "'exp' is not after 'iat'",
    ),
    "nbf-in-the-future": Case(
        _mint(claims={"nbf": lambda i, now: now + 120}), "TOKEN_NOT_YET_VALID",
        "'nbf' is 120 s in the future (leeway 30 s)",
    ),
    "iat-in-the-future": Case(
        lambda i, now: i.mint(iat=now + 120, omit=["nbf"]), "TOKEN_NOT_YET_VALID",
        "'iat' is 120 s in the future",
    ),
    "too-old": Case(
        lambda i, now: i.mint(iat=now - MAX_AGE - 1, lifetime=2 * MAX_AGE), "TOKEN_TOO_OLD",
        f"issued {MAX_AGE + 1} s ago; issuer 'i0' accepts tokens up to {MAX_AGE} s old",
    ),
    "too-long-lived": Case(
        _mint(lifetime=MAX_LIFETIME + 1), "TOKEN_LIFETIME_TOO_LONG",
        f"the token lives {MAX_LIFETIME + 1} s; issuer 'i0' accepts at most {MAX_LIFETIME} s",
    ),
    "jti-not-a-string": Case(
        _mint(claims={"jti": 12345}), "MALFORMED_TOKEN", "claim 'jti' must be a string"
    ),
    # -- parsing
    "duplicate-sub-in-payload": Case(
        _raw(b'{"alg":"RS256","typ":"JWT"}', _dup_sub), "MALFORMED_TOKEN",
        "the token's payload is refused: duplicate member 'sub'",
    ),
    "duplicate-alg-in-header": Case(
        _raw(b'{"alg":"none","alg":"RS256"}', lambda i, now: _json(i.claims(iat=now))),
        "MALFORMED_TOKEN", "the token's header is refused: duplicate member 'alg'",
    ),
    "duplicate-nested": Case(
        _raw(b'{"alg":"RS256"}', lambda i, now: _json(i.claims(iat=now))[:-1]
             + b',"ctx":{"ref":"a","ref":"b"}}'),
        "MALFORMED_TOKEN", "duplicate member 'ref'",
    ),
    "nan-in-payload": Case(
        _raw(b'{"alg":"RS256"}', lambda i, now: _json(i.claims(iat=now))[:-1]
             + b',"x":NaN}'),
        "MALFORMED_TOKEN", "the token's payload is refused: not valid JSON",
    ),
    "header-not-an-object": Case(
        lambda i, now: f"{b64url(b'[1]')}.{b64url(_json(i.claims(iat=now)))}.c2ln",
        "MALFORMED_TOKEN", "the token's header is not a JSON object",
    ),
    "oversize": Case(
        _mint(claims={"pad": "x" * MAX_TOKEN_BYTES}), "TOKEN_TOO_LARGE",
        f"the token is over {MAX_TOKEN_BYTES} bytes, the most accepted",
    ),
    "jwe-five-parts": Case(
        lambda i, now: ".".join(
            [b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), "a2V5", "aXY", "Y2lwaGVy", "dGFn"]
        ),
        "MALFORMED_TOKEN", "encrypted tokens (JWE) are not accepted",
    ),
    "jws-json-serialization": Case(
        lambda i, now: json.dumps(
            {"payload": i.mint(iat=now).split(".")[1],
             "signatures": [{"protected": "e30", "signature": "c2ln"}]}
        ),
        "MALFORMED_TOKEN", "JWS JSON serialization is not accepted",
    ),
    "two-parts": Case(
        lambda i, now: ".".join(i.mint(iat=now).split(".")[:2]), "MALFORMED_TOKEN",
        "expected 3 dot-separated parts, found 2",
    ),
    "oversize-multibyte": Case(
        lambda i, now: "\u00e9" * (MAX_TOKEN_BYTES // 2 + 1), "TOKEN_TOO_LARGE",
        f"over {MAX_TOKEN_BYTES} bytes",
    ),
    "garbage": Case(lambda i, now: "hello world", "MALFORMED_TOKEN", "found 1"),
    "empty": Case(lambda i, now: "", "MALFORMED_TOKEN", "found 1"),
    "not-base64url": Case(
        lambda i, now: "%%%.%%%.%%%", "MALFORMED_TOKEN", "the header is not base64url"
    ),
    "padded-base64": Case(
        lambda i, now: i.mint(iat=now) + "==", "MALFORMED_TOKEN",
        "the signature is not base64url",
    ),
    # -- signatures and keys
    "tampered-payload": Case(
        lambda i, now: _swap_payload(i.mint(iat=now), i.claims({"sub": "admin"}, iat=now)),
        "INVALID_SIGNATURE", "the signature does not verify with issuer 'i0''s key",
    ),
    "signature-of-another-token": Case(
        lambda i, now: ".".join(
            i.mint(iat=now).split(".")[:2] + i.mint(iat=now).split(".")[2:]
        ),
        "INVALID_SIGNATURE", "does not verify",
    ),
    "unknown-kid": Case(
        _mint(kid="no-such-key"), "UNKNOWN_KEY",
        "issuer 'i0' publishes no RS256 key for kid 'no-such-key'",
    ),
    "es256-signature-on-rs256-header": Case(
        lambda i, now: i.mint(iat=now, headers={"alg": "RS256"}, kid=i.key("RS256").kid,
                              signer=i.key("ES256"), alg="ES256"),
        "INVALID_SIGNATURE", "does not verify",
    ),
}


def _swap_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url(_json(payload))}.{signature}"


@pytest.mark.parametrize("case", ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_is_refused(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int, case: Case
) -> None:
    verifier = make_verifier(issuer, **(case.config or {}))
    token = case.build(issuer, now)
    error = refused(verifier, token, now)
    assert (error.reason, error.status) == (case.reason, 401)
    assert case.fragment in error.message


def test_attacker_urls_in_the_header_are_never_fetched(
    make_issuer: MakeIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    test_issuer, attacker = make_issuer(), make_issuer("/attacker")
    verifier = make_verifier(test_issuer)
    for name in ("jku", "x5u"):
        token = with_attacker_key_header(test_issuer, now, name, attacker.url)
        error = refused(verifier, token, now)
        assert error.reason == "FORBIDDEN_HEADER"
        assert f"header {name!r} is refused" in error.message
    assert (attacker.jwks_fetches, attacker.discovery_fetches) == (0, 0)
    assert test_issuer.jwks_fetches == 0  # refused before any key was looked up


def test_issuer_a_cannot_sign_for_issuer_b(
    make_issuer: MakeIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    """Both are configured; a token claiming B is checked with B's keys only."""
    a, b = make_issuer("/a"), make_issuer("/b")
    verifier = make_verifier(a, b)

    # A's own kid: B does not publish it. B's set was fetched by this very call, so no
    # second fetch for the miss; A is never asked.
    token = a.mint({"iss": b.url}, iat=now)
    error = refused(verifier, token, now)
    assert error.reason == "UNKNOWN_KEY"
    assert f"issuer 'i1' publishes no RS256 key for kid '{a.key().kid}'" in error.message
    assert (a.discovery_fetches, a.jwks_fetches) == (0, 0)
    assert b.jwks_fetches == 1

    # B's kid, A's key: B's key is used, and the signature fails.
    token = a.mint({"iss": b.url}, iat=now, kid=b.key().kid)
    error = refused(verifier, token, now)
    assert error.reason == "INVALID_SIGNATURE"
    assert f"does not verify with issuer 'i1''s key '{b.key().kid}'" in error.message
    assert (a.discovery_fetches, a.jwks_fetches) == (0, 0)

    # And each issuer's own tokens verify.
    assert verifier.verify(a.mint(iat=now), now=now).provider == "i0"
    assert verifier.verify(b.mint(iat=now), now=now).provider == "i1"


def test_an_issuer_with_a_path_is_matched_byte_for_byte(
    make_issuer: MakeIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    gitlab = make_issuer("/gitlab")
    verifier = make_verifier(gitlab)
    assert verifier.verify(gitlab.mint(iat=now), now=now).issuer == gitlab.url
    for iss in (gitlab.url.replace("/gitlab", "/GitLab"), gitlab.url + "/", gitlab.url[:-1]):
        error = refused(verifier, gitlab.mint({"iss": iss}, iat=now), now)
        assert error.reason == "UNKNOWN_ISSUER"
        assert error.message == f"issuer {iss!r} is not configured"


def test_an_audience_list_containing_ours_is_accepted_when_allowed(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    verifier = make_verifier(issuer, allow_audience_list=True)
    token = issuer.mint({"aud": ["https://other.test", AUDIENCE]}, iat=now)
    assert verifier.verify(token, now=now).claims["aud"] == ["https://other.test", AUDIENCE]


def test_the_leeway_applies_to_exp_nbf_and_iat(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    verifier = make_verifier(issuer)
    expired_within = issuer.mint(iat=now - 400, lifetime=400 - LEEWAY + 1)  # exp = now-29
    assert verifier.verify(expired_within, now=now).expires_at == now - LEEWAY + 1
    early = issuer.mint({"nbf": now + LEEWAY}, iat=now + LEEWAY)
    assert verifier.verify(early, now=now).issued_at == now + LEEWAY
    strict = make_verifier(issuer, leeway=0)
    error = refused(strict, issuer.mint(iat=now - 300, lifetime=300), now)  # exp == now
    assert (error.reason, error.message) == (
        "TOKEN_EXPIRED", "the token expired 0 s ago (leeway 0 s)"
    )


def test_rs256_happy_path(issuer: TestIssuer, make_verifier: MakeVerifier, now: int) -> None:
    token = issuer.mint({"repository": "acme/app"}, iat=now)
    verified = make_verifier(issuer).verify(token, now=now)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert verified == VerifiedToken(
        provider="i0",
        issuer=issuer.url,
        claims=claims,
        jti=claims["jti"],
        issued_at=now,
        expires_at=now + 300,
        header_alg="RS256",
    )


def test_es256_happy_path_and_a_missing_kid(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    verifier = make_verifier(issuer)
    assert verifier.verify(issuer.mint(alg="ES256", iat=now), now=now).header_alg == "ES256"
    # No kid: the one published ES256 key is the only candidate.
    no_kid = issuer.mint(alg="ES256", kid=None, iat=now)
    assert verifier.verify(no_kid, now=now).header_alg == "ES256"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_key_rotation(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int, alg: str
) -> None:
    verifier = make_verifier(issuer)
    old_token = issuer.mint(alg=alg, iat=now)
    assert verifier.verify(old_token, now=now).header_alg == alg

    new_key = issuer.rotate(alg)  # published next to the old one
    new_token = issuer.mint(alg=alg, iat=now + 1)
    assert new_token != old_token and jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    assert verifier.verify(new_token, now=now + 1).header_alg == alg  # one refetch
    assert verifier.verify(old_token, now=now + 1).header_alg == alg  # old key still there
    assert issuer.jwks_fetches == 2

    issuer.rotate(alg, drop_old=True)  # both older keys withdrawn
    later = now + 901  # past the JWKS TTL: the set is fetched again
    fresh = issuer.mint(alg=alg, iat=later)
    assert verifier.verify(fresh, now=later).header_alg == alg
    error = refused(verifier, old_token, later)
    assert error.reason == "UNKNOWN_KEY"
    assert f"publishes no {alg} key for kid '{jwt.get_unverified_header(old_token)['kid']}'" in (
        error.message
    )


def test_no_keys_at_all_is_a_503_not_a_401(
    issuer: TestIssuer, make_verifier: MakeVerifier, now: int
) -> None:
    issuer.fault(JWKS, Fault(status=500))
    verifier = make_verifier(issuer)
    with pytest.raises(ServiceUnavailable) as caught:
        verifier.verify(issuer.mint(iat=now), now=now)
    assert caught.value.reason == "OIDC_KEYS_UNAVAILABLE"
    assert "issuer 'i0' has no keys yet" in caught.value.message
    assert "HTTP 500" in caught.value.message


def test_shape_helpers(issuer: TestIssuer, make_verifier: MakeVerifier, now: int) -> None:
    token = issuer.mint(iat=now)
    assert looks_like_jwt(token)
    assert unverified_issuer(token) == issuer.url
    for text in ("hunter2", "a.b.c", "", "e30.e30.", token + ".x", "{}", "x" * 20000):
        assert not looks_like_jwt(text)
    assert looks_like_jwt(unsigned({"alg": "none"}, {}))  # the verifier refuses it
    assert unverified_issuer("garbage") is None
    assert unverified_issuer(issuer.mint({"iss": 3}, iat=now)) is None

    verifier = make_verifier(issuer)
    assert verifier.handles(token)
    assert not verifier.handles(issuer.mint({"iss": "https://elsewhere.test"}, iat=now))
    assert not verifier.handles("hunter2")
    assert verifier.handles(issuer.mint({"pad": "x" * MAX_TOKEN_BYTES}, iat=now))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"algorithms": ("HS256",)}, "algorithms ['HS256'] refused"),
        ({"algorithms": ("none",)}, "algorithms ['none'] refused"),
        ({"algorithms": ()}, "algorithms [] refused"),
        ({"audience": ""}, "audience must be non-empty"),
        ({"leeway": 301}, "leeway must be within 0..300"),
        ({"issuer": "http://issuer.example.com"}, "https:// is required"),
    ],
)
def test_issuer_config_refuses_unsafe_settings(
    issuer: TestIssuer, overrides: dict[str, Any], fragment: str
) -> None:
    keys = IssuerKeys(
        "ci", issuer.url, None, ["RS256"], 900, 60, MemoryStore(), UrllibFetcher()
    )
    options: dict[str, Any] = {
        "name": "ci", "issuer": issuer.url, "audience": AUDIENCE, "keys": keys
    } | overrides
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        IssuerConfig(**options)


def test_a_verifier_needs_issuers() -> None:
    with pytest.raises(ValueError, match="no OIDC issuer is configured"):
        OidcVerifier({})
