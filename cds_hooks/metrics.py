"""Prometheus metrics of the service (``prometheus-client``).

Under gunicorn each worker is its own process; with ``PROMETHEUS_MULTIPROC_DIR`` set (an empty
directory, the same for every worker) the client library writes the values to files there and
a scrape of any worker adds up all of them. Labels carry only bounded, non-patient values:
service ids, hook names, status codes, rule ids, severities, step names and outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

CALLS = Counter(
    "cryo_cds_calls_total", "Service calls answered, by service, hook and HTTP status", ["service", "hook", "status"]
)
STEP_SECONDS = Histogram(
    "cryo_cds_step_seconds",
    "Time spent in each pipeline step",
    ["step"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CARDS = Counter("cryo_cds_cards_total", "Cards returned, by rule and severity", ["rule", "severity"])
AUDIT_WRITE_FAILURES = Counter(
    "cryo_cds_audit_write_failures_total", "Decision-log writes that failed (the decision was spooled)"
)


# A labelled child is looked up under a lock at every ``labels()`` call; a call records a
# dozen of them, always the same few (label values are bounded, see above), so each is kept.
@lru_cache(maxsize=1024)
def step_seconds(step: str) -> Histogram:
    return STEP_SECONDS.labels(step=step)


@lru_cache(maxsize=1024)
def cards(rule: str, severity: str) -> Counter:
    return CARDS.labels(rule=rule, severity=severity)


@lru_cache(maxsize=1024)
def calls(service: str, hook: str, status: str) -> Counter:
    return CALLS.labels(service=service, hook=hook, status=status)


SPOOLED = Counter("cryo_cds_audit_spooled_total", "Decisions written to the local spool")
DRAINED = Counter("cryo_cds_audit_drained_total", "Spooled decisions written to the database")
FHIR_FETCHES = Counter("cryo_cds_fhir_fetches_total", "Requests to clients' FHIR servers, by outcome", ["outcome"])


class _SpoolDepth:
    """Reads the spool depth at scrape time: the directory is the truth shared by all workers."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "cryo_cds_audit_spool_depth", "Decisions waiting in the local spool", value=self._depth()
        )


def exposition(spool_depth: Callable[[], int]) -> bytes:
    """The text format of every metric: of all workers in multiprocess mode, else of this one."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_SpoolDepth(spool_depth))
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY) + generate_latest(_with(registry, _SpoolDepth(spool_depth)))


def _with(registry: CollectorRegistry, collector: _SpoolDepth) -> CollectorRegistry:
    registry.register(collector)
    return registry
