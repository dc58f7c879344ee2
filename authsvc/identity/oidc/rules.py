"""What a rule on an OIDC preset must say, checked when the configuration loads.

* **Pins.** A rule that *allows* something to a preset's provider tests, with ``equals``
  or ``any``, at least one claim of each of the preset's required sets (GitHub: the
  numeric repository or owner id; GitLab: project or namespace id; ...). A ``glob``
  counts only where the preset says which form pins a tenant (CircleCI's ``sub``).
  Deny-only rules need no pins: they can only take away.
* **Types.** A test whose value has another type than the platform sends (an unquoted
  id where GitHub sends strings) would never hold; it is refused with the fix.
* **Companions.** Some claims mean little alone (GitLab's ``ref`` is a bare name: a tag
  named like a protected branch has the same ``ref``); a rule testing one must test a
  companion too.
* **Implicit conditions.** A preset may add a condition to every allowing rule on it
  (GitHub: ``event_name`` is not ``pull_request_target``, whose jobs run a fork's code
  with the base repository's identity) unless the rule tests that claim itself, and then
  it must name the excluded values to admit them.
* **Scope.** A rule that could match a preset's tokens without naming the provider
  (``kind: ci``, bare claims) would escape all of the above; it is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from authsvc.identity.oidc.presets import ClaimType, Preset
from authsvc.identity.providers import ProviderSchema
from authsvc.policy.engine import claim_holds
from authsvc.policy.schema import ClaimTest, Rule

__all__ = ["rule_errors", "scope_errors", "with_implicit_conditions"]

_PINNING = ("equals", "any")
_PYTHON_TYPES: Mapping[type, ClaimType] = {
    str: "string", int: "integer", bool: "boolean",
}


def _where(index: int, rule: Rule, path: str) -> str:
    return f"rules[{index}] (id {rule.id!r}){path}"


def _on(preset: Preset, provider: str) -> str:
    return f"rules on {preset.name} (provider {provider!r})"


def _pins(preset: Preset, name: str, test: ClaimTest | None) -> bool:
    if test is None:
        return False
    if test.operator in _PINNING:
        return True
    form = preset.glob_pins.get(name)
    return form is not None and test.glob is not None and form[0].fullmatch(test.glob) is not None


def _value_type(test: ClaimTest) -> ClaimType | None:
    values = (test.equals,) if test.equals is not None else test.any or test.not_in
    if not values:
        return None
    return _PYTHON_TYPES.get(type(values[0]))


def _implicit_errors(
    rule: Rule, index: int, provider: str, preset: Preset
) -> list[str]:
    errors: list[str] = []
    claims = rule.match.claims or {}
    for name, condition in preset.implicit_conditions.items():
        excluded = condition.not_in or ()
        test = claims.get(name)
        if test is None:
            if rule.deny:
                errors.append(
                    _where(index, rule, f".match.claims.{name}")
                    + f": {_on(preset, provider)} that deny must be split from their allow "
                    f"entries (or test {name!r} themselves): the implicit condition would "
                    "narrow the deny"
                )
            continue
        admitted = [v for v in excluded if claim_holds(test, {name: v}, name)]
        named = set(test.any or ()) | ({test.equals} if test.equals is not None else set())
        if any(v not in named for v in admitted):
            errors.append(
                _where(index, rule, f".match.claims.{name}")
                + f": this test lets {', '.join(repr(v) for v in excluded)} through without "
                "naming it; name it in any/equals to admit it, or in not_in to exclude it"
            )
    return errors


def rule_errors(rule: Rule, index: int, provider_name: str, preset: Preset) -> list[str]:
    """Errors for a rule whose ``match.provider`` names a provider of this preset."""
    if not rule.allow:
        return []  # deny-only: it can only take away
    claims = rule.match.claims or {}
    errors: list[str] = []
    for required in preset.required_pins:
        if not any(_pins(preset, name, claims.get(name)) for name in required):
            names = " or ".join(sorted(required))
            forms = [
                f"{name} with a glob of the form {preset.glob_pins[name][1]}"
                for name in sorted(required)
                if name in preset.glob_pins
            ]
            errors.append(
                _where(index, rule, ".match.claims")
                + f": {_on(preset, provider_name)} must pin {names} with equals or any"
                + (f" (or {', '.join(forms)})" if forms else "")
            )
    for name, test in claims.items():
        expected = preset.claim_types.get(name)
        found = _value_type(test)
        if expected not in (None, "mixed") and found is not None and found != expected:
            errors.append(
                _where(index, rule, f".match.claims.{name}")
                + f": {name!r} is {'an' if expected == 'integer' else 'a'} {expected} in "
                f"{preset.name} tokens, so a test with {'an' if found == 'integer' else 'a'} "
                f"{found} value never holds" + (" (quote the value)" if expected == "string"
                                                 else "")
            )
    for name, (partners, why) in preset.companions.items():
        if name in claims and not any(_pins(preset, p, claims.get(p)) for p in partners):
            errors.append(
                _where(index, rule, f".match.claims.{name}")
                + f": {_on(preset, provider_name)} that test {name!r} must also test "
                f"{' or '.join(sorted(partners))} with equals or any: {why}"
            )
    return errors + _implicit_errors(rule, index, provider_name, preset)


def scope_errors(
    rule: Rule,
    index: int,
    schemas: Mapping[str, ProviderSchema],
    presets_by_provider: Mapping[str, Preset],
) -> list[str]:
    """Refuse an allowing rule that could match a preset's tokens while escaping its pins
    or implicit conditions: one naming no provider yet able to match CI identities, or
    one mixing a pinned preset's providers with others."""
    if not rule.allow:
        return []
    match = rule.match
    guarded = {
        name: preset for name, preset in presets_by_provider.items()
        if preset.required_pins or preset.implicit_conditions
    }
    if match.provider is None:
        if match.anonymous is True or match.account is not None or match.groups is not None:
            return []
        exposed = [
            name for name in sorted(guarded)
            if match.kind is None or set(match.kind) & schemas[name].kinds
        ]
        if not exposed:
            return []
        listed = ", ".join(f"{n!r} ({guarded[n].name})" for n in exposed)
        return [
            _where(index, rule, ".match")
            + f": names no provider, so it matches tokens from {listed} without the pins "
            "their presets require; name the providers in match.provider"
        ]
    # Pins hold per named provider (rule_errors); implicit conditions are added only to
    # rules naming one preset's providers alone, so a mix must not rely on them.
    conditional = {
        p: presets_by_provider[p] for p in match.provider
        if p in presets_by_provider and presets_by_provider[p].implicit_conditions
    }
    if not conditional:
        return []
    preset_names = {presets_by_provider[p].name for p in match.provider
                    if p in presets_by_provider}
    mixed = len(preset_names) > 1 or any(p not in presets_by_provider for p in match.provider)
    untested = sorted({
        claim for preset in conditional.values() for claim in preset.implicit_conditions
        if claim not in (match.claims or {})
    })
    if mixed and untested:
        return [
            _where(index, rule, ".match.provider")
            + f": mixes {', '.join(sorted(conditional))} with other providers, so the "
            f"implicit condition on {', '.join(untested)} cannot be added; name those "
            "providers in a rule of their own (or test the claims yourself)"
        ]
    return []


def with_implicit_conditions(rule: Rule, presets_by_provider: Mapping[str, Preset]) -> Rule:
    """The rule with its preset's implicit conditions added (the same rule if none apply).

    Applies to allowing rules whose providers all belong to one preset and that do not
    test the condition's claim themselves; deny-only rules keep their breadth.
    """
    providers = rule.match.provider
    if not rule.allow or not providers or any(p not in presets_by_provider for p in providers):
        return rule
    presets = {presets_by_provider[p].name: presets_by_provider[p] for p in providers}
    if len(presets) != 1:
        return rule
    (preset,) = presets.values()
    claims = dict(rule.match.claims or {})
    added = {n: t for n, t in preset.implicit_conditions.items() if n not in claims}
    if not added:
        return rule
    match = rule.match.model_copy(update={"claims": {**claims, **added}})
    return rule.model_copy(update={"match": match})
