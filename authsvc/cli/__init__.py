"""The ``authsvc`` command: serve, config check, policy explain, keys, users, tokens, login."""

from authsvc.cli import inspect, keys, serve, sessions
from authsvc.cli.common import main

__all__ = ["main"]

del inspect, keys, serve, sessions  # imported for the commands they register on ``main``
