"""authsvc with auditing switched off, for the benchmark's no-audit baseline only.

    python -m bench.noaudit serve --config CFG --bind ... --workers N --threads 8

The same command line as ``python -m authsvc``, but ``authsvc.app.build_audit`` is
replaced, before the app exists, by one that returns a log whose ``record`` does
nothing (no hash chain, no checkpoint signature, no write, no fsync). The patch is made
in the gunicorn master, so every forked worker (and a reload) has it. The service still
builds each event and calls ``record``: what is left out is the audit pipeline itself.

The service has no such setting on purpose (no decision goes unrecorded), and
``audit.file.path: /dev/null`` is not one either: the hash chain would still run, its
lock file would be created as ``/dev/null.lock``, and with ``fsync: true`` every request
would be denied (503), ``fdatasync`` on /dev/null failing with EINVAL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NullAuditLog:
    """Accepts every event and keeps none."""

    def record(self, event: Mapping[str, Any]) -> None:
        return None


def _no_audit(*args: Any, **kwargs: Any) -> tuple[NullAuditLog, None]:
    return NullAuditLog(), None


def patch() -> None:
    import authsvc.app

    if not callable(getattr(authsvc.app, "build_audit", None)):
        raise SystemExit("bench.noaudit: authsvc.app has no build_audit to replace")
    setattr(authsvc.app, "build_audit", _no_audit)  # noqa: B010 - not re-exported


if __name__ == "__main__":
    patch()
    from authsvc.cli import main

    main()
