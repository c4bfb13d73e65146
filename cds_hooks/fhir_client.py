"""Fetching what the prefetch left out from the EHR's FHIR server (CDS Hooks §prefetch:
an absent key means "fetch it yourself").

The server is the client's choice, so it is treated as hostile: one wall-clock deadline per
call covers name resolution, connect, headers and body of every request (a watchdog shuts the
socket when it passes, so neither slow headers nor a dripping body can hold a worker); bodies
are streamed against a size cap; ``next`` links are followed only on the origin of
``fhirServer``, so the access token never leaves it; redirects are not followed; the address
is checked before connecting (see :mod:`cds_hooks.fhir_targets`). The token goes only into the
Authorization header: it is never logged, stored or put in an error message. Log lines name
the prefetch key and the outcome, never the URL (it carries the patient id).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from . import metrics
from .fhir_targets import Target, TargetRefused, parse_target
from .record import PREFETCH_QUERIES, next_page_url

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_CHUNK = 65_536
_WATCHDOG_SLACK_S = 0.05  # a timer may wake a hair before the clock reads the deadline
# getaddrinfo cannot be given a timeout; it runs here and the caller stops waiting at the deadline.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fhir-dns")
AddressGuard = Callable[[str], str | None]  # IP address -> why it is refused, or None


class FetchFailed(LookupError):
    """A prefetch query could not be answered; ``outcome`` labels it for the metrics."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class FhirFetcher:
    """Runs the discovery's prefetch queries for one call against ``base_url``."""

    def __init__(
        self,
        base_url: str,
        patient_id: str,
        templates: dict[str, str],
        *,
        access_token: str | None,
        budget_s: float,
        max_pages: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        address_guard: AddressGuard | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._target = parse_target(base_url)
        self._base = self._target.base_url + "/"
        self._patient_id = patient_id
        self._templates = templates
        self._headers = {"Accept": "application/fhir+json", "Accept-Encoding": "identity", "Connection": "close"}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"
        self._max_pages = max_pages
        self._max_bytes = max_bytes
        self._guard = address_guard
        self._clock = clock
        self._deadline = clock() + budget_s

    def _remaining(self) -> float:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise FetchFailed("the time budget for FHIR server queries ran out", "timeout")
        return remaining

    def _get(self, url: str, key: str) -> dict[str, Any]:
        try:
            body = self._fetch(url)
        except FetchFailed as exc:
            metrics.FHIR_FETCHES.labels(outcome=exc.outcome).inc()
            log.info("FHIR query %s failed: %s", key, exc.outcome)
            raise
        metrics.FHIR_FETCHES.labels(outcome="ok").inc()
        return body

    def _fetch(self, url: str) -> dict[str, Any]:
        try:
            target = parse_target(url)
        except TargetRefused as exc:
            raise FetchFailed(f"a link of the FHIR server was refused: {exc}", "refused") from None
        if target.origin != self._target.origin:
            raise FetchFailed("a link leads away from the FHIR server's origin; not followed", "refused")
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sock = self._connect(target)
        watchdog = threading.Timer(max(0.0, self._deadline - self._clock()), _shut, (sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._exchange(sock, target, path)
        except (FetchFailed, OSError, http.client.HTTPException, ValueError) as exc:
            # Once the watchdog has shut the socket, any failure (even a cut-short answer
            # that looks like an empty body) is the deadline's doing.
            if self._clock() >= self._deadline - _WATCHDOG_SLACK_S:
                raise FetchFailed("the FHIR server did not answer within the time budget", "timeout") from None
            if isinstance(exc, FetchFailed):
                raise
            raise FetchFailed(f"the FHIR server connection failed ({type(exc).__name__})", "error") from None
        finally:
            watchdog.cancel()
            _shut(sock)
            sock.close()

    def _exchange(self, sock: socket.socket, target: Target, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(target.origin.host, target.origin.port)
        conn.sock = sock
        conn.request("GET", path, headers=self._headers)
        response = conn.getresponse()
        if response.status != 200:
            raise FetchFailed(f"the FHIR server answered HTTP {response.status}", "http-error")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise FetchFailed(f"the FHIR server's answer is larger than {self._max_bytes} bytes", "too-large")
        body = bytearray()
        while chunk := response.read(_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                raise FetchFailed(f"the FHIR server's answer is larger than {self._max_bytes} bytes", "too-large")
            self._remaining()
        try:
            parsed = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            raise FetchFailed("the FHIR server answered with something that is not JSON", "invalid") from None
        if not isinstance(parsed, dict):
            raise FetchFailed("the FHIR server answered with something that is not a FHIR resource", "invalid")
        return parsed

    def _connect(self, target: Target) -> socket.socket:
        addresses = self._resolve(target)
        last: OSError | None = None
        for family, address in addresses:
            if self._guard is not None and (why := self._guard(address[0])):
                raise FetchFailed(f"the FHIR server's address is refused ({why})", "refused")
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._remaining())
                sock.connect(address)
                if target.origin.scheme == "https":
                    context = ssl.create_default_context()
                    sock = context.wrap_socket(sock, server_hostname=target.origin.host)
                sock.settimeout(self._remaining())
                return sock
            except FetchFailed:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                last = exc
        if self._clock() >= self._deadline or isinstance(last, TimeoutError):
            raise FetchFailed("the FHIR server did not answer within the time budget", "timeout")
        raise FetchFailed(f"the FHIR server could not be reached ({type(last).__name__})", "unreachable")

    def _resolve(self, target: Target) -> list[tuple[socket.AddressFamily, Any]]:
        future = _RESOLVER.submit(socket.getaddrinfo, target.origin.host, target.origin.port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=self._remaining())
        except FutureTimeout:
            future.cancel()
            raise FetchFailed("the FHIR server's name did not resolve within the time budget", "timeout") from None
        except OSError:
            raise FetchFailed("the FHIR server's name does not resolve", "unreachable") from None
        return [(info[0], info[4]) for info in infos]

    def query(self, key: str) -> dict[str, Any] | None:
        """The answer to one prefetch key: a resource, or a searchset with every page merged."""
        template = self._templates.get(key) or PREFETCH_QUERIES[key][0]
        path = template.replace("{{context.patientId}}", quote(self._patient_id, safe=""))
        first = self._get(urljoin(self._base, path), key)
        return self.complete(first, key)

    def complete(self, bundle: dict[str, Any], key: str) -> dict[str, Any]:
        """Follow ``next`` links of a searchset (also one that came as prefetch), bounded."""
        if bundle.get("resourceType") != "Bundle":
            return bundle
        entries = list(bundle.get("entry") or [])
        page, pages = bundle, 1
        while True:
            next_url = next_page_url(page)
            if not next_url:
                break
            if pages >= self._max_pages:
                raise FetchFailed(f"more than {self._max_pages} pages of results", "too-large")
            page = self._get(urljoin(self._base, next_url), key)
            entries.extend(page.get("entry") or [])
            pages += 1
        merged = {k: v for k, v in bundle.items() if k not in ("link", "entry")}
        merged["entry"] = entries
        return merged


def _shut(sock: socket.socket) -> None:
    """Wake any thread blocked on ``sock``: the deadline has passed or the fetch is over."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
