"""The `authsvc` command line: every refusal names the problem and exits non-zero."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import yaml
from click.testing import CliRunner

from authsvc.cli import main
from authsvc.tokens import KeyRing
from tests.conftest import base_config


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_config_check_accepts_a_valid_file(tmp_path: Path, keys_dir: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(base_config(keys_dir)))
    code, out, _ = run("config", "check", str(path))
    assert code == 0
    assert "valid (4 rules, 2 services" in out


def test_config_check_prints_every_problem_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services: [r]\ntoken_ttl: '300'\nrules:\n"
        "  - id: a\n    match: {account: x}\n    allow: [{repository: a, actions: [pul]}]\n"
    )
    code, _, err = run("config", "check", str(path))
    assert code == 1
    assert "token_ttl: Input should be a valid integer" in err
    assert "rules[0] (id 'a').allow[0].actions[0]: unknown action 'pul'" in err
    assert "Traceback" not in err


def test_config_check_prints_lint_warnings_and_passes(tmp_path: Path, keys_dir: Path) -> None:
    config = base_config(keys_dir)
    path = tmp_path / "warn.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run("config", "check", str(path))
    assert code == 0
    assert "warning: rules[2] (id 'admin').allow[0]: grants every action on every repository" in (
        err
    )


def test_config_check_refuses_lint_errors(tmp_path: Path, keys_dir: Path) -> None:
    config = base_config(keys_dir)
    config["rules"][0]["match"] = {"provider": "static", "claims": {"ref": "main"}}
    path = tmp_path / "lint.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run("config", "check", str(path))
    assert code == 1
    assert (
        "rules[0] (id 'dev-team').match.claims.ref: provider static does not issue claim 'ref'"
        in err
    )


def test_config_check_of_a_missing_file(tmp_path: Path) -> None:
    code, _, err = run("config", "check", str(tmp_path / "none.yaml"))
    assert code == 1
    assert "cannot read the configuration" in err


def test_users_hash_reads_stdin(tmp_path: Path) -> None:
    code, out, _ = run("users", "hash", "--cost", "10", stdin="s3cret\n")
    assert code == 0
    digest = out.strip()
    assert digest.startswith("$2b$10$")
    assert bcrypt.checkpw(b"s3cret", digest.encode())


def test_users_hash_refuses_empty_and_overlong_passwords() -> None:
    code, _, err = run("users", "hash", stdin="\n")
    assert code == 1
    assert "no password on standard input" in err
    code, _, err = run("users", "hash", "--cost", "10", stdin="x" * 80 + "\n")
    assert code == 1
    assert "longer than 72 bytes" in err


def test_key_lifecycle(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    code, out, _ = run("keys", "generate", "--dir", str(ring))
    assert code == 0
    first = out.split()[0]
    assert " active " in out
    code, out, err = run("keys", "generate", "--dir", str(ring), "--algorithm", "RS256")
    assert code == 0
    staged = out.split()[0]
    assert " staged " in out
    assert "authsvc keys rotate" in err
    bundle = run("keys", "bundle", "--dir", str(ring))[1]
    assert bundle.count("BEGIN CERTIFICATE") == 2
    assert KeyRing.load(ring).signing_key.id == first
    code, out, _ = run("keys", "rotate", "--dir", str(ring))
    assert code == 0
    assert out.split()[0] == staged
    assert KeyRing.load(ring).signing_key.id == staged
    code, _, err = run("keys", "retire", "--dir", str(ring), staged)
    assert code == 1
    assert "rotate" in err
    code, out, _ = run("keys", "retire", "--dir", str(ring), first)
    assert code == 0
    assert run("keys", "bundle", "--dir", str(ring))[1].count("BEGIN CERTIFICATE") == 1
    listing = run("keys", "list", "--dir", str(ring))[1]
    assert f"{first}\tES256\tretired" in listing
    assert f"{staged}\tRS256\tactive" in listing


def test_keys_bundle_of_a_missing_directory(tmp_path: Path) -> None:
    code, _, err = run("keys", "bundle", "--dir", str(tmp_path / "absent"))
    assert code == 1
    assert str(tmp_path / "absent") in err


def test_keys_use_the_config_directory(tmp_path: Path, keys_dir: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(keys_dir)))
    code, out, _ = run("keys", "bundle", "--config", str(path))
    assert code == 0
    assert out == KeyRing.load(keys_dir).bundle_pem()
