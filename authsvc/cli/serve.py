"""`authsvc serve`: the service under gunicorn, or the embedded default."""

from __future__ import annotations

import os
import secrets
from importlib import resources
from pathlib import Path

import click

from authsvc.cli.common import DEFAULT_BIND, DEMO_USER, fail, load_config, main
from authsvc.config import ENV_CONFIG, Settings, load_yaml_text, parse_settings
from authsvc.errors import KeyRingError, StoreUnavailable
from authsvc.identity.static import hash_password
from authsvc.store import open_store
from authsvc.tokens import KeyRing, generate_key


def _embedded_default() -> tuple[Settings, str]:
    """The packaged example configuration plus a demo user with a fresh password."""
    text = resources.files("authsvc").joinpath("default_config.yaml").read_text("utf-8")
    data = load_yaml_text(text, source="embedded default")
    assert isinstance(data, dict)
    password = secrets.token_urlsafe(12)
    data.setdefault("identities", {}).setdefault("static", {})["users"] = {
        DEMO_USER: {"password_hash": hash_password(password), "groups": ["demo"]}
    }
    return parse_settings(data, base_dir=Path.cwd(), source=None), password




# -- serve ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help=f"configuration file (default: ${ENV_CONFIG}, else the embedded default)",
)
@click.option("--bind", default=DEFAULT_BIND, show_default=True, help="HOST:PORT to listen on")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
def serve(config: Path | None, bind: str, workers: int, threads: int) -> None:
    """Run the token service under gunicorn."""
    from authsvc.server import Server

    password: str | None = None
    if config is None and not os.environ.get(ENV_CONFIG):
        settings, password = _embedded_default()
    else:
        settings = load_config(config)
    if settings.storage.startswith("memory://") and workers > 1:
        fail(
            "the memory:// store lives inside one process, so it cannot serve "
            f"{workers} workers: use --workers 1 (with --threads), or storage: redis://",
            2,
        )
    try:
        KeyRing.load(settings.keys.dir)
        generated = None
    except KeyRingError as exc:
        if password is None:
            fail(f"{exc} (create one with `authsvc keys generate --dir {settings.keys.dir}`)", 2)
        generated = generate_key(settings.keys.dir, settings.keys.algorithm)
    if password is not None:
        lines = [
            "no configuration given (--config or AUTHSVC_CONFIG): running the EMBEDDED "
            "DEFAULT, for trying authsvc out — not for production.",
            "  storage:  memory:// (one process; sessions are lost on restart)",
            f"  audit:    {settings.audit.file.path}",
            f"  keys:     {settings.keys.dir}"
            + (f" (generated development key {generated.id})" if generated else ""),
            f"  service:  {settings.services[0]}   realm: http://{bind}/token",
            f"  demo user: {DEMO_USER} / {password}   (a new password at every start)",
            f"  registry bundle: authsvc keys bundle --dir {settings.keys.dir}",
        ]
        click.echo("\n".join("authsvc: " + line for line in lines), err=True)
    try:
        open_store(settings.storage).ping()
    except StoreUnavailable as exc:
        fail(f"storage: {exc.message}", 2)
    Server(settings, bind=bind, workers=workers, threads=threads).run()
