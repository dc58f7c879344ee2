"""bench/instructions.py's counted work: the anonymous pull, answered 200, audited as the
configuration says (the child process callgrind runs does exactly this)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fixture import make_fixture
from bench.instructions import CASES, serve_requests


@pytest.mark.parametrize("case", list(CASES))
def test_the_counted_requests_are_tokens_audited_as_configured(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import authsvc.app
    from authsvc.audit.build import build_audit

    # bench.noaudit patches build_audit for good (as in a server's master): undo it here
    monkeypatch.setattr(authsvc.app, "build_audit", build_audit)
    fixture = make_fixture(tmp_path)
    config = fixture.config("memory", "memory://", cache_ttl=60, audit=CASES[case],
                            name=f"config-{case}")
    serve_requests(config, 7, no_audit=CASES[case] is None)
    trail = tmp_path / "audit" / "audit.jsonl"
    lines = trail.read_text().splitlines() if trail.exists() else []
    tokens = [e for e in map(json.loads, lines) if e["type"] == "token.issue"]
    if case == "h-audit-file":
        assert len(tokens) == 7
        assert {e["outcome"] for e in tokens} == {"success"}
        assert {e["client"]["user_agent"] for e in tokens} == {"bench/instructions"}
    else:  # no audit, or the memory store's in-process stream: nothing in the file
        assert tokens == []


def test_a_refused_request_stops_the_count(tmp_path: Path) -> None:
    fixture = make_fixture(tmp_path)
    config = fixture.config("memory", "memory://", cache_ttl=60, name="config")
    text = config.read_text()
    config.write_text(text.replace("- registry.bench", "- registry.other"))  # 400: unknown
    assert "- registry.other" in config.read_text()
    with pytest.raises(SystemExit, match="did not answer 200"):
        serve_requests(config, 3, no_audit=False)
