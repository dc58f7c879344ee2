"""``anomaly:`` settings: named networks, the in-request backoff, the detectors, the webhook.

Validated like the rest of the configuration (unknown keys refused, no coercion, every
problem named by its path). Durations are seconds. Every detector has ``enabled`` and
``severity`` (``page`` or ``signal``) plus its own entity, window and thresholds;
the defaults are the ones the simulator in ``bench/detect/`` measured (README,
"Anomaly detection").
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic import StrictFloat as _StrictFloat

__all__ = [
    "AnomalySettings",
    "BackoffSettings",
    "DetectorSettings",
    "Detectors",
    "GeoSettings",
    "WebhookSettings",
]

MINUTE = 60
HOUR = 3600
DAY = 86400
#: How long detectors keep what they learned (a principal's networks, hours, baselines)
#: after it was last refreshed.
REMEMBER = 400 * DAY

Severity = Literal["page", "signal"]
Seconds = Annotated[StrictInt, Field(ge=1, le=3650 * DAY)]
Count = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Ratio = Annotated[_StrictFloat | StrictInt, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffSettings(_Model):
    """Failures per (account, source address): after ``threshold`` within ``window``,
    each further failure doubles the wait (``base_delay``, capped at ``max_delay``).
    Only password logins from that one address wait: never a lockout of the account."""

    enabled: StrictBool = True
    threshold: Count = 5
    window: Seconds = 15 * MINUTE
    base_delay: Seconds = 1
    max_delay: Seconds = 15 * MINUTE
    #: Seconds a worker trusts that an (account, address) it found without failures
    #: still has none, before asking the store again (0: ask on every login). Failures
    #: counted by other workers take effect there at most this much later.
    recheck: Annotated[StrictInt, Field(ge=0, le=60)] = 1

    @model_validator(mode="after")
    def _delays(self) -> BackoffSettings:
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must not be shorter than base_delay")
        return self


class DetectorSettings(_Model):
    enabled: StrictBool = True
    severity: Severity = "signal"


class PasswordSpray(DetectorSettings):
    """Distinct accounts failing from one source (address, its /24 or /48, its ASN)."""

    window: Seconds = HOUR
    threshold: Count = 10
    #: The same over a network (many addresses of one attacker), counted apart.
    network_threshold: Count = 20
    #: A slow spray: few tries an hour, many accounts a day.
    slow_window: Seconds = DAY
    slow_threshold: Count = 25
    #: A source is sprayed only when its failing accounts outnumber this many times the
    #: accounts that logged in from it successfully over ``slow_window`` (office NATs).
    shared_source_ratio: Ratio = 0.5


class SuccessAfterSpray(DetectorSettings):
    severity: Severity = "page"
    #: How long a source stays flagged after a spray alert.
    window: Seconds = HOUR


class BruteForce(DetectorSettings):
    """Distinct passwords (credential fingerprints) failing per (account, source) in a
    window: guessing, not a tool retrying one expired password."""

    window: Seconds = HOUR
    threshold: Count = 20


class CredentialStuffing(DetectorSettings):
    """The global failure ratio and unknown-account share of the current bucket against
    their own EWMA baseline; needs ``min_failures`` in the bucket and ``learning``
    first."""

    severity: Severity = "page"
    bucket: Seconds = 5 * MINUTE
    min_failures: Count = 50
    #: Buckets with fewer requests (a quiet night) do not teach the baseline.
    min_requests: Count = 20
    #: The limit never exceeds this ratio (a noisy baseline must not make it unreachable).
    max_limit: Ratio = 0.9
    #: How far above the baseline (its EWMA plus ``deviations`` mean absolute deviations).
    deviations: Ratio = 6.0
    #: A floor on the rise of the ratio itself (0.25: 25 percentage points).
    min_rise: Ratio = 0.25
    alpha: Ratio = 0.1
    learning: Seconds = DAY


class CiOutsideCi(DetectorSettings):
    """A CI or robot identity from outside its runner networks, or from an interactive
    client. Declared networks win; without them, the networks (``learn_prefix``) seen
    for the provider during ``learning`` are its runners."""

    severity: Severity = "page"
    runner_networks: tuple[StrictStr, ...] = ()
    provider_networks: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    #: Identity kinds and providers watched (AWS roles are robots).
    kinds: tuple[Literal["ci", "robot"], ...] = ("ci",)
    providers: tuple[StrictStr, ...] = ("aws",)
    learning: Seconds = 7 * DAY
    learn_prefix: Annotated[StrictInt, Field(ge=8, le=32)] = 16
    #: Client families that mean a person at a keyboard.
    interactive_clients: tuple[StrictStr, ...] = ("browser", "docker-desktop")


class ScopeProbing(DetectorSettings):
    """Distinct denied (repository, action) pairs per principal; any denied delete,
    ``*`` or catalog request by a CI or robot identity."""

    window: Seconds = HOUR
    threshold: Count = 15


class MassPull(DetectorSettings):
    """Distinct repositories pulled per principal and network in a sliding window,
    against an absolute floor, ``multiplier`` times the EWMA of its hourly counts and
    ``peak_factor`` times its decaying peak; quiet in the principal's ``learning``."""

    window: Seconds = HOUR
    floor: Count = 50
    multiplier: Ratio = 5.0
    alpha: Ratio = 0.2
    #: A count this many times the principal's (decaying) peak on that network.
    peak_factor: Ratio = 1.5
    peak_half_life: Seconds = 30 * DAY
    learning: Seconds = 7 * DAY


class NewContext(DetectorSettings):
    """First use by a principal of a network, ASN, country or client family after its
    ``learning`` period; quiet when ``shared_by`` principals used it in ``window``."""

    learning: Seconds = 7 * DAY
    window: Seconds = DAY
    shared_by: Count = 5
    #: Which contexts count: network (/24, /48 or ASN), country, client family.
    contexts: tuple[Literal["network", "asn", "country", "client"], ...] = (
        "network",
        "asn",
        "country",
    )


class FirstTimePush(DetectorSettings):
    """A push to a repository no one in the pusher's groups pushed to before (after a
    global ``learning`` period)."""

    learning: Seconds = 7 * DAY


class OffHoursPush(DetectorSettings):
    """A human's push in an hour band of the day (UTC, ``band``-hour bands) in which the
    principal was not active before (first seen ``settle`` ago), nor in a band next to it;
    after its ``learning`` period."""

    learning: Seconds = 7 * DAY
    band: Annotated[StrictInt, Field(ge=1, le=12)] = 2
    #: Bands it must have been seen active in before, so that a new hire is not paged.
    min_active_bands: Count = 3
    #: How long ago a band must first have been seen to count as the principal's.
    settle: Seconds = 12 * HOUR


class DormantCredential(DetectorSettings):
    """A credential (fingerprint) or account unused for ``idle`` used again."""

    idle: Seconds = 90 * DAY


class ProofReuse(DetectorSettings):
    """An OIDC token or AWS signed request presented for a second exchange, except by
    the same address within ``grace`` seconds of its first use (a client's retry)."""

    severity: Severity = "page"
    grace: Seconds = 60
    #: How long a proof's first use is remembered (longer than any proof lives).
    remember: Seconds = DAY


class Detectors(_Model):
    password_spray: PasswordSpray = Field(default_factory=PasswordSpray)
    success_after_spray: SuccessAfterSpray = Field(default_factory=SuccessAfterSpray)
    brute_force: BruteForce = Field(default_factory=BruteForce)
    credential_stuffing: CredentialStuffing = Field(default_factory=CredentialStuffing)
    ci_outside_ci: CiOutsideCi = Field(default_factory=CiOutsideCi)
    scope_probing: ScopeProbing = Field(default_factory=ScopeProbing)
    mass_pull: MassPull = Field(default_factory=MassPull)
    new_context: NewContext = Field(default_factory=NewContext)
    first_time_push: FirstTimePush = Field(default_factory=FirstTimePush)
    off_hours_push: OffHoursPush = Field(default_factory=OffHoursPush)
    dormant_credential: DormantCredential = Field(default_factory=DormantCredential)
    proof_reuse: ProofReuse = Field(default_factory=ProofReuse)


class GeoSettings(_Model):
    """MaxMind-format databases (GeoLite2-ASN / -Country or compatible), read with the
    ``maxminddb`` reader (``pip install 'authsvc[geo]'``)."""

    asn_db: Path | None = None
    country_db: Path | None = None


class WebhookSettings(_Model):
    """Alerts POSTed as JSON, signed ``X-Authsvc-Signature: sha256=<hex HMAC>``."""

    url: StrictStr
    #: A file holding the HMAC secret (never the secret itself in the config).
    secret_file: Path
    timeout: Annotated[_StrictFloat | StrictInt, Field(gt=0, le=60)] = 5
    max_attempts: Annotated[StrictInt, Field(ge=1, le=100)] = 8
    #: Minimum severity sent: ``signal`` sends everything, ``page`` pages only.
    min_severity: Severity = "signal"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"webhook url {value!r} must be http:// or https://")
        return value


class AnomalySettings(_Model):
    #: Named CIDR sets (runners, office, VPN), used by the detectors' settings.
    networks: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    geo: GeoSettings = Field(default_factory=GeoSettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    detectors: Detectors = Field(default_factory=Detectors)
    webhook: WebhookSettings | None = None
    #: The Redis Streams consumer group of ``authsvc detect run``.
    consumer_group: StrictStr = "authsvc-detect"
    #: Where ``authsvc detect run`` keeps the detector state. ``memory``: one consumer
    #: of the group at a time holds it in memory (exact, as replay), checkpointed to
    #: Redis after every batch; the others stand by to take over. ``redis``: in Redis,
    #: shared, so every consumer of the group works (HyperLogLog distinct counts).
    consumer_state: Literal["memory", "redis"] = "memory"
    #: Seconds the holder of the memory state keeps it without a checkpoint; a standby
    #: takes over that long after the holder died.
    consumer_lease: Annotated[_StrictFloat | StrictInt, Field(ge=2, le=300)] = 10

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, cidrs in value.items():
            if not name:
                raise ValueError("a network set needs a name")
            for i, cidr in enumerate(cidrs):
                try:
                    ipaddress.ip_network(cidr, strict=True)
                except ValueError as exc:
                    raise ValueError(
                        f"{name}[{i}]: {cidr!r} is not a network (CIDR): {exc}"
                    ) from exc
        return value

    @model_validator(mode="after")
    def _known_networks(self) -> AnomalySettings:
        ci = self.detectors.ci_outside_ci
        named = [("detectors.ci_outside_ci.runner_networks", n) for n in ci.runner_networks]
        for provider, names in ci.provider_networks.items():
            named += [(f"detectors.ci_outside_ci.provider_networks.{provider}", n) for n in names]
        for where, name in named:
            if name not in self.networks:
                known = ", ".join(sorted(self.networks)) or "none"
                raise ValueError(
                    f"{where}: unknown network set {name!r} (anomaly.networks: {known})"
                )
        return self
