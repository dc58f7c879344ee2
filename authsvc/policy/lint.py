"""Checks on the rules as a whole, run when a configuration is loaded.

Errors (the configuration is refused): a ``provider`` no identity source is configured
under; a ``kind`` the named providers never produce; a claim (in ``match.claims`` or a
``${claims.NAME}`` placeholder) that none of the rule's providers issues; a ``glob`` on
a claim a provider declares must be matched exactly. Duplicate rule ids, unknown
placeholders and patterns that can never match are refused earlier, by the schema.

Warnings (logged, not refused): a rule that grants every action on every repository;
a rule whose every allow entry is taken back by a deny under the same match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from authsvc.identity.providers import ProviderSchema
from authsvc.policy.schema import AccessEntry, Rule
from authsvc.policy.templates import pattern_regex
from authsvc.scopes import ACTIONS, ALL

__all__ = ["LintReport", "lint_rules"]

_EVERY = frozenset((*ACTIONS, ALL))


@dataclass
class LintReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _where(index: int, rule: Rule, path: str) -> str:
    return f"rules[{index}] (id {rule.id!r}){path}"


def _scope(rule: Rule, schemas: Mapping[str, ProviderSchema]) -> list[ProviderSchema]:
    """The providers whose identities this rule could match."""
    if rule.match.provider is not None:
        return [schemas[p] for p in rule.match.provider if p in schemas]
    if rule.match.anonymous is True:
        return [schemas["anonymous"]] if "anonymous" in schemas else []
    return [s for s in schemas.values() if s.name != "anonymous"] if rule.match.claims else []


def _actions(entry: AccessEntry) -> frozenset[str]:
    return _EVERY if ALL in entry.actions else frozenset(entry.actions)


def _covers(deny: AccessEntry, allow: AccessEntry) -> bool:
    """Whether ``deny`` takes back everything ``allow`` grants (sound, not complete)."""
    if deny.registry != allow.registry:
        return False
    if deny.resource_class is not None and deny.resource_class != allow.resource_class:
        return False
    if not _actions(allow) <= _actions(deny):
        return False
    if allow.registry is not None:
        return True
    allow_t, deny_t = allow.template, deny.template
    if allow_t.placeholders or deny_t.placeholders:
        return allow.repository == deny.repository
    # Stand a character no name contains in for the allow pattern's wildcards: the deny
    # covers it only if its own wildcards absorb them.
    text = (allow.repository or "").replace("**", "\0/\0").replace("*", "\0")
    return re.fullmatch(pattern_regex(deny.repository or ""), text) is not None


def lint_rules(rules: Sequence[Rule], schemas: Mapping[str, ProviderSchema]) -> LintReport:
    report = LintReport()
    for index, rule in enumerate(rules):
        match = rule.match
        for provider in match.provider or ():
            if provider not in schemas:
                report.errors.append(
                    _where(index, rule, ".match.provider")
                    + f": unknown provider {provider!r} (configured: {', '.join(sorted(schemas))})"
                )
        providers = _scope(rule, schemas)
        if match.kind is not None and match.provider is not None and providers and not any(
            set(match.kind) & p.kinds for p in providers
        ):
            report.errors.append(
                _where(index, rule, ".match.kind")
                + f": providers {', '.join(p.name for p in providers)} never produce kind "
                f"{', '.join(match.kind)}: the rule can never match"
            )
        used: list[tuple[str, str]] = [(f".match.claims.{n}", n) for n in match.claims or {}]
        for kind in ("allow", "deny"):
            for j, entry in enumerate(getattr(rule, kind)):
                used += [
                    (f".{kind}[{j}].repository", p.claim or "")
                    for p in entry.template.placeholders
                    if p.source == "claims"
                ]
        for path, claim in used:
            if providers and not any(p.issues(claim) for p in providers):
                report.errors.append(
                    _where(index, rule, path)
                    + f": provider {', '.join(p.name for p in providers)} does not issue "
                    f"claim {claim!r}"
                )
        for name, test in (match.claims or {}).items():
            strict = [p.name for p in providers if name in p.exact_claims]
            if test.glob is not None and strict:
                report.errors.append(
                    _where(index, rule, f".match.claims.{name}")
                    + f": {name!r} must be matched exactly for {', '.join(strict)} "
                    "(use equals or any, never glob)"
                )
        for j, entry in enumerate(rule.allow):
            if entry.repository == "**" and _actions(entry) == _EVERY:
                report.warnings.append(
                    _where(index, rule, f".allow[{j}]")
                    + ": grants every action on every repository"
                )
        same_match = [r for r in rules if r.match == match]
        if rule.allow and all(
            any(_covers(d, a) for r in same_match for d in r.deny) for a in rule.allow
        ):
            report.warnings.append(
                _where(index, rule, "")
                + ": every allow entry is taken back by a deny under the same match; "
                "the rule grants nothing"
            )
    return report
