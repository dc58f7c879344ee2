"""Repository patterns: anchored, ``*`` within one path segment, ``**`` across segments."""

from __future__ import annotations

import re

__all__ = ["compile_pattern"]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a repository pattern to an anchored regular expression.

    Everything but the wildcards is matched literally (``.`` is a dot), and the match
    is always ``fullmatch``: ``admin`` never matches ``notadmin``.
    """
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(rf"\A{regex}\Z")
