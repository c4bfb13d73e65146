"""Which FHIR server a call may fetch from, and the fetcher for it.

One decision shared by the service and ``cryo-cds check``, so that both fetch from the same
servers: the ``fhirServer`` URL is parsed (user info refused), matched against the allow-list
on scheme, host, port and path, and, with no allow-list while calls are authenticated, only
public addresses are reached (link-local never) unless private ones are allowed explicitly.
"""

from __future__ import annotations

import logging
from functools import partial

from .config import Config
from .deadline import CallDeadline
from .fhir_client import FhirFetcher
from .fhir_targets import AllowEntry, TargetRefused, address_refused, parse_target
from .hooks import HookRequest
from .web.logsafe import log_safe

log = logging.getLogger("cds_hooks.app")


def fetcher_for(
    config: Config,
    prefetch: dict[str, str],
    hook_request: HookRequest,
    allowed: tuple[AllowEntry, ...],
    *,
    authenticated: bool,
    deadline: CallDeadline | None = None,
) -> FhirFetcher | None:
    """A fetcher for the call's FHIR server, or None when it names none the service may call.
    With a call ``deadline``, the fetch budget is the configured one cut to fit inside it."""
    if not hook_request.fhir_server:
        return None
    try:
        target = parse_target(hook_request.fhir_server)
    except TargetRefused as exc:
        log.warning("fhirServer of hook %s refused: %s", log_safe(hook_request.hook_instance), exc)
        return None
    guard = None
    if allowed:
        if not any(entry.admits(target) for entry in allowed):
            log.warning("fhirServer of hook %s is not allow-listed; not fetching", log_safe(hook_request.hook_instance))
            return None
    elif not config.fhir_allow_private:
        guard = partial(address_refused, allow_private=not authenticated)
    return FhirFetcher(
        target.base_url,
        hook_request.patient_id,
        prefetch,
        access_token=hook_request.access_token,
        budget_s=config.fetch_budget_s if deadline is None else deadline.fetch_budget_s(config.fetch_budget_s),
        max_pages=config.fetch_max_pages,
        max_bytes=config.fetch_max_bytes,
        address_guard=guard,
    )


__all__ = ["fetcher_for"]
