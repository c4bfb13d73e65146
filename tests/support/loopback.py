"""Real HTTP on loopback for the tests: a WSGI app served in a thread, and free ports for
server processes. No mocks: clients under test talk to these over TCP."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import requests
from werkzeug.serving import make_server


class LoopbackServer:
    """Serve a WSGI app on a free 127.0.0.1 port until `stop()` (or the end of a `with`)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A port free right now, for a server process started next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path | None = None, deadline_s: float = 60) -> None:
    """Return once ``url`` answers; fail (with the tail of ``log``) if the process exits first
    or nothing answers within the deadline, killing it then."""

    def tail() -> str:
        return log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before answering\n{tail()}")
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still starting up
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not come up in time\n{tail()}")
