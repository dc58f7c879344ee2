"""A signed GetCallerIdentity request becomes an Identity, once.

The proof (``proof.py``) is checked locally first, then claimed, then sent to STS:
the claim comes before the call so that a replayed proof never reaches STS, and many
concurrent copies of one proof make one STS call. The claim is keyed by the request's
SigV4 signature, ``aws-proof:<signature>``, until the proof goes stale (X-Amz-Date +
``max_request_age`` + skew), and records the SHA-256 of the proof text:

* exchanged (RFC 8693) — only the first exchange succeeds, even among concurrent
  ones: a second is TOKEN_REPLAYED. If STS cannot be reached during the first, the
  proof is spent all the same; the client signs a new one (signing is local);
* presented as the password of user ``aws`` (clients re-send their login password on
  every registry operation) — the byte-identical proof that made the claim is accepted
  again while it is fresh (``password_reuse``; audited as a reuse): from this
  process's verified-credential cache without asking STS, else, in another process,
  by asking STS again once the claim's recorded hash matched. Parallel requests with
  one proof make one STS call (the others wait on the cache's lock for it). A
  different proof text with a claimed signature is always refused.

STS's ARN is normalised so that rules name stable principals:

================================================ =====================================
``arn:aws:sts::ACCT:assumed-role/ROLE/SESSION``  ``arn:aws:iam::ACCT:role/ROLE``; claims
                                                 ``role``, ``session_name``, ``user_id``
                                                 = the role's unique id (AROA..., the
                                                 UserId before ``:``). The role's path
                                                 is not in STS's ARN, so it is lost.
``arn:aws:iam::ACCT:user/PATH/NAME``             as is; claims ``user`` = NAME,
                                                 ``user_id`` = the user's id (AIDA...)
``arn:aws:iam::ACCT:root``                       refused: ROOT_REFUSED
anything else (federated users, ...)             refused: UNSUPPORTED_PRINCIPAL
================================================ =====================================

Every identity also has the claims ``account``, ``arn`` (normalised) and ``sts_arn``
(as STS said it); its subject and account name are the normalised ARN. A rule that
must not match a deleted and re-created role or user of the same name pins
``user_id``, which changes with every re-creation.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

from authsvc.errors import InvalidCredentials
from authsvc.identity import Identity
from authsvc.identity.aws.proof import SignedRequest, parse_proof
from authsvc.identity.aws.settings import PROVIDER, AwsSettings
from authsvc.identity.aws.sts import CallerIdentity, StsClient
from authsvc.identity.cache import VerifiedCache
from authsvc.store import Store

__all__ = ["USERNAME", "AwsAuthenticator", "AwsLogin", "normalise"]

#: The Basic-auth user name that says "the password is a signed AWS request".
USERNAME: Final = "aws"

_ARN: Final = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*):(?P<service>iam|sts)::(?P<account>[0-9]{12}):"
    r"(?P<resource>.+)"
)
_NAME: Final = r"[\w+=,.@-]+"
_ASSUMED_ROLE: Final = re.compile(
    rf"assumed-role/(?P<role>{_NAME})/(?P<session>{_NAME})", re.ASCII
)
_USER: Final = re.compile(rf"user/(?:{_NAME}/)*(?P<user>{_NAME})", re.ASCII)
_UNIQUE_ID: Final = re.compile(r"[A-Za-z0-9]{1,128}")


@dataclass(frozen=True)
class AwsLogin:
    identity: Identity
    #: The same proof was accepted again (as a password) rather than used the first time.
    reuse: bool
    #: Unix time until which the proof is fresh (and reusable as a password).
    expires_at: int
    #: The ``identities.aws`` settings (kind, session_ttl, token_ttl, password_reuse).
    settings: AwsSettings


def _proof_hash(proof: str) -> str:
    return hashlib.sha256(proof.encode("utf-8", "surrogatepass")).hexdigest()


def _refuse(reason: str, message: str) -> InvalidCredentials:
    return InvalidCredentials(message, reason=reason)


def normalise(caller: CallerIdentity) -> tuple[str, dict[str, object]]:
    """The normalised ARN of STS's caller, and the identity's claims (see the table)."""
    match = _ARN.fullmatch(caller.arn)
    if match is None or match["account"] != caller.account:
        raise _refuse("UNSUPPORTED_PRINCIPAL", "STS named a principal that is not an IAM ARN")
    partition, service, account = match["partition"], match["service"], match["account"]
    resource = match["resource"]
    claims: dict[str, object] = {"account": account, "sts_arn": caller.arn}
    if service == "iam" and resource == "root":
        raise _refuse(
            "ROOT_REFUSED",
            f"account {account}'s root user may not log in: use an IAM role or user",
        )
    role = _ASSUMED_ROLE.fullmatch(resource) if service == "sts" else None
    user = _USER.fullmatch(resource) if service == "iam" else None
    if role is not None:
        unique_id, _, session = caller.user_id.partition(":")
        if not _UNIQUE_ID.fullmatch(unique_id) or session != role["session"]:
            raise _refuse(
                "UNSUPPORTED_PRINCIPAL", "STS's UserId for an assumed role is not 'ROLEID:SESSION'"
            )
        arn = f"arn:{partition}:iam::{account}:role/{role['role']}"
        claims.update(role=role["role"], session_name=role["session"], user_id=unique_id)
    elif user is not None:
        if not _UNIQUE_ID.fullmatch(caller.user_id):
            raise _refuse("UNSUPPORTED_PRINCIPAL", "STS's UserId for an IAM user is not an id")
        arn = caller.arn
        claims.update(user=user["user"], user_id=caller.user_id)
    else:
        kind = resource.split("/", 1)[0][:32]
        raise _refuse(
            "UNSUPPORTED_PRINCIPAL",
            f"only IAM users and assumed roles may log in, not {service}:{kind!r} principals",
        )
    claims["arn"] = arn
    return arn, claims


class AwsAuthenticator:
    def __init__(
        self,
        settings: AwsSettings,
        *,
        sts: StsClient,
        store: Store,
        cache: VerifiedCache,
    ) -> None:
        self.settings = settings
        self._sts = sts
        self._store = store
        self._cache = cache

    @staticmethod
    def handles(username: str, password: str) -> bool:
        """Whether a Basic-auth login is a signed AWS request (user name ``aws``)."""
        return username == USERNAME

    def exchange(self, proof: str, *, now: int) -> AwsLogin:
        """RFC 8693: the proof's first and only exchange."""
        request = parse_proof(proof, self.settings, now=now)
        if self._claim(request, proof) is not None:
            raise _refuse(
                "TOKEN_REPLAYED",
                "this signed request was already used: sign a new one for each exchange",
            )
        return self._login(self._sts.get_caller_identity(request), request, reuse=False)

    def authenticate_password(self, proof: str, *, now: int) -> AwsLogin:
        """A proof sent as a password: checked and claimed once, then reusable while fresh."""
        request = parse_proof(proof, self.settings, now=now)
        cache_key = self._cache.key("aws", proof)
        login = self._cached(cache_key, request)
        if login is not None:
            return login
        # A registry client sends one login on many parallel requests: one of them asks
        # STS, the others wait for its answer in the cache.
        with self._cache.lock_for(cache_key):
            login = self._cached(cache_key, request)
            if login is not None:
                return login
            holder = self._claim(request, proof)
            if holder is None or (holder == _proof_hash(proof) and self.settings.password_reuse):
                caller = self._sts.get_caller_identity(request)
                login = self._login(caller, request, reuse=holder is not None)
                self._cache.put(cache_key, _binding(caller), deadline_in=request.expires_at - now)
                return login
        raise _refuse(
            "TOKEN_REPLAYED",
            "another proof with this signature was already used"
            if holder != _proof_hash(proof)
            else "this signed request was already used, and reuse as a password is off "
            "(password_reuse: false)",
        )

    def lookup(self, identity: Identity) -> Identity | None:
        """A session's identity stays while its account is still allowed."""
        if identity.provider != PROVIDER:
            return None
        return identity if identity.claims.get("account") in self.settings.accounts else None

    # -------------------------------------------------------------------------------

    def _cached(self, cache_key: bytes, request: SignedRequest) -> AwsLogin | None:
        binding = self._cache.get(cache_key)
        if binding is None or not self.settings.password_reuse:
            return None
        return self._login(_from_binding(binding), request, reuse=True)

    def _claim(self, request: SignedRequest, proof: str) -> str | None:
        return self._store.claim_value(
            f"aws-proof:{request.signature}", _proof_hash(proof), request.expires_at
        )

    def _login(self, caller: CallerIdentity, request: SignedRequest, *, reuse: bool) -> AwsLogin:
        if caller.account not in self.settings.accounts:
            raise _refuse(
                "ACCOUNT_NOT_ALLOWED",
                f"AWS account {caller.account} is not one of the accounts allowed here",
            )
        arn, claims = normalise(caller)
        identity = Identity(
            subject=arn,
            kind=self.settings.kind,
            provider=PROVIDER,
            account=arn,
            claims=claims,
        )
        return AwsLogin(identity, reuse, request.expires_at, self.settings)


def _binding(caller: CallerIdentity) -> str:
    """What the cache keeps for a proof: STS's answer (no secret), re-checked on a hit."""
    return json.dumps([caller.arn, caller.account, caller.user_id])


def _from_binding(binding: str) -> CallerIdentity:
    arn, account, user_id = json.loads(binding)
    return CallerIdentity(arn=str(arn), account=str(account), user_id=str(user_id))
