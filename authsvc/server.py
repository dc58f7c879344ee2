"""Running the app under gunicorn, with configuration reload on SIGHUP.

gunicorn's own SIGHUP handling restarts the workers, which would drop a ``memory://``
store and, with a bad file, fail to boot them. Instead the master validates the file
first: an invalid one is refused with its errors logged and nothing changes; a valid
one is passed on as SIGHUP to each worker, which swaps its configuration in place
(``Runtime.reload``) and keeps its store, caches and connections.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from authsvc.app import Runtime, create_app
from authsvc.audit.chain import ChainedAuditLog
from authsvc.config import Settings, load_settings
from authsvc.errors import ConfigError

__all__ = ["Server"]

log = logging.getLogger(__name__)


class _Arbiter(Arbiter):  # type: ignore[misc]
    def handle_hup(self) -> None:
        server: Server = self.app
        source = server.settings.source
        if source is None:
            self.log.warning("SIGHUP: the embedded default configuration has no file to re-read")
            return
        try:
            settings = load_settings(Path(source))
        except ConfigError as exc:
            self.log.error("SIGHUP: configuration refused, keeping the running one:\n%s", exc)
            return
        server.settings = settings
        self.log.info("SIGHUP: %s is valid; reloading workers in place", source)
        self.kill_workers(signal.SIGHUP)


def _reload_worker(runtime: Runtime, settings_path: str | None) -> None:
    try:
        runtime.reload()
    except ConfigError as exc:
        log.error("configuration reload refused, keeping the running one:\n%s", exc)
    except Exception:
        log.exception("configuration reload failed, keeping the running one")


def _post_worker_init(worker: Any) -> None:
    app: Flask = worker.wsgi
    runtime: Runtime = app.extensions["authsvc"]

    def on_hup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(
            target=_reload_worker, args=(runtime, runtime.settings.source), daemon=True
        ).start()

    signal.signal(signal.SIGHUP, on_hup)


def _worker_exit(server: Any, worker: Any) -> None:
    """On a worker's graceful exit, seal its audit chain with a last signed checkpoint.

    Otherwise the events since its last checkpoint (up to ``checkpoint_seconds`` of
    them) would stay covered by the hash chain alone, and ``audit verify`` would count
    them "after the last checkpoint" for ever: no later event of that writer can come.
    A killed worker cannot do this; a worker that never loaded the app has no chain."""
    app: Flask | None = getattr(worker, "wsgi", None)
    runtime: Runtime | None = app.extensions.get("authsvc") if app is not None else None
    if runtime is None or not isinstance(runtime.audit, ChainedAuditLog):
        return
    try:
        runtime.audit.close()
    except Exception:
        log.exception("this worker's audit chain was not sealed with a last checkpoint")


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, settings: Settings, *, bind: str, workers: int, threads: int, timeout: int = 30
    ) -> None:
        self.settings = settings
        self.options = {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": timeout,
            "graceful_timeout": 10,
            "keepalive": 5,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "proc_name": "authsvc",
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # control_socket_* exist from gunicorn 24 on
                self.cfg.set(key, value)

    def load(self) -> Flask:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        return create_app(self.settings)

    def run(self) -> None:
        _Arbiter(self).run()
