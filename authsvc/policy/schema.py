"""The rule language as validated data: ``match``, ``allow``/``deny`` entries, rules.

Every check here is structural and local to one rule (types, operators, patterns,
placeholders). Checks that need the whole configuration — duplicate ids, known
providers and their claims — are in ``authsvc.policy.lint``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

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

from authsvc.policy.templates import Template, parse_template
from authsvc.scopes import ACTIONS, ALL

__all__ = [
    "AccessEntry",
    "Action",
    "ClaimTest",
    "Kind",
    "Match",
    "Rule",
    "check_repository_pattern",
]

Action = Literal["pull", "push", "delete", "*"]
Kind = Literal["human", "robot", "ci", "anonymous"]
Scalar = StrictStr | StrictInt | StrictBool
_VALID_ACTIONS = (*ACTIONS, ALL)
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATTERN_SEGMENT_CHARS = re.compile(r"[a-z0-9._:*-]+")
_LITERAL_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_SEGMENT = re.compile(r"[a-z0-9.-]+:[0-9]+|[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_actions(value: Any) -> Any:
    if isinstance(value, list):
        for i, action in enumerate(value):
            if isinstance(action, str) and action not in _VALID_ACTIONS:
                raise ValueError(
                    f"[{i}]: unknown action {action!r} (use one of {', '.join(_VALID_ACTIONS)})"
                )
    return value


def check_repository_pattern(pattern: str) -> str:
    """Refuse a repository pattern (placeholders stood in for) that could never match."""
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


class ClaimTest(_Model):
    """One typed comparison on a verified claim; exactly one operator is given.

    The type of the rule's value is the type the claim must have: a claim of another
    type (a list where a string is expected, a number for a string, a bool for a number)
    or a missing claim makes the test fail. ``present: false`` is the one test that a
    missing claim passes.
    """

    equals: Scalar | None = None
    any: tuple[Scalar, ...] | None = None
    glob: StrictStr | None = None
    not_in: tuple[Scalar, ...] | None = None
    present: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_value(cls, value: Any) -> Any:
        if isinstance(value, str | int | bool) and not isinstance(value, float):
            return {"equals": value}
        if isinstance(value, list):
            raise ValueError("a list is not a claim test: use {any: [...]} or {not_in: [...]}")
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> ClaimTest:
        given = [name for name in ClaimTest.model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of equals, any, glob, not_in, present "
                f"(got {', '.join(given) or 'none'})"
            )
        for name in ("any", "not_in"):
            values = getattr(self, name)
            if values is None:
                continue
            if not values:
                raise ValueError(f"{name}: must not be empty")
            if len({type(v) for v in values}) != 1:
                raise ValueError(f"{name}: values must all be of one type")
        if self.glob is not None and not self.glob:
            raise ValueError("glob: must not be empty")
        return self

    @property
    def operator(self) -> str:
        return next(n for n in ClaimTest.model_fields if getattr(self, n) is not None)


class Match(_Model):
    """Which identities a rule applies to; every condition given must hold (AND)."""

    account: StrictStr | None = None
    groups: tuple[StrictStr, ...] | None = None
    anonymous: StrictBool | None = None
    kind: tuple[Kind, ...] | None = None
    provider: tuple[StrictStr, ...] | None = None
    claims: dict[StrictStr, ClaimTest] | None = None

    @field_validator("kind", "provider", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("claims")
    @classmethod
    def _claim_names(cls, value: dict[str, ClaimTest] | None) -> dict[str, ClaimTest] | None:
        for name in value or {}:
            if not _CLAIM_NAME.fullmatch(name):
                raise ValueError(f"claim name {name!r} is malformed")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        conditions = ("account", "groups", "anonymous", "kind", "provider", "claims")
        if all(getattr(self, name) is None for name in conditions):
            raise ValueError(f"match names no condition (use {', '.join(conditions)})")
        for name in ("groups", "kind", "provider", "claims"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ValueError(f"{name}: an empty list can never match")
        if self.anonymous is True and (
            self.account is not None or self.groups or self.claims
        ):
            raise ValueError("anonymous: true cannot be combined with account, groups or claims")
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
        if value is not None:
            check_repository_pattern(parse_template(value).skeleton())
        return value

    @model_validator(mode="after")
    def _one_resource(self) -> AccessEntry:
        if (self.repository is None) == (self.registry is None):
            raise ValueError("name exactly one of repository or registry")
        if self.registry is not None and self.resource_class is not None:
            raise ValueError("class applies to repository entries only")
        if self.registry == "catalog" and set(self.actions) != {ALL}:
            raise ValueError("the registry catalog is granted only as actions: ['*']")
        return self

    @property
    def template(self) -> Template:
        return parse_template(self.repository or "")


class Rule(_Model):
    id: StrictStr
    description: StrictStr | None = None
    match: Match
    allow: tuple[AccessEntry, ...] = ()
    deny: tuple[AccessEntry, ...] = ()
    #: Caps the lifetime of tokens granted while this rule matches (seconds).
    token_ttl: Annotated[StrictInt, Field(ge=60, le=86400)] | None = None
    #: Caps it further while the caller has an open anomaly alert (a risk response).
    open_alert_token_ttl: Annotated[StrictInt, Field(ge=60, le=86400)] | None = None

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
