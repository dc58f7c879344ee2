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

from authsvc.errors import ConfigError
from authsvc.scopes import ACTIONS, ALL

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
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATTERN_SEGMENT_CHARS = re.compile(r"[a-z0-9._:*-]+")
_LITERAL_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_SEGMENT = re.compile(r"[a-z0-9.-]+:[0-9]+|[a-z0-9-]+(?:\.[a-z0-9-]+)+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Action = Literal["pull", "push", "delete", "*"]
_VALID_ACTIONS = (*ACTIONS, ALL)


def _check_actions(value: Any) -> Any:
    if isinstance(value, list):
        for i, action in enumerate(value):
            if isinstance(action, str) and action not in _VALID_ACTIONS:
                raise ValueError(
                    f"[{i}]: unknown action {action!r} (use one of {', '.join(_VALID_ACTIONS)})"
                )
    return value


def check_repository_pattern(pattern: str) -> str:
    """Refuse a repository pattern that could never match a repository name."""
    if pattern != pattern.strip() or not pattern:
        raise ValueError("pattern is empty or has surrounding white space")
    if pattern.lower() != pattern:
        raise ValueError(f"pattern {pattern!r} can never match: repository names are lowercase")
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        if not segment:
            raise ValueError(f"pattern {pattern!r} can never match: it has an empty path segment")
        if not _PATTERN_SEGMENT_CHARS.fullmatch(segment):
            bad = sorted(set(re.sub(r"[a-z0-9._:*-]", "", segment)))
            raise ValueError(
                f"pattern {pattern!r} can never match: characters {''.join(bad)!r} "
                "never occur in repository names"
            )
        if "***" in segment:
            raise ValueError(f"pattern {pattern!r}: '***' is not a wildcard (use * or **)")
        if "*" in segment:
            continue
        host_ok = index == 0 and len(segments) > 1 and _HOST_SEGMENT.fullmatch(segment)
        if not host_ok and not _LITERAL_COMPONENT.fullmatch(segment):
            raise ValueError(
                f"pattern {pattern!r} can never match: {segment!r} is not a valid "
                "repository path component"
            )
    return pattern


class Match(_Model):
    """Which identities a rule applies to; every condition given must hold."""

    account: StrictStr | None = None
    groups: tuple[StrictStr, ...] | None = None
    anonymous: StrictBool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if self.account is None and self.groups is None and self.anonymous is None:
            raise ValueError("match names no condition (use account, groups or anonymous)")
        if self.groups is not None and not self.groups:
            raise ValueError("groups: an empty list can never match")
        if self.anonymous is True and (self.account is not None or self.groups):
            raise ValueError("anonymous: true cannot be combined with account or groups")
        return self


class AccessEntry(_Model):
    """One allow or deny entry: a repository pattern or the registry catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    repository: StrictStr | None = None
    registry: Literal["catalog"] | None = None
    resource_class: StrictStr | None = Field(default=None, alias="class")
    actions: Annotated[tuple[Action, ...], Field(min_length=1)]

    _actions = field_validator("actions", mode="before")(_check_actions)

    @field_validator("repository")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return None if value is None else check_repository_pattern(value)

    @model_validator(mode="after")
    def _one_resource(self) -> AccessEntry:
        if (self.repository is None) == (self.registry is None):
            raise ValueError("name exactly one of repository or registry")
        if self.registry is not None and self.resource_class is not None:
            raise ValueError("class applies to repository entries only")
        if self.registry == "catalog" and set(self.actions) != {ALL}:
            raise ValueError("the registry catalog is granted only as actions: ['*']")
        return self


class Rule(_Model):
    id: StrictStr
    description: StrictStr | None = None
    match: Match
    allow: tuple[AccessEntry, ...] = ()
    deny: tuple[AccessEntry, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _RULE_ID.fullmatch(value):
            raise ValueError(f"rule id {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Rule:
        if not self.allow and not self.deny:
            raise ValueError("rule has neither allow nor deny entries")
        return self


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


class KeysSettings(_Model):
    dir: Path = Path("keys")
    algorithm: Literal["ES256", "ES384", "ES512", "RS256"] = "ES256"


class CredentialCacheSettings(_Model):
    """Verified proofs re-sent by a client are served from here for ``ttl`` seconds."""

    ttl: Annotated[StrictInt, Field(ge=0, le=3600)] = 60
    max_entries: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 10_000


class RefreshTokenSettings(_Model):
    ttl: Annotated[StrictInt, Field(ge=60, le=366 * 86400)] = 30 * 86400


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
    #: Set by the loader: where the file came from and the hash of its bytes.
    source: StrictStr | None = Field(default=None, exclude=True)
    digest: StrictStr = Field(default="", exclude=True)
    #: Users read from the htpasswd file (name -> bcrypt hash), filled by the loader.
    htpasswd_users: dict[StrictStr, StrictStr] = Field(default_factory=dict, exclude=True)

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


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (not part of the configuration)"
        elif error["type"] == "too_short":
            message = "must not be empty"
        location = _format_location(tuple(error["loc"]))
        if message.startswith("["):  # a list-item message from a list validator
            index, _, message = message.partition(": ")
            location += index
        problems.append(f"{location}: {message}")
    return problems


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
        raise ConfigError(_problems(exc), source=source) from exc

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
    return settings.model_copy(
        update={
            "keys": settings.keys.model_copy(update={"dir": keys_dir}),
            "identities": settings.identities.model_copy(update={"static": static}),
            "source": source,
            "digest": digest,
            "htpasswd_users": htpasswd_users,
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
