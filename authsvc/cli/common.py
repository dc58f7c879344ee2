"""The `authsvc` command group and what its commands share.

Every refusal prints what was wrong on stderr and exits non-zero; no stack traces.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from authsvc.config import ENV_CONFIG, Settings, load_settings
from authsvc.errors import ConfigError

DEFAULT_BIND = "127.0.0.1:5001"
DEMO_USER = "demo"


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"authsvc: {message}", err=True)
    sys.exit(code)


def load_config(config: Path | None) -> Settings:
    path = config or (Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None)
    if path is None:
        fail(f"no configuration: give --config FILE or set {ENV_CONFIG}", 2)
    try:
        return load_settings(path)
    except ConfigError as exc:
        fail(str(exc), 2)


@click.group()
@click.version_option(package_name="authsvc")
def main() -> None:
    """authsvc: a token authorization service for container registries."""


def find_config(config: Path | None) -> Settings | None:
    """The configuration of --config or $AUTHSVC_CONFIG; None when neither is given."""
    if config is not None or os.environ.get(ENV_CONFIG):
        return load_config(config)
    return None


def keys_dir(directory: Path | None, settings: Settings | None) -> Path:
    """--dir, else the configuration's keys.dir, else ./keys."""
    if directory is not None:
        return directory
    return settings.keys.dir if settings is not None else Path("keys")


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="key directory (default: keys.dir of --config, else ./keys)",
)
config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="configuration file naming keys.dir",
)
