from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc.errors import AuthsvcError, InvalidScope
from authsvc.scopes import Scope, format_scope, merge_scopes, parse_scope, parse_scopes

component = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?", fullmatch=True)
repository_name = st.lists(component, min_size=1, max_size=4).map("/".join)
actions = st.lists(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1, unique=True)


def test_parses_repository_scope() -> None:
    assert parse_scope("repository:team/app:pull,push") == Scope(
        "repository", "team/app", ("pull", "push")
    )


def test_class_goes_into_its_own_field() -> None:
    scope = parse_scope("repository(plugin):vendor/plugin:pull")
    assert scope.type == "repository"
    assert scope.resource_class == "plugin"
    assert scope.to_access() == {
        "type": "repository",
        "name": "vendor/plugin",
        "class": "plugin",
        "actions": ["pull"],
    }


def test_name_may_hold_host_and_port() -> None:
    scope = parse_scope("repository:localhost:5000/team/app:pull")
    assert scope.name == "localhost:5000/team/app"
    assert scope.actions == ("pull",)


def test_catalog_scope() -> None:
    assert parse_scope("registry:catalog:*") == Scope("registry", "catalog", ("*",))


def test_unknown_type_and_action_parse_but_are_kept_verbatim() -> None:
    scope = parse_scope("widget:thing:frobnicate")
    assert scope == Scope("widget", "thing", ("frobnicate",))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("repository", "not of the form type:name:actions"),
        ("repository:team/app", "not of the form type:name:actions"),
        ("Repo:team/app:pull", "resource type 'Repo' is malformed"),
        ("repository(:x:pull", "resource type"),
        ("repository:Team/App:pull", "not a valid repository name"),
        ("repository:team//app:pull", "not a valid repository name"),
        ("repository:team/../app:pull", "not a valid repository name"),
        ("repository:team/app/:pull", "not a valid repository name"),
        ("repository:team/app:PULL", "action 'PULL' is malformed"),
        ("repository:team/app:pull;rm", "action 'pull;rm' is malformed"),
        ("repository:" + "a" * 600 + ":pull", "longer than 512"),
    ],
)
def test_malformed_scopes_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidScope) as info:
        parse_scope(text)
    assert reason in info.value.message


def test_repeated_and_space_separated_scopes_merge() -> None:
    scopes = parse_scopes(
        ["repository:a/b:pull repository:c:push", "repository:a/b:push", "repository:a/b:pull"]
    )
    assert scopes == [
        Scope("repository", "a/b", ("pull", "push")),
        Scope("repository", "c", ("push",)),
    ]


def test_merge_keeps_classes_apart() -> None:
    merged = merge_scopes(
        [parse_scope("repository(plugin):a:pull"), parse_scope("repository:a:push")]
    )
    assert len(merged) == 2


def test_actions_are_ordered_canonically() -> None:
    assert parse_scope("repository:a:*,delete,push,pull").actions == (
        "pull",
        "push",
        "delete",
        "*",
    )


@given(
    st.sampled_from(["repository", "registry", "repository(plugin)"]),
    repository_name,
    actions,
)
def test_format_parse_round_trip(type_part: str, name: str, acts: list[str]) -> None:
    text = f"{type_part}:{name}:{','.join(acts)}"
    scope = parse_scope(text)
    assert parse_scope(format_scope(scope)) == scope
    assert set(scope.actions) == set(acts)


@given(st.text(max_size=80))
def test_parse_raises_only_our_own_error(text: str) -> None:
    try:
        scope = parse_scope(text)
    except AuthsvcError as exc:
        assert isinstance(exc, InvalidScope)
    else:
        assert parse_scope(format_scope(scope)) == scope
