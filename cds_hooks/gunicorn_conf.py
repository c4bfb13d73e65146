"""gunicorn settings for the service: ``gunicorn -c python:cds_hooks.gunicorn_conf ...``.

The access log keeps method, path, status and timing but never a query string (where a
careless client may have put a token) nor an Authorization header, and escapes control
characters so a ``%0A`` in a path cannot forge a line. With ``PROMETHEUS_MULTIPROC_DIR`` set,
a worker that exits is marked dead so its gauges stop counting (prometheus-client's recipe).

Workers: one sync worker per CPU, the app loaded once before the fork (``--preload``). On the
2-core benchmark (benchmarks/http.py, results in benchmarks/results/) that gave the best
latency and throughput and the least memory: a call is CPU-bound Python, so ``gthread``
threads wait for one GIL, add memory per thread and at c=8 sometimes left a core idle.
``WEB_CONCURRENCY`` or ``-w``/``-k`` on the command line override these defaults.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from .gc_tuning import freeze_startup_objects
from .web.logsafe import log_safe

workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
worker_class = "sync"
preload_app = True
logger_class = "cds_hooks.gunicorn_conf.SafeAccessLogger"
access_log_format = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s %(M)sms'


class SafeAccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with request text stripped of query strings and escaped."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        path = str(environ.get("RAW_URI", "")).split("?", 1)[0].split("#", 1)[0]
        atoms["r"] = f"{environ.get('REQUEST_METHOD', '-')} {path} {environ.get('SERVER_PROTOCOL', '-')}"
        atoms["q"] = "-"
        for key in list(atoms):
            if key.lower() in ("{authorization}i", "{cookie}i"):
                atoms[key] = "-"
            elif isinstance(atoms[key], str):
                atoms[key] = log_safe(atoms[key], 2000)
        return atoms


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def when_ready(_server: Any) -> None:
    """The app is loaded (``--preload``) and no worker is forked yet: freeze what it built."""
    freeze_startup_objects()
