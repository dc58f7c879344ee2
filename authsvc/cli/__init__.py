"""The ``authsvc`` command: serve, config check, policy explain, keys, users, tokens,
login, audit."""

from authsvc.cli import audit, aws, detect, inspect, keys, serve, sessions
from authsvc.cli.common import main

__all__ = ["main"]

del audit, aws, detect, inspect, keys, serve, sessions  # imported for the commands they register
