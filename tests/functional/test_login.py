"""`authsvc login oidc`: its refusals name the problem and never print a token."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from authsvc.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["login", "oidc", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "give --registry, or --realm and --service"),
        (["--realm", "http://registry.example/token", "--service", "r", "--source", "env:X"],
         {"X": "t"}, "realm 'http://registry.example/token' must be https://"),
        (["--realm", "https://r.example/token", "--service", "r", "--source", "github",
          "--audience", "a"],
         {"ACTIONS_ID_TOKEN_REQUEST_URL": "", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ""},
         "give the job `permissions: id-token: write`"),
        (["--realm", "https://r.example/token", "--service", "r", "--source", "github"],
         {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://gh.example/t",
          "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "secret-bearer"},
         "--audience is required with --source github"),
        (["--realm", "https://r.example/token", "--service", "r", "--source", "env:EMPTY"],
         {"EMPTY": " "}, "the environment variable EMPTY is empty or not set"),
        (["--realm", "https://r.example/token", "--service", "r", "--source",
          "file:/nonexistent/token"], {}, "cannot read the token file /nonexistent/token"),
        (["--realm", "https://r.example/token", "--service", "r", "--source", "vault"], {},
         "unknown --source 'vault'"),
        (["--registry", "ftp://r.example"], {}, "registry 'ftp://r.example' must be https://"),
        (["--registry", "http://127.0.0.1:1"], {}, "http://127.0.0.1:1/v2/"),
    ],
)
def test_refusals(args: list[str], env: dict[str, str], message: str) -> None:
    code, out, err = run(*args, env=env)
    assert code == 1
    assert message in err
    assert out == ""
    assert "secret-bearer" not in err
