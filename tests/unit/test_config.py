from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authsvc.config import load_settings, parse_settings
from authsvc.errors import ConfigError
from authsvc.identity.static import hash_password

HASH = hash_password("pw", cost=4)


def problems(data: object, tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, base_dir=tmp_path, **{"environ": {}, **kwargs})
    return info.value.problems


def config(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"services": ["registry.test"]}
    data.update(extra)
    return data


def test_minimal_config_has_secure_defaults(tmp_path: Path) -> None:
    settings = parse_settings(config(), base_dir=tmp_path, environ={})
    assert settings.rules == ()
    assert settings.storage == "memory://"
    assert settings.token_ttl == 300
    assert settings.keys.algorithm == "ES256"
    assert settings.keys.dir == tmp_path / "keys"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "services: Field required"),
        (config(services=[]), "services: must not be empty"),
        (config(token_ttl="300"), "token_ttl: Input should be a valid integer"),
        (config(token_ttl=10), "token_ttl: Input should be greater than or equal to 60"),
        (config(tokn_ttl=300), "tokn_ttl: unknown setting"),
        (config(storage="mysql://x"), "storage: unsupported storage URL 'mysql://x'"),
        (config(keys={"algorithm": "HS256"}), "keys.algorithm: Input should be"),
        (config(keys={"dir": "k", "algo": "ES256"}), "keys.algo: unknown setting"),
        (
            config(anomaly={"consumer_state": "disk"}),
            "anomaly.consumer_state: Input should be 'memory' or 'redis'",
        ),
        (
            config(anomaly={"consumer_lease": 1}),
            "anomaly.consumer_lease: Input should be greater than or equal to 2",
        ),
        (
            config(identities={"static": {"users": {"alice": {"password_hash": "plain"}}}}),
            "identities.static.users.alice.password_hash: not a bcrypt hash",
        ),
        (
            config(
                identities={"static": {"users": {"alice": {"password_hash": HASH, "group": ["x"]}}}}
            ),
            "identities.static.users.alice.group: unknown setting",
        ),
        (
            config(identities={"oidc": {"github": {"preset": "github-actions"}}}),
            "identities.oidc.github.audience: Field required",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "gh": {"preset": "github-actions", "audience": "https://github.com/acme"}
                    }
                }
            ),
            "identities.oidc.gh.audience: audience 'https://github.com/acme' is a platform's "
            "shared default",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "aws": {
                            "preset": "generic",
                            "issuer": "https://i.example",
                            "audience": "sts.amazonaws.com",
                        }
                    }
                }
            ),
            "shared default",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "az": {
                            "preset": "azure",
                            "issuer": "https://i.example",
                            "audience": "api://AzureADTokenExchange",
                        }
                    }
                }
            ),
            "shared default",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "k8s": {
                            "preset": "kubernetes",
                            "issuer": "https://k8s.example",
                            "audience": "https://k8s.example",
                        }
                    }
                }
            ),
            "identities.oidc.k8s.audience: must not be the issuer itself",
        ),
        (
            config(
                identities={"oidc": {"x": {"issuer": "http://idp.example", "audience": "registry"}}}
            ),
            "identities.oidc.x.issuer: issuer 'http://idp.example' must be https://",
        ),
        (
            config(identities={"oidc": {"x": {"preset": "jenkins", "audience": "registry"}}}),
            "identities.oidc.x.preset: Input should be",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "x": {
                            "issuer": "https://i.example",
                            "audience": "r",
                            "algorithms": ["HS256"],
                        }
                    }
                }
            ),
            "identities.oidc.x.algorithms[0]: Input should be",
        ),
        (
            config(
                identities={
                    "oidc": {
                        "x": {
                            "issuer": "https://i.example",
                            "audience": "r",
                            "algorithms": ["none"],
                        }
                    }
                }
            ),
            "identities.oidc.x.algorithms[0]: Input should be",
        ),
        (
            config(
                identities={"oidc": {"static": {"issuer": "https://i.example", "audience": "r"}}}
            ),
            "identities.oidc: issuer name 'static'",
        ),
        (
            config(identities={"oidc": {"k8s": {"preset": "kubernetes", "audience": "r"}}}),
            "identities.oidc.k8s.issuer:",
        ),
        (
            config(rules=[{"id": "r", "allow": [{"repository": "a", "actions": ["pull"]}]}]),
            "rules[0] (id 'r').match: Field required",
        ),
        (
            config(
                rules=[
                    {"id": "r", "match": {}, "allow": [{"repository": "a", "actions": ["pull"]}]}
                ]
            ),
            "rules[0] (id 'r').match: match names no condition",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"acount": "a"},
                        "allow": [{"repository": "a", "actions": ["pull"]}],
                    }
                ]
            ),
            "rules[0] (id 'r').match.acount: unknown setting",
        ),
        (
            config(rules=[{"id": "r", "match": {"account": "a"}}]),
            "rules[0] (id 'r'): rule has neither allow nor deny entries",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [
                            {"repository": "a", "actions": ["pull"]},
                            {"repository": "b", "actions": ["pul"]},
                        ],
                    }
                ]
            ),
            "rules[0] (id 'r').allow[1].actions[0]: unknown action 'pul'",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "a", "actions": []}],
                    }
                ]
            ),
            "rules[0] (id 'r').allow[0].actions: must not be empty",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "Team/*", "actions": ["pull"]}],
                    }
                ]
            ),
            "rules[0] (id 'r').allow[0].repository: pattern 'Team/*' can never match: "
            "repository names are lowercase",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "team//x", "actions": ["pull"]}],
                    }
                ]
            ),
            "empty path segment",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "team/a b", "actions": ["pull"]}],
                    }
                ]
            ),
            "characters ' ' never occur in repository names",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "team/-x", "actions": ["pull"]}],
                    }
                ]
            ),
            "'-x' is not a valid repository path component",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"registry": "catalog", "actions": ["pull"]}],
                    }
                ]
            ),
            "rules[0] (id 'r').allow[0]: the registry catalog is granted only as actions: ['*']",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "a", "registry": "catalog", "actions": ["*"]}],
                    }
                ]
            ),
            "name exactly one of repository or registry",
        ),
        (
            config(
                rules=[
                    {
                        "id": "r",
                        "match": {"account": "a"},
                        "allow": [{"repository": "a", "actions": ["pull"]}],
                    },
                    {
                        "id": "r",
                        "match": {"account": "b"},
                        "allow": [{"repository": "a", "actions": ["pull"]}],
                    },
                ]
            ),
            "rule id 'r' is used twice",
        ),
        ([1, 2], "the configuration must be a mapping"),
        (config(realm='say "hi"'), "realm: realm must be non-empty printable text"),
        (config(realm="a\nb"), "realm: realm must be non-empty printable text"),
    ],
)
def test_each_problem_names_its_field(data: object, expected: str, tmp_path: Path) -> None:
    found = problems(data, tmp_path)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(config(token_ttl="x", bogus=1, storage="ftp://"), tmp_path)
    assert len(found) == 3


def test_environment_overrides(tmp_path: Path) -> None:
    settings = parse_settings(
        config(),
        base_dir=tmp_path,
        environ={"AUTHSVC_STORAGE": "redis://127.0.0.1:6379/3", "AUTHSVC_ISSUER": "me"},
    )
    assert settings.storage == "redis://127.0.0.1:6379/3"
    assert settings.issuer == "me"


def test_environment_override_is_validated_too(tmp_path: Path) -> None:
    found = problems(config(), tmp_path, environ={"AUTHSVC_STORAGE": "nope"})
    assert found == ["storage: unsupported storage URL 'nope': use memory:// or redis://"]


def test_load_reads_yaml_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "users.htpasswd").write_text(f"# comment\ncarol:{HASH}\n")
    path = tmp_path / "authsvc.yaml"
    path.write_text(
        "services: [registry.test]\nkeys: {dir: mykeys}\n"
        "identities: {static: {htpasswd: users.htpasswd}}\n"
    )
    settings = load_settings(path, environ={})
    assert settings.keys.dir == tmp_path / "mykeys"
    assert settings.htpasswd_users == {"carol": HASH}
    assert settings.source == str(path)
    assert len(settings.digest) == 64


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("services: [a]\ntoken_ttl: 60\ntoken_ttl: 600\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.problems == ["line 3: key 'token_ttl' is given twice"]


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("services: [a\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "not valid YAML" in info.value.problems[0]


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.yaml", environ={})
    assert "cannot read the configuration" in info.value.problems[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("dave:{SHA}abc\n", "user 'dave' has no bcrypt hash"),
        ("no-colon-here\n", "not a 'user:bcrypt-hash' line"),
        (f"erin:{HASH}\nerin:{HASH}\n", "user 'erin' is listed twice"),
    ],
)
def test_htpasswd_problems_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "h").write_text(content)
    found = problems(config(identities={"static": {"htpasswd": "h"}}), tmp_path)
    assert any(expected in p and "identities.static.htpasswd" in p for p in found), found


def test_htpasswd_user_may_not_shadow_a_config_user(tmp_path: Path) -> None:
    (tmp_path / "h").write_text(f"alice:{HASH}\n")
    found = problems(
        config(
            identities={"static": {"htpasswd": "h", "users": {"alice": {"password_hash": HASH}}}}
        ),
        tmp_path,
    )
    assert found == [
        "identities.static.htpasswd: user 'alice' is also defined in identities.static.users"
    ]
