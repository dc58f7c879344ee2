"""The decision engine. One code path serves the token endpoint and ``explain``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from authsvc.identity import Identity
from authsvc.policy.schema import AccessEntry, ClaimTest, Rule
from authsvc.policy.templates import Template, compile_pattern, expand
from authsvc.scopes import ACTIONS, ALL, Scope

__all__ = ["ActionDecision", "Decision", "Policy", "ScopeDecision", "claim_holds"]

_EVERY_ACTION = frozenset((*ACTIONS, ALL))
_GLOB_PIECES = re.compile(r"(\*)")


def _glob_regex(glob: str) -> re.Pattern[str]:
    """Anchored; ``*`` never crosses ``/``, ``:`` or ``@``; everything else is literal."""
    body = "".join(
        "[^/:@]*" if piece == "*" else re.escape(piece) for piece in _GLOB_PIECES.split(glob)
    )
    return re.compile(rf"\A{body}\Z")


def claim_holds(test: ClaimTest, claims: Mapping[str, object], name: str) -> bool:
    """Whether one claim test holds. A missing claim, or one of another type than the
    rule's value, fails every operator but ``present: false``."""
    present = name in claims and claims[name] is not None
    if test.present is not None:
        return present == test.present
    if not present:
        return False
    value = claims[name]
    if test.glob is not None:
        return type(value) is str and _glob_regex(test.glob).fullmatch(value) is not None
    if test.equals is not None:
        return type(value) is type(test.equals) and value == test.equals
    choices = test.any if test.any is not None else test.not_in
    assert choices is not None
    if type(value) is not type(choices[0]):
        return False
    found = any(value == choice for choice in choices)
    return found if test.any is not None else not found


@dataclass(frozen=True)
class _Entry:
    rule_id: str
    resource_type: str
    resource_class: str | None
    template: Template | None  # None for the registry catalog
    actions: frozenset[str]
    #: The compiled pattern when the template has no placeholders (compiled once).
    static: tuple[re.Pattern[str], ...] | None = None

    @classmethod
    def build(cls, rule_id: str, entry: AccessEntry) -> _Entry:
        if entry.registry is not None:
            return cls(rule_id, "registry", None, None, frozenset(entry.actions),
                       (compile_pattern(entry.registry),))
        actions = _EVERY_ACTION if ALL in entry.actions else frozenset(entry.actions)
        template = entry.template
        static = None if template.placeholders else (compile_pattern(template.skeleton()),)
        return cls(rule_id, "repository", entry.resource_class, template, actions, static)

    def patterns(self, identity: Identity, *, deny: bool) -> Sequence[re.Pattern[str]]:
        if self.static is not None:
            return self.static
        assert self.template is not None
        return list(
            expand(
                self.template,
                account=identity.account,
                groups=identity.groups,
                claims=identity.claims,
                missing_matches_anything=deny,
            )
        )

    def covers(self, scope: Scope, patterns: Sequence[re.Pattern[str]]) -> bool:
        if scope.type != self.resource_type:
            return False
        if self.resource_class is not None and scope.resource_class != self.resource_class:
            return False
        return any(p.fullmatch(scope.name) for p in patterns)


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    allow: tuple[_Entry, ...]
    deny: tuple[_Entry, ...]

    def matches(self, identity: Identity) -> bool:
        match = self.rule.match
        if match.anonymous is not None and match.anonymous != identity.anonymous:
            return False
        if match.account is not None and match.account != identity.account:
            return False
        if match.groups is not None and identity.groups.isdisjoint(match.groups):
            return False
        if match.kind is not None and identity.kind not in match.kind:
            return False
        if match.provider is not None and identity.provider not in match.provider:
            return False
        return all(
            claim_holds(test, identity.claims, name)
            for name, test in (match.claims or {}).items()
        )


@dataclass(frozen=True)
class ActionDecision:
    """One requested action on one resource: the verdict and the rules behind it."""

    action: str
    granted: bool
    allowed_by: tuple[str, ...]
    denied_by: tuple[str, ...]
    #: Rules that allow *some* action on this resource (explains a near miss).
    covered_by: tuple[str, ...] = ()

    @property
    def explanation(self) -> str:
        if self.granted:
            return f"granted by {', '.join(self.allowed_by)}"
        if self.denied_by:
            return f"denied by {', '.join(self.denied_by)}" + (
                f" (allowed by {', '.join(self.allowed_by)})" if self.allowed_by else ""
            )
        if self.action == ALL and self.allowed_by:
            return "not granted: '*' needs every action allowed, and not all are"
        if self.action not in _EVERY_ACTION:
            return f"not granted: {self.action!r} is not an action any rule can grant"
        if self.covered_by:
            return (
                f"not granted: {', '.join(self.covered_by)} cover this resource but do not "
                f"allow {self.action!r}"
            )
        return "no rule matched"


@dataclass(frozen=True)
class ScopeDecision:
    requested: Scope
    actions: tuple[ActionDecision, ...]

    @property
    def granted(self) -> tuple[str, ...]:
        return tuple(a.action for a in self.actions if a.granted)

    @property
    def denied(self) -> tuple[str, ...]:
        return tuple(a.action for a in self.actions if not a.granted)


@dataclass(frozen=True)
class Decision:
    scopes: tuple[ScopeDecision, ...]
    matched_rules: tuple[str, ...]
    policy: str
    #: The shortest ``token_ttl`` of the matched rules that set one.
    token_ttl: int | None = None
    #: The shortest ``open_alert_token_ttl``: the cap while the caller has an open alert.
    open_alert_token_ttl: int | None = None

    @property
    def granted(self) -> list[Scope]:
        return [s.requested.with_actions(s.granted) for s in self.scopes if s.granted]

    @property
    def denied(self) -> list[Scope]:
        return [s.requested.with_actions(s.denied) for s in self.scopes if s.denied]

    @property
    def outcome(self) -> str:
        if not self.denied:
            return "success"
        return "partial" if self.granted else "failure"


class Policy:
    """Compiled rules. Immutable; a reload builds a new one."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(
            _CompiledRule(
                rule,
                tuple(_Entry.build(rule.id, e) for e in rule.allow),
                tuple(_Entry.build(rule.id, e) for e in rule.deny),
            )
            for rule in rules
        )
        canonical = json.dumps(
            [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in rules],
            sort_keys=True,
        )
        self.digest = hashlib.sha256(canonical.encode()).hexdigest()

    def decide(self, identity: Identity, scopes: Iterable[Scope]) -> Decision:
        """The decision, with the rules behind every action (what ``explain`` shows)."""
        rules = [r for r in self._rules if r.matches(identity)]
        expanded = [
            (
                [(e, e.patterns(identity, deny=False)) for e in r.allow],
                [(e, e.patterns(identity, deny=True)) for e in r.deny],
            )
            for r in rules
        ]
        ttls = [r.rule.token_ttl for r in rules if r.rule.token_ttl is not None]
        risky = [r.rule.open_alert_token_ttl for r in rules if r.rule.open_alert_token_ttl]
        return Decision(
            tuple(self._decide_one(expanded, scope) for scope in scopes),
            tuple(r.rule.id for r in rules),
            self.digest,
            min(ttls) if ttls else None,
            min(risky) if risky else None,
        )

    @staticmethod
    def _decide_one(
        expanded: Sequence[
            tuple[
                list[tuple[_Entry, Sequence[re.Pattern[str]]]],
                list[tuple[_Entry, Sequence[re.Pattern[str]]]],
            ]
        ],
        scope: Scope,
    ) -> ScopeDecision:
        allowing: dict[str, list[str]] = {}
        denying: dict[str, list[str]] = {}
        for allows, denies in expanded:
            for entry, patterns in allows:
                if entry.covers(scope, patterns):
                    for action in entry.actions:
                        allowing.setdefault(action, []).append(entry.rule_id)
            for entry, patterns in denies:
                if entry.covers(scope, patterns):
                    for action in entry.actions:
                        denying.setdefault(action, []).append(entry.rule_id)
        if scope.type == "repository":
            # `*` means every action: granted only when each is allowed and none denied.
            if all(a in allowing for a in ACTIONS):
                allowing.setdefault(ALL, [r for a in ACTIONS for r in allowing[a]])
            if denying:
                denying.setdefault(ALL, [r for rs in denying.values() for r in rs])
        covering = tuple(dict.fromkeys(r for rs in allowing.values() for r in rs))
        decisions = []
        for action in scope.actions:
            allowed_by = tuple(dict.fromkeys(allowing.get(action, ())))
            if action == ALL and not allowed_by:
                allowed_by = tuple(dict.fromkeys(r for rs in allowing.values() for r in rs))
            denied_by = tuple(dict.fromkeys(denying.get(action, ())))
            granted = action in allowing and not denied_by
            decisions.append(ActionDecision(action, granted, allowed_by, denied_by, covering))
        return ScopeDecision(scope, tuple(decisions))
