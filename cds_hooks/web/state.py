"""The per-process state every request reads: configuration, pipeline, audit store, JWT
verifier, discovery prefetch templates, and which FHIR servers a call may name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from ..audit.store import AuditStore
from ..auth import JwtVerifier
from ..config import Config
from ..deadline import CallDeadline
from ..fhir_client import FhirFetcher
from ..fhir_source import fetcher_for
from ..fhir_targets import (
    AllowEntry,
    parse_allow_list,
)
from ..hooks import HookRequest
from ..service import Pipeline

log = logging.getLogger("cds_hooks.app")
EXTENSION_KEY = "cryo_cds"


@dataclass
class ServiceState:
    config: Config
    pipeline: Pipeline
    store: AuditStore
    verifier: JwtVerifier | None
    prefetch: dict[str, str]
    fhir_allow: tuple[AllowEntry, ...] = ()

    def __post_init__(self) -> None:
        self.fhir_allow = parse_allow_list(self.config.fhir_server_allow)
        if self.verifier is not None and not self.fhir_allow and not self.config.fhir_allow_private:
            log.warning(
                "no FHIR server allow-list (CDS_HOOKS_FHIR_SERVER_ALLOW or an issuer's "
                "fhir_servers): loopback, private and link-local FHIR servers are refused"
            )

    def _allow_list(self, claims: dict[str, Any] | None) -> tuple[AllowEntry, ...]:
        """The calling client's own fhir_servers when its issuer names some, else the global list."""
        if self.verifier is not None and claims and isinstance(claims.get("iss"), str):
            issuer = self.verifier.issuer(claims["iss"])
            if issuer is not None and issuer.fhir_servers:
                return parse_allow_list(issuer.fhir_servers)
        return self.fhir_allow

    def record_source(
        self, hook_request: HookRequest, claims: dict[str, Any] | None = None, deadline: CallDeadline | None = None
    ) -> FhirFetcher | None:
        """A fetcher for the call's FHIR server, if the client named one the service may call;
        its budget is cut to fit the call's ``deadline``."""
        return fetcher_for(
            self.config,
            self.prefetch,
            hook_request,
            self._allow_list(claims),
            authenticated=self.verifier is not None,
            deadline=deadline,
        )


def install_state(app: Flask, state: ServiceState) -> None:
    app.extensions[EXTENSION_KEY] = state


def current_state() -> ServiceState:
    state: ServiceState = current_app.extensions[EXTENSION_KEY]
    return state
