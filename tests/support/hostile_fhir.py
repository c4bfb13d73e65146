"""Hostile FHIR servers on loopback, shared by tests/test_hostile_fhir.py and
benchmarks/hostile.py: raw TCP servers that misbehave on purpose (slow headers, a dripping
body, a gigabyte at full speed, redirects) and record what they were sent, and a fixture FHIR
server whose search pages point ``next`` at another origin."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask

from cds_hooks.devtools.fhir_server import ResourceIndex, create_fhir_app


class HostileServer:
    """A raw TCP server: reads one request per connection, records its path and Authorization
    header, then lets ``behave(conn, stop)`` misbehave until the client hangs up or stop."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self._behave = behave
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            auth = next(
                (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("authorization:")), ""
            )
            self.requests.append((lines[0].split(" ")[1], auth))
            with contextlib.suppress(OSError):  # the client hung up: what a well-behaved fetcher does
                self._behave(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=10)


def slow_headers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.05):
        conn.sendall(b"X")  # one header byte at a time, never ending the line


def dripping_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n{")
    while not stop.wait(0.05):
        conn.sendall(b" ")


class Firehose:
    """Sends a huge chunked body as fast as the client takes it; counts what got through."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b" " * 65536
        frame = b"%x\r\n" % len(block) + block + b"\r\n"
        conn.sendall(b"1\r\n[\r\n")
        while not stop.is_set() and self.sent < 1024**3:
            conn.sendall(frame)
            self.sent += len(block)


def redirect_to(location: str) -> Callable[[socket.socket, threading.Event], None]:
    def behave(conn: socket.socket, _stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())

    return behave


def answer_with(body: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """A server that answers 200 with ``body`` at once (for answers that are hostile to parse)."""

    def behave(conn: socket.socket, _stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)

    return behave


#: Answers a JSON parser may choke on: nesting deeper than the recursion limit, and an integer
#: longer than Python's int-from-string limit (4,300 digits).
UNPARSABLE_ANSWERS = {
    "deep nesting": b"[" * 200_000 + b"]" * 200_000,
    "huge integer": b'{"resourceType": "Bundle", "total": ' + b"9" * 5000 + b"}",
}


def foreign_next_app(resources: ResourceIndex, foreign_url: str) -> Flask:
    """The fixture FHIR server over ``resources``, two results a page, whose ``next`` links
    lead to ``foreign_url``: a fetcher must neither follow them nor send its token there."""
    app = create_fhir_app(resources, page_size=2)

    @app.after_request
    def next_to_foreign(response: Any) -> Any:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            for link in body.get("link", []):
                if link.get("relation") == "next":
                    link["url"] = foreign_url + "/Observation?page=2"
            response.set_data(json.dumps(body))
        return response

    return app
