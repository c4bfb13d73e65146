"""Fetching what the prefetch left out from the EHR's FHIR server (CDS Hooks §prefetch:
an absent key means "fetch it yourself").

One time budget covers every request of a call, searches follow ``next`` links up to a
page limit, and the access token goes only into the Authorization header: it is never
logged, stored or put in an error message. Log lines name the prefetch key and the HTTP
status, never the URL (it carries the patient id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import requests

from .record import PREFETCH_QUERIES, next_page_url

log = logging.getLogger(__name__)


class FhirFetcher:
    """Runs the discovery's prefetch queries for one call against ``base_url``."""

    def __init__(self, base_url: str, patient_id: str, templates: dict[str, str], *,
                 access_token: str | None, budget_s: float, max_pages: int,
                 session: requests.Session | None = None, clock: Callable[[], float] = time.monotonic):
        self._base = base_url.rstrip("/") + "/"
        self._patient_id = patient_id
        self._templates = templates
        self._headers = {"Accept": "application/fhir+json"}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"
        self._max_pages = max_pages
        self._session = session or requests.Session()
        self._clock = clock
        self._deadline = clock() + budget_s

    def _get(self, url: str, key: str) -> dict[str, Any]:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise LookupError("the time budget for FHIR server queries ran out")
        try:
            response = self._session.get(url, headers=self._headers, timeout=remaining, allow_redirects=False)
        except requests.Timeout:
            raise LookupError("the FHIR server did not answer within the time budget") from None
        except requests.RequestException as exc:
            raise LookupError(f"the FHIR server could not be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            log.info("FHIR query %s answered HTTP %d", key, response.status_code)
            raise LookupError(f"the FHIR server answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise LookupError("the FHIR server answered with something that is not JSON") from None
        if not isinstance(body, dict):
            raise LookupError("the FHIR server answered with something that is not a FHIR resource")
        return body

    def query(self, key: str) -> dict[str, Any] | None:
        """The answer to one prefetch key: a resource, or a searchset with every page merged."""
        template = self._templates.get(key) or PREFETCH_QUERIES[key][0]
        path = template.replace("{{context.patientId}}", self._patient_id)
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
                raise LookupError(f"more than {self._max_pages} pages of results")
            page = self._get(urljoin(self._base, next_url), key)
            entries.extend(page.get("entry") or [])
            pages += 1
        merged = {k: v for k, v in bundle.items() if k not in ("link", "entry")}
        merged["entry"] = entries
        return merged
