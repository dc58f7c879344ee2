"""AwsAuthenticator against moto: identities and claims, one-time use, reuse, lookup.

Proofs are signed for moto's address (listed in ``sts_endpoints``) and sent to it, so
every accepted identity here passed a real SigV4 check. The one-time claim is tested
with both stores, 20 threads racing on one proof.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]

from authsvc.errors import InvalidCredentials
from authsvc.identity.aws.authenticator import USERNAME, AwsAuthenticator, AwsLogin, normalise
from authsvc.identity.aws.proof import CLOCK_SKEW, SignedRequest, encode_proof
from authsvc.identity.aws.settings import AwsSettings
from authsvc.identity.aws.sts import CallerIdentity, StsClient
from authsvc.identity.cache import VerifiedCache
from authsvc.store import Store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from tests import aws_sts
from tests.aws_sts import (
    ACCOUNT,
    SERVER_ID,
    Answer,
    FakeSts,
    MotoAws,
    decode_proof,
    sign_proof,
)

# The fixtures, by assignment (an import would be "redefined" by each test's argument).
moto_aws = aws_sts.moto_aws
fake_sts = aws_sts.fake_sts

MAX_AGE = 300
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"


class CountingSts(StsClient):
    """A real StsClient that counts its calls."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls = 0
        self._lock = threading.Lock()

    def get_caller_identity(self, request: SignedRequest) -> CallerIdentity:
        with self._lock:
            self.calls += 1
        return super().get_caller_identity(request)


def _cache() -> VerifiedCache:
    return VerifiedCache(ttl=60, max_entries=100)


@pytest.fixture
def settings(moto_aws: MotoAws) -> AwsSettings:
    return AwsSettings(
        sts_endpoints=(moto_aws.host,),
        sts_url=moto_aws.endpoint_url + "/",
        server_id=SERVER_ID,
        accounts=(ACCOUNT,),
        max_request_age=MAX_AGE,
        kind="ci",
    )


@pytest.fixture
def sts(settings: AwsSettings) -> CountingSts:
    return CountingSts(settings.sts_url)


MakeAuthenticator = Callable[..., AwsAuthenticator]


@pytest.fixture
def make_authenticator(settings: AwsSettings, sts: CountingSts) -> MakeAuthenticator:
    """``make_authenticator(store=None, cache=None, **settings overrides)``."""
    shared_store = MemoryStore()

    def make(
        *, store: Store | None = None, cache: VerifiedCache | None = None, **overrides: Any
    ) -> AwsAuthenticator:
        return AwsAuthenticator(
            settings.model_copy(update=overrides) if overrides else settings,
            sts=sts,
            store=store or shared_store,
            cache=cache or _cache(),
        )

    return make


@pytest.fixture
def authenticator(make_authenticator: MakeAuthenticator) -> AwsAuthenticator:
    return make_authenticator()


def now() -> int:
    return int(time.time())


def refused(call: Callable[[], AwsLogin], reason: str, fragment: str) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        call()
    assert caught.value.reason == reason
    assert fragment in caught.value.message


# -- identities ------------------------------------------------------------------------


def test_iam_user(authenticator: AwsAuthenticator, moto_aws: MotoAws) -> None:
    login = authenticator.exchange(moto_aws.sign(), now=now())
    identity = login.identity
    assert identity.subject == identity.account == moto_aws.user_arn
    assert moto_aws.user_arn == f"arn:aws:iam::{ACCOUNT}:user/ci/builder"
    assert identity.provider == "aws"
    assert identity.kind == "ci"
    assert identity.groups == frozenset()
    assert dict(identity.claims) == {
        "account": ACCOUNT,
        "arn": moto_aws.user_arn,
        "sts_arn": moto_aws.user_arn,
        "user": "builder",
        "user_id": moto_aws.user_id,
    }
    assert login.reuse is False
    assert login.settings.kind == "ci"


def test_assumed_role(authenticator: AwsAuthenticator, moto_aws: MotoAws) -> None:
    proof = moto_aws.sign(moto_aws.assume_role("deploy-42"))
    login = authenticator.exchange(proof, now=now())
    identity = login.identity
    # The role's path (/deploy/) is not in STS's ARN, so it is not in the normalised one.
    assert moto_aws.role_arn == f"arn:aws:iam::{ACCOUNT}:role/deploy/ci-deployer"
    assert identity.subject == identity.account == ROLE_ARN
    assert dict(identity.claims) == {
        "account": ACCOUNT,
        "arn": ROLE_ARN,
        "sts_arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/deploy-42",
        "role": "ci-deployer",
        "session_name": "deploy-42",
        "user_id": moto_aws.role_id(),
    }
    assert str(identity.claims["user_id"]).startswith("AROA")


def test_recreated_role_has_another_user_id(
    authenticator: AwsAuthenticator, moto_aws: MotoAws
) -> None:
    """A rule pinned to ``user_id`` does not match a role deleted and made again."""
    before = authenticator.exchange(moto_aws.sign(moto_aws.assume_role("before")), now=now())
    new_id = moto_aws.recreate_role()
    after = authenticator.exchange(moto_aws.sign(moto_aws.assume_role("after")), now=now())
    assert before.identity.subject == after.identity.subject == ROLE_ARN
    assert after.identity.claims["user_id"] == new_id
    assert before.identity.claims["user_id"] != after.identity.claims["user_id"]


def test_account_not_allowed(make_authenticator: MakeAuthenticator, moto_aws: MotoAws) -> None:
    authenticator = make_authenticator(accounts=("210987654321",))
    refused(
        lambda: authenticator.exchange(moto_aws.sign(), now=now()),
        "ACCOUNT_NOT_ALLOWED",
        f"account {ACCOUNT} is not one of the accounts allowed",
    )


def test_wrong_secret_refused_by_sts(authenticator: AwsAuthenticator, moto_aws: MotoAws) -> None:
    wrong = Credentials(moto_aws.user.access_key, "not-the-secret")
    refused(
        lambda: authenticator.exchange(moto_aws.sign(wrong), now=now()),
        "STS_REFUSED",
        "SignatureDoesNotMatch",
    )


def test_local_checks_come_before_sts(
    authenticator: AwsAuthenticator, moto_aws: MotoAws, sts: CountingSts
) -> None:
    refused(
        lambda: authenticator.exchange(moto_aws.sign(server_id="other.test/x"), now=now()),
        "SERVER_ID_MISMATCH",
        "another server",
    )
    assert sts.calls == 0


@pytest.mark.parametrize(
    ("arn", "user_id", "reason"),
    [
        (f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "ROOT_REFUSED"),
        (f"arn:aws:sts::{ACCOUNT}:federated-user/bob", f"{ACCOUNT}:bob", "UNSUPPORTED_PRINCIPAL"),
        (f"arn:aws:iam::{ACCOUNT}:role/x", "AROAEXAMPLE", "UNSUPPORTED_PRINCIPAL"),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s", "AROAEXAMPLE", "UNSUPPORTED_PRINCIPAL"),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s", "AROAEXAMPLE:t", "UNSUPPORTED_PRINCIPAL"),
        (f"arn:aws:iam::{ACCOUNT}:user/u", "AIDA:x", "UNSUPPORTED_PRINCIPAL"),
        ("arn:aws:iam::210987654321:user/u", "AIDAEXAMPLE", "UNSUPPORTED_PRINCIPAL"),
        (f"arn:aws:s3::{ACCOUNT}:user/u", "AIDAEXAMPLE", "UNSUPPORTED_PRINCIPAL"),
    ],
    ids=[
        "root",
        "federated user",
        "role (not assumed)",
        "assumed role without session",
        "assumed role, other session",
        "user id with colon",
        "other account",
        "other service",
    ],
)
def test_normalise_refusals(arn: str, user_id: str, reason: str) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        normalise(CallerIdentity(arn, ACCOUNT, user_id))
    assert caught.value.reason == reason


def test_normalise_other_partition() -> None:
    arn, claims = normalise(
        CallerIdentity(f"arn:aws-us-gov:sts::{ACCOUNT}:assumed-role/r/s", ACCOUNT, "AROAX:s")
    )
    assert arn == f"arn:aws-us-gov:iam::{ACCOUNT}:role/r"
    assert claims["role"] == "r"


def test_root_refused_through_sts(fake_sts: FakeSts) -> None:
    fake_sts.answer = Answer(
        body=(
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:root</Arn>"
            f"<UserId>{ACCOUNT}</UserId><Account>{ACCOUNT}</Account>"
            "</GetCallerIdentityResult></GetCallerIdentityResponse>"
        ).encode()
    )
    settings = AwsSettings(
        sts_endpoints=("sts.amazonaws.com",),
        sts_url=fake_sts.url,
        server_id=SERVER_ID,
        accounts=(ACCOUNT,),
    )
    authenticator = AwsAuthenticator(
        settings, sts=StsClient(fake_sts.url), store=MemoryStore(), cache=_cache()
    )
    proof = sign_proof(Credentials("AKIAIOSFODNN7EXAMPLE", "x"), "sts.amazonaws.com")
    refused(lambda: authenticator.exchange(proof, now=now()), "ROOT_REFUSED", "root user")


# -- one-time use ---------------------------------------------------------------------


def test_second_exchange_refused(
    authenticator: AwsAuthenticator, moto_aws: MotoAws, sts: CountingSts
) -> None:
    proof = moto_aws.sign()
    authenticator.exchange(proof, now=now())
    refused(lambda: authenticator.exchange(proof, now=now()), "TOKEN_REPLAYED", "already used")
    assert sts.calls == 1  # a replay never reaches STS


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def any_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        store: Store = MemoryStore()
    else:
        url: str = request.getfixturevalue("redis_server_url")
        store = RedisStore.from_url(url, prefix=f"authsvc-test:{secrets.token_hex(8)}:")
    yield store
    store.close()


def test_concurrent_exchanges_one_success(
    make_authenticator: MakeAuthenticator, any_store: Store, moto_aws: MotoAws, sts: CountingSts
) -> None:
    authenticator = make_authenticator(store=any_store)
    proof = moto_aws.sign()
    barrier = threading.Barrier(20)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            authenticator.exchange(proof, now=now())
        except InvalidCredentials as error:
            return error.reason
        return "OK"

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert sorted(outcomes) == ["OK"] + ["TOKEN_REPLAYED"] * 19
    assert sts.calls == 1


# -- reuse as a password --------------------------------------------------------------


def test_password_reuse_from_the_cache(
    authenticator: AwsAuthenticator, moto_aws: MotoAws, sts: CountingSts
) -> None:
    proof = moto_aws.sign()
    first = authenticator.authenticate_password(proof, now=now())
    again = authenticator.authenticate_password(proof, now=now())
    assert (first.reuse, again.reuse) == (False, True)
    assert again.identity == first.identity
    assert sts.calls == 1  # the cached answer, not a second STS call


def test_concurrent_passwords_ask_sts_once(
    authenticator: AwsAuthenticator, moto_aws: MotoAws, sts: CountingSts
) -> None:
    proof = moto_aws.sign()
    barrier = threading.Barrier(20)

    def attempt(_: int) -> bool:
        barrier.wait()
        return authenticator.authenticate_password(proof, now=now()).reuse

    with ThreadPoolExecutor(max_workers=20) as pool:
        reuses = list(pool.map(attempt, range(20)))
    assert sorted(reuses) == [False] + [True] * 19
    assert sts.calls == 1


def test_password_reuse_from_the_claim(
    make_authenticator: MakeAuthenticator, moto_aws: MotoAws, sts: CountingSts
) -> None:
    """Another process (its own cache, the same store) accepts the same proof again."""
    store = MemoryStore()
    proof = moto_aws.sign()
    first = make_authenticator(store=store).authenticate_password(proof, now=now())
    again = make_authenticator(store=store).authenticate_password(proof, now=now())
    assert again.reuse is True
    assert again.identity == first.identity
    assert sts.calls == 2


def test_exchanged_proof_reused_as_password(
    authenticator: AwsAuthenticator, moto_aws: MotoAws
) -> None:
    proof = moto_aws.sign()
    authenticator.exchange(proof, now=now())
    assert authenticator.authenticate_password(proof, now=now()).reuse is True


def test_password_reuse_off(make_authenticator: MakeAuthenticator, moto_aws: MotoAws) -> None:
    authenticator = make_authenticator(password_reuse=False)
    proof = moto_aws.sign()
    authenticator.authenticate_password(proof, now=now())
    refused(
        lambda: authenticator.authenticate_password(proof, now=now()),
        "TOKEN_REPLAYED",
        "password_reuse: false",
    )


def test_other_proof_with_a_claimed_signature(
    authenticator: AwsAuthenticator, moto_aws: MotoAws
) -> None:
    """The same signed request spelt differently (an unsigned header added) is refused."""
    proof = moto_aws.sign()
    authenticator.authenticate_password(proof, now=now())
    document = decode_proof(proof)
    document["headers"]["User-Agent"] = "curl/8"
    respelt = encode_proof("POST", document["url"], document["headers"], document["body"])
    refused(
        lambda: authenticator.authenticate_password(respelt, now=now()),
        "TOKEN_REPLAYED",
        "another proof with this signature",
    )


def test_reuse_ends_when_the_proof_goes_stale(
    authenticator: AwsAuthenticator, moto_aws: MotoAws
) -> None:
    proof = moto_aws.sign()
    login = authenticator.authenticate_password(proof, now=now())
    assert authenticator.authenticate_password(proof, now=login.expires_at).reuse is True
    refused(
        lambda: authenticator.authenticate_password(proof, now=login.expires_at + 1),
        "REQUEST_STALE",
        "sign a new one",
    )
    assert login.expires_at - now() <= MAX_AGE + CLOCK_SKEW


# -- sessions and Basic auth ----------------------------------------------------------


def test_lookup(make_authenticator: MakeAuthenticator, moto_aws: MotoAws) -> None:
    identity = make_authenticator().exchange(moto_aws.sign(), now=now()).identity
    assert make_authenticator().lookup(identity) == identity
    assert make_authenticator(accounts=("210987654321",)).lookup(identity) is None
    other = type(identity)(subject="alice", kind="human", provider="static", account="alice")
    assert make_authenticator().lookup(other) is None


def test_handles() -> None:
    assert USERNAME == "aws"
    assert AwsAuthenticator.handles("aws", "anything")
    assert not AwsAuthenticator.handles("AWS", "anything")
    assert not AwsAuthenticator.handles("alice", "secret")
