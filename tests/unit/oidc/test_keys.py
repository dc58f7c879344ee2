"""IssuerKeys against a real issuer on 127.0.0.1, a real fetcher and real stores.

Times are real Unix seconds (``now``), as the stores' claims expire on the real clock
(Redis ``EXAT``); the tests move ``now`` forward for the TTL and the cooldown, and
sleep only where a store's claim has to lapse.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authsvc.identity.oidc.keys import (
    AmbiguousKey,
    FetchError,
    IssuerKeys,
    KeysStatus,
    KeysUnavailable,
    PublicKey,
    UnknownKey,
    UrllibFetcher,
)
from authsvc.store import Store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from tests import oidc_issuer
from tests.oidc_issuer import DISCOVERY, JWKS, Fault, MakeIssuer, TestIssuer, b64url

# The fixtures, by assignment (an import would be "redefined" by each test's argument).
issuer = oidc_issuer.issuer
make_issuer = oidc_issuer.make_issuer

TTL = 900
COOLDOWN = 60


@dataclass
class CountingStore:
    """A real store, counting the claims asked of it (the round trips a flood costs)."""

    inner: Store
    claims: list[str] = field(default_factory=list)

    def claim_once(self, key: str, expires_at: int) -> bool:
        self.claims.append(key)
        return self.inner.claim_once(key, expires_at)


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store the workers share: memory://, or a real Redis under a random prefix."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url: str = request.getfixturevalue("redis_server_url")
    redis_store = RedisStore.from_url(url, prefix=f"authsvc-test:{secrets.token_hex(8)}:")
    yield redis_store
    redis_store.close()


@pytest.fixture
def now() -> int:
    return int(time.time())


MakeKeys = Callable[..., IssuerKeys]


@pytest.fixture
def make_keys() -> MakeKeys:
    """``make_keys(issuer, **overrides)``; keys made by one test share one MemoryStore."""
    shared = MemoryStore()

    def make(test_issuer: TestIssuer, **overrides: Any) -> IssuerKeys:
        options: dict[str, Any] = {
            "name": "ci",
            "issuer": test_issuer.url,
            "jwks_uri": None,
            "algorithms": ("RS256", "ES256"),
            "jwks_ttl": TTL,
            "refresh_cooldown": COOLDOWN,
            "store": shared,
            "fetcher": UrllibFetcher(),
        } | overrides
        return IssuerKeys(**options)

    return make


def test_discovery_once_then_the_remembered_jwks_uri(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    assert keys.status() == KeysStatus(None, None, False)
    rsa = issuer.key("RS256")
    assert _der(keys.key_for(rsa.kid, "RS256", now)) == _der(rsa.private.public_key())
    for later in (now + 1, now + TTL, now + 2 * TTL, now + 3 * TTL):
        keys.key_for(issuer.key("ES256").kid, "ES256", later)
    assert issuer.discovery_fetches == 1
    assert issuer.jwks_fetches == 4


def test_a_configured_jwks_uri_needs_no_discovery(
    make_issuer: MakeIssuer, make_keys: MakeKeys, now: int
) -> None:
    gitlab = make_issuer("/gitlab")
    keys = make_keys(gitlab, jwks_uri=gitlab.jwks_uri)
    keys.key_for(gitlab.key().kid, "RS256", now)
    assert (gitlab.discovery_fetches, gitlab.jwks_fetches) == (0, 1)


def test_the_set_is_fetched_again_after_its_ttl(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    kid = issuer.key().kid
    keys.key_for(kid, "RS256", now)
    keys.key_for(kid, "RS256", now + TTL - 1)
    assert issuer.jwks_fetches == 1
    keys.key_for(kid, "RS256", now + TTL)
    assert issuer.jwks_fetches == 2
    assert keys.status(now + TTL) == KeysStatus(now + TTL, None, False)


def test_concurrent_first_use_fetches_once(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    kid = issuer.key().kid
    results = _in_threads(50, lambda _: keys.key_for(kid, "RS256", now))
    assert all(not isinstance(r, Exception) for r in results)
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


def test_a_rotated_in_kid_is_found_with_one_refetch(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    keys.key_for(issuer.key().kid, "RS256", now)
    new = issuer.rotate("RS256")
    assert keys.key_for(new.kid, "RS256", now + 1) is not None
    assert issuer.jwks_fetches == 2


def test_unknown_kids_from_many_threads_and_workers_cost_one_refetch(
    issuer: TestIssuer, make_keys: MakeKeys, store: Store, now: int
) -> None:
    """Five workers (IssuerKeys sharing one store), 50 threads, 50 invented kids."""
    workers = [make_keys(issuer, store=store) for _ in range(5)]
    for worker in workers:
        worker.key_for(issuer.key().kid, "RS256", now)
    baseline = issuer.jwks_fetches
    assert baseline == 5

    results = _in_threads(
        50, lambda i: workers[i % 5].key_for(f"invented-{i}", "RS256", now + 1)
    )

    assert all(isinstance(r, UnknownKey) for r in results), results
    assert "publishes no RS256 key for kid 'invented-" in str(results[0])
    assert issuer.jwks_fetches == baseline + 1
    assert issuer.discovery_fetches == 5  # once per worker, never again


def test_a_kid_flood_costs_no_work_within_the_cooldown(
    issuer: TestIssuer, make_keys: MakeKeys, store: Store, now: int
) -> None:
    counting = CountingStore(store)
    keys = make_keys(issuer, store=counting)
    keys.key_for(issuer.key().kid, "RS256", now)
    with pytest.raises(UnknownKey, match="no RS256 key for kid 'nope'"):
        keys.key_for("nope", "RS256", now)
    assert (issuer.jwks_fetches, counting.claims) == (2, ["oidc-jwks-refresh:ci"])

    for i in range(200):  # the same miss (negative cache) and new ones (the gate)
        with pytest.raises(UnknownKey):
            keys.key_for("nope" if i % 2 else secrets.token_hex(8), "RS256", now + 30)
    assert (issuer.jwks_fetches, len(counting.claims)) == (2, 1)


def test_after_the_cooldown_a_miss_may_refetch_again(
    issuer: TestIssuer, make_keys: MakeKeys, store: Store, now: int
) -> None:
    keys = make_keys(issuer, store=store, refresh_cooldown=1)
    keys.key_for(issuer.key().kid, "RS256", now)
    with pytest.raises(UnknownKey):
        keys.key_for("nope", "RS256", now)
    with pytest.raises(UnknownKey):
        keys.key_for("nope", "RS256", now)  # remembered: no work
    assert issuer.jwks_fetches == 2
    time.sleep(1.2)  # the store's claim lapses on the real clock
    new = issuer.rotate("RS256")
    assert keys.key_for(new.kid, "RS256", now + 2) is not None
    assert issuer.jwks_fetches == 3


def test_a_worker_that_lost_the_claim_does_not_fetch(
    issuer: TestIssuer, make_keys: MakeKeys, store: Store, now: int
) -> None:
    first, second = make_keys(issuer, store=store), make_keys(issuer, store=store)
    for worker in (first, second):
        worker.key_for(issuer.key().kid, "RS256", now)
    new = issuer.rotate("RS256")
    assert first.key_for(new.kid, "RS256", now + 1) is not None
    with pytest.raises(UnknownKey):  # keeps its set until its TTL or the next window
        second.key_for(new.kid, "RS256", now + 1)
    assert issuer.jwks_fetches == 3
    assert second.key_for(new.kid, "RS256", now + TTL) is not None


def test_no_kid_takes_the_only_fitting_key(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    assert _der(keys.key_for(None, "ES256", now)) == _der(issuer.key("ES256").private.public_key())
    assert keys.key_for(None, "RS256", now) is not None  # one RSA key and one EC key
    issuer.rotate("RS256")
    with pytest.raises(AmbiguousKey, match="names no kid and 2 RS256 keys fit"):
        keys.key_for(None, "RS256", now + TTL)


@pytest.mark.parametrize(
    ("jwk_changes", "alg"),
    [
        pytest.param({"alg": "RS384"}, "RS256", id="jwk-alg-is-another"),
        pytest.param({"use": "enc"}, "RS256", id="use-enc"),
        pytest.param({"key_ops": ["encrypt"]}, "RS256", id="key-ops-without-verify"),
        pytest.param({}, "ES256", id="rsa-key-for-es256"),
    ],
)
def test_keys_that_do_not_fit_are_no_candidates(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, jwk_changes: dict[str, Any], alg: str
) -> None:
    jwk = issuer.key("RS256").jwk() | {"kid": "odd", "alg": None} | jwk_changes
    issuer.extra_jwks.append({k: v for k, v in jwk.items() if v is not None})
    keys = make_keys(issuer)
    with pytest.raises(UnknownKey, match=f"publishes no {alg} key for kid 'odd'"):
        keys.key_for("odd", alg, now)


def test_an_ec_key_on_another_curve_does_not_fit(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    jwk = issuer.key("ES256").jwk()
    issuer.extra_jwks.append({**jwk, "kid": "p256", "alg": "ES384"})
    keys = make_keys(issuer, algorithms=("ES256", "ES384"))
    with pytest.raises(UnknownKey, match="no ES384 key for kid 'p256'"):
        keys.key_for("p256", "ES384", now)


def test_malformed_keys_are_ignored_and_the_others_work(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    good = issuer.key("RS256").jwk()
    ec_jwk = issuer.key("ES256").jwk()
    issuer.extra_jwks.extend(
        [
            "not an object",
            {},
            {"kty": "RSA", "kid": "bad-n", "n": "***", "e": "AQAB"},
            {**good, "kid": "short-rsa", "n": b64url(b"\xff" * 128)},  # 1024 bits
            {**good, "kid": "private", "d": good["n"]},
            {**ec_jwk, "kid": "off-curve", "y": b64url(b"\x01" * 32)},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**good, "kid": 7},
        ]
    )
    keys = make_keys(issuer)
    assert keys.key_for(good["kid"], "RS256", now) is not None
    for kid in ("bad-n", "short-rsa", "private", "hmac"):
        with pytest.raises(UnknownKey):
            keys.key_for(kid, "RS256", now)
    with pytest.raises(UnknownKey):
        keys.key_for("off-curve", "ES256", now)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not a JSON document"),
        (b"[]", "not a JWKS"),
        (b'{"keys": {}}', "not a JWKS"),
        (b'{"keys": [], "keys": []}', "duplicate member 'keys'"),
        (b'{"keys": [{"kty": "RSA"}]}', "none of its 1 keys is a usable public key"),
    ],
)
def test_a_document_that_is_not_a_jwks_is_a_fetch_error(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, body: bytes, fragment: str
) -> None:
    issuer.fault(JWKS, Fault(body=body))
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable, match="has no keys yet"):
        keys.key_for(issuer.key().kid, "RS256", now)
    status = keys.status(now)
    assert status.fetched_at is None and status.stale
    assert status.last_error is not None and fragment in status.last_error


def test_when_the_issuer_is_down_the_last_good_keys_keep_working(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    clock = Clock(now)
    keys = make_keys(issuer, clock=clock)
    kid = issuer.key().kid
    keys.key_for(kid, "RS256", now)
    issuer.fault(JWKS, Fault(status=500))

    clock.now = now + TTL
    assert keys.key_for(kid, "RS256", now + TTL) is not None
    status = keys.status()  # for /readyz, on the clock
    assert status.fetched_at == now and status.stale
    assert status.last_error is not None and "HTTP 500" in status.last_error
    assert issuer.jwks_fetches == 2
    # Neither later requests nor unknown kids hammer the dead issuer within the cooldown.
    keys.key_for(kid, "RS256", now + TTL + 1)
    with pytest.raises(UnknownKey):
        keys.key_for("rotated?", "RS256", now + TTL + 2)
    assert issuer.jwks_fetches == 2

    issuer.fault(JWKS, None)
    keys.key_for(kid, "RS256", now + TTL + COOLDOWN)
    assert issuer.jwks_fetches == 3
    assert keys.status(now + TTL + COOLDOWN) == KeysStatus(now + TTL + COOLDOWN, None, False)


def test_a_failed_refetch_within_the_ttl_is_reported_but_not_stale(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    keys.key_for(issuer.key().kid, "RS256", now)
    issuer.fault(JWKS, Fault(status=503))
    with pytest.raises(UnknownKey):
        keys.key_for("new", "RS256", now + 1)
    status = keys.status(now + 1)
    assert status.last_error is not None and "HTTP 503" in status.last_error
    assert not status.stale


def test_the_issuer_never_answering_leaves_no_keys(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    issuer.fault(DISCOVERY, Fault(status=500))
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable, match="HTTP 500"):
        keys.key_for(issuer.key().kid, "RS256", now)
    with pytest.raises(KeysUnavailable):  # no second attempt within the cooldown
        keys.key_for(issuer.key().kid, "RS256", now + 1)
    assert issuer.discovery_fetches == 1
    issuer.fault(DISCOVERY, None)
    assert keys.key_for(issuer.key().kid, "RS256", now + COOLDOWN) is not None


def test_refresh_fetches_now_and_says_why_it_failed(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    keys = make_keys(issuer)
    keys.refresh(now)
    assert (issuer.jwks_fetches, keys.status(now)) == (1, KeysStatus(now, None, False))
    issuer.fault(JWKS, Fault(status=502))
    with pytest.raises(FetchError, match="HTTP 502"):
        keys.refresh(now + 1)
    assert keys.key_for(issuer.key().kid, "RS256", now + 1) is not None


@pytest.mark.parametrize("path", [JWKS, DISCOVERY])
def test_a_redirect_is_refused(
    make_issuer: MakeIssuer, make_keys: MakeKeys, now: int, path: str
) -> None:
    test_issuer, elsewhere = make_issuer(), make_issuer()
    test_issuer.fault(path, Fault(status=302, location=elsewhere.url + path))
    keys = make_keys(test_issuer)
    with pytest.raises(KeysUnavailable, match=r"redirect \(HTTP 302 to 'http://127"):
        keys.key_for(test_issuer.key().kid, "RS256", now)
    assert (elsewhere.jwks_fetches, elsewhere.discovery_fetches) == (0, 0)


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "streamed"])
def test_an_oversize_document_is_refused(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, send_length: bool
) -> None:
    issuer.fault(JWKS, Fault(pad_to=64 * 1024 + 1, send_length=send_length))
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable, match="over the 65536-byte cap"):
        keys.key_for(issuer.key().kid, "RS256", now)


def test_a_document_just_under_the_cap_is_read(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    issuer.fault(JWKS, Fault(pad_to=64 * 1024, send_length=False))
    assert make_keys(issuer).key_for(issuer.key().kid, "RS256", now) is not None


def test_a_hanging_issuer_times_out(
    issuer: TestIssuer, make_keys: MakeKeys, now: int
) -> None:
    issuer.fault(JWKS, Fault(delay=10))
    keys = make_keys(issuer, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(KeysUnavailable, match="timed out"):
        keys.key_for(issuer.key().kid, "RS256", now)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        (Fault(content_type="text/html"), "Content-Type 'text/html' is not JSON"),
        (Fault(status=404), "HTTP 404"),
        (Fault(status=204, body=b""), "HTTP 204 (only 200 is accepted)"),
    ],
)
def test_other_answers_are_refused(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, fault: Fault, fragment: str
) -> None:
    issuer.fault(JWKS, fault)
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable):
        keys.key_for(issuer.key().kid, "RS256", now)
    assert fragment in (keys.status(now).last_error or "")


@pytest.mark.parametrize(
    "named",
    [
        pytest.param("{url}/", id="trailing-slash"),
        pytest.param("{url}/other", id="other-path"),
        pytest.param("https://127.0.0.1:{port}", id="https"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_discovery_document_for_another_issuer_is_refused(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, named: str | None
) -> None:
    issuer.discovery_overrides["issuer"] = (
        None if named is None else named.format(url=issuer.url, port=issuer.port)
    )
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable, match=r"the document names issuer .*, not the configured"):
        keys.key_for(issuer.key().kid, "RS256", now)
    assert issuer.jwks_fetches == 0


@pytest.mark.parametrize(
    "jwks_uri", ["http://keys.example.com/jwks", "file:///etc/passwd", "ftp://127.0.0.1/k"]
)
def test_a_discovered_jwks_uri_must_be_https_or_loopback_http(
    issuer: TestIssuer, make_keys: MakeKeys, now: int, jwks_uri: str
) -> None:
    issuer.discovery_overrides["jwks_uri"] = jwks_uri
    keys = make_keys(issuer)
    with pytest.raises(KeysUnavailable, match="https:// is required"):
        keys.key_for(issuer.key().kid, "RS256", now)


@pytest.mark.parametrize(
    "url", ["http://issuer.example.com/jwks", "http://10.0.0.1/jwks", "file:///etc/passwd"]
)
def test_the_fetcher_refuses_plain_http_off_loopback(url: str) -> None:
    with pytest.raises(FetchError, match="https:// is required"):
        UrllibFetcher().get(url, timeout=1, max_bytes=1024)


def test_an_http_issuer_off_loopback_is_refused_when_built(make_keys: MakeKeys) -> None:
    with pytest.raises(ValueError, match="https:// is required"):
        IssuerKeys(
            "ci", "http://issuer.example.com", None, ["RS256"], TTL, COOLDOWN,
            MemoryStore(), UrllibFetcher(),
        )
    with pytest.raises(ValueError, match="algorithms must be"):
        IssuerKeys(
            "ci", "https://issuer.example.com", None, ["HS256"], TTL, COOLDOWN,
            MemoryStore(), UrllibFetcher(),
        )


def _der(key: PublicKey) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _in_threads(count: int, call: Callable[[int], object]) -> list[object]:
    """Run ``call(i)`` in ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
