"""Typed, frozen settings from one YAML file, validated when built.

Every problem is reported with the path of the offending field
(``rules[2].allow[0].actions[0]: unknown action 'pul'``), all at once, and nothing is
ever silently dropped: unknown keys are refused, types are not coerced (``"300"`` is
not a number), and a rule that could never match anything is refused at load.

Relative paths (``keys.dir``, ``identities.static.htpasswd``) are resolved against
the directory of the configuration file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from authsvc.anomaly.settings import AnomalySettings
from authsvc.errors import ConfigError
from authsvc.identity.aws.settings import PROVIDER as AWS_PROVIDER
from authsvc.identity.aws.settings import AwsSettings, aws_rule_errors, aws_schema
from authsvc.identity.oidc.presets import PRESETS, resolve_issuer, schema_for
from authsvc.identity.oidc.rules import rule_errors, scope_errors, with_implicit_conditions
from authsvc.identity.oidc.settings import OidcIssuerSettings
from authsvc.identity.providers import builtin_schemas
from authsvc.policy.lint import lint_rules
from authsvc.policy.schema import AccessEntry, Match, Rule

__all__ = [
    "AccessEntry",
    "CredentialCacheSettings",
    "KeysSettings",
    "Match",
    "RefreshTokenSettings",
    "Rule",
    "Settings",
    "StaticUser",
    "load_settings",
    "parse_settings",
]

ENV_CONFIG = "AUTHSVC_CONFIG"
#: Environment variables that override one setting each (applied before validation).
ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "AUTHSVC_ISSUER": ("issuer",),
    "AUTHSVC_STORAGE": ("storage",),
    "AUTHSVC_KEYS_DIR": ("keys", "dir"),
}
MAX_CONFIG_BYTES = 4 * 1024 * 1024

_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_RESERVED_PROVIDERS = ("static", "anonymous", "aws")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticUser(_Model):
    password_hash: StrictStr
    groups: tuple[StrictStr, ...] = ()
    kind: Literal["human", "robot"] = "human"

    @field_validator("password_hash")
    @classmethod
    def _bcrypt(cls, value: str) -> str:
        if not _BCRYPT.fullmatch(value):
            raise ValueError(
                "not a bcrypt hash ($2b$<cost>$...); make one with `authsvc users hash`"
            )
        return value


class StaticIdentities(_Model):
    users: dict[StrictStr, StaticUser] = Field(default_factory=dict)
    htpasswd: Path | None = None

    @field_validator("users")
    @classmethod
    def _names(cls, value: dict[str, StaticUser]) -> dict[str, StaticUser]:
        for name in value:
            if not _NAME.fullmatch(name) or name == "<token>":
                raise ValueError(f"user name {name!r} is not allowed")
        return value


class Identities(_Model):
    static: StaticIdentities = Field(default_factory=StaticIdentities)
    oidc: dict[StrictStr, OidcIssuerSettings] = Field(default_factory=dict)
    aws: AwsSettings | None = None

    @field_validator("oidc")
    @classmethod
    def _issuer_names(
        cls, value: dict[str, OidcIssuerSettings]
    ) -> dict[str, OidcIssuerSettings]:
        for name in value:
            if not _PROVIDER_NAME.fullmatch(name) or name in _RESERVED_PROVIDERS:
                raise ValueError(
                    f"issuer name {name!r}: use lowercase letters, digits, '-' and '_', "
                    f"and none of {', '.join(_RESERVED_PROVIDERS)}"
                )
        return value


class KeysSettings(_Model):
    dir: Path = Path("keys")
    algorithm: Literal["ES256", "ES384", "ES512", "RS256"] = "ES256"


class CredentialCacheSettings(_Model):
    """Verified proofs re-sent by a client are served from here for ``ttl`` seconds."""

    ttl: Annotated[StrictInt, Field(ge=0, le=3600)] = 60
    max_entries: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 10_000


class RefreshTokenSettings(_Model):
    ttl: Annotated[StrictInt, Field(ge=60, le=366 * 86400)] = 30 * 86400


class AuditFileSettings(_Model):
    path: Path = Path("audit/audit.jsonl")
    max_bytes: Annotated[StrictInt, Field(ge=1024, le=1 << 40)] = 100 * 1024 * 1024
    rotate_daily: StrictBool = True
    #: Each event is written (one write on an O_APPEND file) before the answer leaves, so
    #: a killed worker loses nothing; ``fsync: true`` also waits for the disk on every
    #: event, so that a power cut loses nothing either (at a cost: see bench/README.md).
    fsync: StrictBool = False


class AuditRedisSettings(_Model):
    max_len: Annotated[StrictInt, Field(ge=1000, le=1 << 32)] = 1_000_000
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 30


class AuditSettings(_Model):
    """Where decisions are recorded, and what happens when that place fails."""

    #: ``file`` (append-only JSON Lines, the embedded default) or ``redis`` (a stream in
    #: the configured ``storage``, shared by every worker and host).
    sink: Literal["file", "redis"] = "file"
    file: AuditFileSettings = Field(default_factory=AuditFileSettings)
    redis: AuditRedisSettings = Field(default_factory=AuditRedisSettings)
    #: ``deny``: a decision the sink cannot take is not issued (503). ``spool``: it is
    #: written to a local fsynced spool and replayed into the sink when it is back.
    on_failure: Literal["deny", "spool"] = "deny"
    spool: Path = Path("audit/spool.jsonl")
    #: The HMAC key for credential fingerprints (created, mode 0600, if missing); share it
    #: between hosts for fingerprints that match across them.
    key_file: Path = Path("audit/fingerprint.key")
    checkpoint_every: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1000
    checkpoint_seconds: Annotated[StrictInt, Field(ge=1, le=86400)] = 60
    #: Also write each event as an ``authsvc.audit {json}`` line on standard error.
    stderr: StrictBool = False


class AdminSettings(_Model):
    """Who may use the admin endpoints (``POST /policy/explain``)."""

    accounts: tuple[StrictStr, ...] = ()


class Settings(_Model):
    issuer: StrictStr = "authsvc"
    services: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    realm: StrictStr = "authsvc"
    token_ttl: Annotated[StrictInt, Field(ge=60, le=86400)] = 300
    keys: KeysSettings = Field(default_factory=KeysSettings)
    storage: StrictStr = "memory://"
    identities: Identities = Field(default_factory=Identities)
    credential_cache: CredentialCacheSettings = Field(default_factory=CredentialCacheSettings)
    refresh_tokens: RefreshTokenSettings = Field(default_factory=RefreshTokenSettings)
    rules: tuple[Rule, ...] = ()
    admin: AdminSettings = Field(default_factory=AdminSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    #: Proxies whose X-Forwarded-For is believed (CIDRs); the client IP is the first
    #: address, from the right, that is not one of them.
    trusted_proxies: tuple[StrictStr, ...] = ()
    #: Set by the loader: where the file came from and the hash of its bytes.
    source: StrictStr | None = Field(default=None, exclude=True)
    digest: StrictStr = Field(default="", exclude=True)
    #: Users read from the htpasswd file (name -> bcrypt hash), filled by the loader.
    htpasswd_users: dict[StrictStr, StrictStr] = Field(default_factory=dict, exclude=True)
    #: Lint warnings found at load (logged, not refused).
    warnings: tuple[StrictStr, ...] = Field(default=(), exclude=True)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "unix://")):
            raise ValueError(f"unsupported storage URL {value!r}: use memory:// or redis://")
        return value

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if not value or any(c in value for c in '"\\') or not value.isprintable():
            raise ValueError(
                "realm must be non-empty printable text without quotes or backslashes"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, cidr in enumerate(value):
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"[{i}]: {cidr!r} is not a network (CIDR): {exc}") from exc
        return value

    @field_validator("services")
    @classmethod
    def _services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for service in value:
            if not service or service != service.strip():
                raise ValueError(f"service {service!r} is empty or has white space")
        if len(set(value)) != len(value):
            raise ValueError("a service is listed twice")
        return value

    @model_validator(mode="after")
    def _unique_rules(self) -> Settings:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("literal['catalog']",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _rule_id(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """`` (id 'x')`` for a location inside ``rules[i]`` whose id is known."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id")
            if isinstance(rule_id, str):
                return f" (id {rule_id!r})"
    return ""


def _problems(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (not part of the configuration)"
        elif error["type"] == "too_short":
            message = "must not be empty"
        loc = tuple(error["loc"])
        location = _format_location(loc)
        rule_id = _rule_id(data, loc)
        if rule_id:
            head = f"rules[{loc[1]}]"
            location = head + rule_id + location[len(head) :]
        if message.startswith("["):  # a list-item message from a list validator
            index, _, message = message.partition(": ")
            location += index
        problems.append(f"{location}: {message}")
    return problems


def _under(base_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def _resolve_oidc(
    issuers: Mapping[str, OidcIssuerSettings],
) -> tuple[dict[str, OidcIssuerSettings], list[str]]:
    """Fill each issuer's preset defaults in; refuse what the preset does not accept."""
    resolved: dict[str, OidcIssuerSettings] = {}
    problems: list[str] = []
    for name, issuer in issuers.items():
        where = f"identities.oidc.{name}"
        try:
            url = resolve_issuer(issuer)
        except ValueError as exc:
            problems.append(f"{where}.issuer: {exc}")
            continue
        if issuer.audience.rstrip("/") == url.rstrip("/"):
            problems.append(
                f"{where}.audience: must not be the issuer itself (that is the platform's "
                "own default audience); use one specific to this registry"
            )
        preset = PRESETS[issuer.preset]
        resolved[name] = issuer.model_copy(
            update={
                "issuer": url,
                "kind": issuer.kind or preset.kind,
                "require_jti": (
                    preset.require_jti_default if issuer.require_jti is None
                    else issuer.require_jti
                ),
                "subject_claim": issuer.subject_claim or preset.subject_claim_default,
                "username_claim": issuer.username_claim or preset.username_claim_default,
                "groups_claim": issuer.groups_claim or preset.groups_claim_default,
            }
        )
    return resolved, problems


def _anomaly_paths(anomaly: AnomalySettings, base_dir: Path) -> AnomalySettings:
    geo = anomaly.geo
    webhook = anomaly.webhook
    return anomaly.model_copy(
        update={
            "geo": geo.model_copy(
                update={
                    "asn_db": geo.asn_db and _under(base_dir, geo.asn_db),
                    "country_db": geo.country_db and _under(base_dir, geo.country_db),
                }
            ),
            "webhook": webhook
            and webhook.model_copy(
                update={"secret_file": _under(base_dir, webhook.secret_file)}
            ),
        }
    )


def _read_htpasswd(path: Path) -> tuple[dict[str, str], list[str]]:
    users: dict[str, str] = {}
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [f"identities.static.htpasswd: cannot read {path}: {exc}"]
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, digest = line.strip().partition(":")
        where = f"identities.static.htpasswd: {path}:{number}"
        if not sep or not _NAME.fullmatch(name):
            problems.append(f"{where}: not a 'user:bcrypt-hash' line")
        elif not _BCRYPT.fullmatch(digest):
            problems.append(f"{where}: user {name!r} has no bcrypt hash (only bcrypt is accepted)")
        elif name in users:
            problems.append(f"{where}: user {name!r} is listed twice")
        else:
            users[name] = digest
    return users, problems


def parse_settings(
    data: object,
    *,
    base_dir: Path,
    source: str | None = None,
    digest: str = "",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate already-parsed YAML data; raise ``ConfigError`` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the configuration must be a mapping"], source=source)
    data = dict(data)
    for variable, path in ENV_OVERRIDES.items():
        value = (os.environ if environ is None else environ).get(variable)
        if value is not None:
            target = data
            for key in path[:-1]:
                target = target.setdefault(key, {})
                if not isinstance(target, dict):
                    raise ConfigError([f"{'.'.join(path)}: cannot apply {variable}"], source=source)
            target[path[-1]] = value
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data), source=source) from exc

    keys_dir = (
        settings.keys.dir if settings.keys.dir.is_absolute() else base_dir / settings.keys.dir
    )
    htpasswd_users: dict[str, str] = {}
    static = settings.identities.static
    if static.htpasswd is not None:
        htpasswd = (
            static.htpasswd if static.htpasswd.is_absolute() else base_dir / static.htpasswd
        )
        htpasswd_users, problems = _read_htpasswd(htpasswd)
        problems += [
            f"identities.static.htpasswd: user {name!r} is also defined in identities.static.users"
            for name in htpasswd_users
            if name in static.users
        ]
        if problems:
            raise ConfigError(problems, source=source)
        static = static.model_copy(update={"htpasswd": htpasswd})
    users = set(static.users) | set(htpasswd_users)
    problems = [
        f"admin.accounts: {name!r} is not a configured static user"
        for name in settings.admin.accounts
        if name not in users
    ]
    oidc, oidc_problems = _resolve_oidc(settings.identities.oidc)
    schemas = builtin_schemas()
    schemas.update({name: schema_for(name, issuer) for name, issuer in oidc.items()})
    aws = settings.identities.aws
    if aws is not None:
        schemas[AWS_PROVIDER] = aws_schema(aws)
    presets = {name: PRESETS[issuer.preset] for name, issuer in settings.identities.oidc.items()}
    report = lint_rules(settings.rules, schemas)
    for index, rule in enumerate(settings.rules):
        report.errors += scope_errors(rule, index, schemas, presets)
        report.errors += aws_rule_errors(rule, index) if aws is not None else []
        for provider in rule.match.provider or ():
            if provider in presets:
                report.errors += rule_errors(rule, index, provider, presets[provider])
    problems += oidc_problems
    if problems or report.errors:
        raise ConfigError(problems + list(dict.fromkeys(report.errors)), source=source)
    rules = tuple(with_implicit_conditions(rule, presets) for rule in settings.rules)
    return settings.model_copy(
        update={
            "keys": settings.keys.model_copy(update={"dir": keys_dir}),
            "identities": settings.identities.model_copy(update={"static": static, "oidc": oidc}),
            "rules": rules,
            "audit": settings.audit.model_copy(
                update={
                    "file": settings.audit.file.model_copy(
                        update={"path": _under(base_dir, settings.audit.file.path)}
                    ),
                    "spool": _under(base_dir, settings.audit.spool),
                    "key_file": _under(base_dir, settings.audit.key_file),
                }
            ),
            "anomaly": _anomaly_paths(settings.anomaly, base_dir),
            "source": source,
            "digest": digest,
            "htpasswd_users": htpasswd_users,
            "warnings": tuple(report.warnings),
        }
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (no silent override)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            mark = key_node.start_mark
            raise ConfigError([f"line {mark.line + 1}: key {key!r} is given twice"])
        mapping[key] = loader.construct_object(value_node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml_text(text: str, *, source: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=source) from exc


def load_settings(path: Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and validate a configuration file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [f"cannot read the configuration: {exc.strerror}"], source=str(path)
        ) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"larger than {MAX_CONFIG_BYTES} bytes"], source=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source=str(path)) from exc
    data = load_yaml_text(text, source=str(path))
    return parse_settings(
        data,
        base_dir=path.resolve().parent,
        source=str(path),
        digest=hashlib.sha256(raw).hexdigest(),
        environ=environ,
    )
