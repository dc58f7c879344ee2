"""The ``authsvc`` command: serve, config check, policy explain, keys, users, tokens, login."""

from authsvc.cli import aws, inspect, keys, serve, sessions
from authsvc.cli.common import main

__all__ = ["main"]

del aws, inspect, keys, serve, sessions  # imported for the commands they register on ``main``
