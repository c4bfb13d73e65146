"""Real HTTP on loopback for the tests: a WSGI app served in a thread, and free ports for
server processes. No mocks: clients under test talk to these over TCP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, Self

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
