"""The benchmark's child processes: starting and stopping them, and talking to them.

Every server runs in a session of its own (process group == its pid); ``Processes``
stops each one, newest first, with SIGTERM and then SIGKILL for its whole group.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed...)."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: TextIO | None = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: Process


class Processes:
    """Every process the benchmark starts; ``stop_all`` ends each one, newest first.

    Each runs in its own session (process group == its pid), so Ctrl-C at the terminal
    reaches only this script, which then stops them in order; a process that does not
    stop on SIGTERM within ``STOP_TIMEOUT`` gets SIGKILL for its whole group (a gunicorn
    master and its workers).
    """

    def __init__(self) -> None:
        self._running: list[Process] = []

    def start(
        self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None
    ) -> Process:
        log = log_path.open("w", encoding="utf-8")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=REPO,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        process = Process(name, popen, log_path, log)
        self._running.append(process)
        return process

    def stop(self, process: Process) -> None:
        popen = process.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  {process.name} did not stop on SIGTERM; killing it", file=sys.stderr)
        # Whatever is left of its group (workers of a killed master): SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
        if process.log is not None:
            process.log.close()
            process.log = None
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            try:
                self.stop(process)
            except Exception as exc:  # keep stopping the others
                print(f"  could not stop {process.name}: {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(process: Process, port: int, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise BenchError(
                f"{process.name} exited with status {process.popen.returncode} before it was "
                f"ready; its log ({process.log_path}) ends:\n{process.log_tail()}"
            )
        try:
            status, body = http_request(port, "/readyz", timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        time.sleep(0.2)
    raise BenchError(
        f"{process.name} not ready after {timeout:.0f} s (last: {last}); its log ends:\n"
        f"{process.log_tail()}"
    )


def run_cli(args: Sequence[str], *, stdin: str | None = None) -> str:
    """``authsvc ARGS`` (as ``python -m authsvc``, so the same interpreter as the floor)."""
    result = subprocess.run(
        [sys.executable, "-m", "authsvc", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"authsvc {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
