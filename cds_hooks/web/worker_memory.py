"""Replacing a gunicorn worker whose memory has grown, once it has answered.

Python keeps the memory of a large call: objects that outlive it (memos, interned keys) are
scattered over the pools its JSON filled, so those pools cannot be handed back, and
``malloc_trim`` (see `memory`) returns only what glibc holds free. A worker that served one
whole-patient record stays tens of megabytes larger for the rest of its life. Under
gunicorn the cure is cheap: a worker whose private (anonymous) memory has grown by more than
``CDS_HOOKS_WORKER_MAX_GROWTH_MB`` since it was forked asks to stop after the answer it is
sending, and the arbiter forks a fresh one from the preloaded app (a few milliseconds, no
import). The request that crossed the limit is answered and recorded as usual; a graceful
stop (SIGTERM) lets the worker finish it first.

Only gunicorn replaces its workers, so elsewhere (``cryo-cds serve``, tests) nothing is
done; and only its sync workers, which answer one request per connection: a threaded worker
stopping would close its clients' idle keep-alive connections, and a client that sent its
next request on one at that moment would lose it. Linux only: the growth is read from
``/proc/self/statm``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from ..forking import after_fork_in_child

log = logging.getLogger(__name__)

_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def anonymous_bytes() -> int | None:
    """Resident memory of this process that is its own (resident minus file-backed and
    shared pages); None where /proc is not there."""
    try:
        fields = os.pread(_statm_fd(), 256, 0).split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


_open_statm: tuple[int, int] | None = None  # (pid, descriptor): read at every answer, opened once per process


def _statm_fd() -> int:
    """This process's statm, kept open: opening it at every answer cost eight times the read.
    "/proc/self" is resolved when it is opened, so a forked child opens its own."""
    global _open_statm
    pid = os.getpid()
    if _open_statm is None or _open_statm[0] != pid:
        if _open_statm is not None:
            with contextlib.suppress(OSError):
                os.close(_open_statm[1])  # the parent's, inherited: this process's copy only
        _open_statm = (pid, os.open(_STATM, os.O_RDONLY | os.O_CLOEXEC))
    return _open_statm[1]


class GrowthWatch:
    """Remembers the memory a process had when it started serving and says when it has
    grown past the limit. A forked child starts its own count (its first look)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._pid = 0
        self._baseline = 0
        self._retiring = False
        self._start_count()
        # The count must start at the fork, not at the first call, which may be the large one.
        after_fork_in_child(self, GrowthWatch._start_count)

    def _start_count(self) -> None:
        self._pid = os.getpid()
        self._baseline = anonymous_bytes() or 0
        self._retiring = False

    def grown_past_limit(self) -> int | None:
        """The growth in bytes, the first time it passes the limit in this process; else None."""
        if self._retiring:
            return None
        if self._pid != os.getpid():  # forked without the hook (should not happen)
            self._start_count()
        now = anonymous_bytes()
        if now is None or not self._baseline or now - self._baseline <= self.limit_bytes:
            return None
        self._retiring = True
        return now - self._baseline


class WorkerReplacement:
    """Retires a gunicorn sync worker, after an answer, once it has grown past the limit
    (0: never). `memory.install_memory_release` asks it after handing memory back, so that
    what a large call freed is not counted as growth."""

    def __init__(self, max_growth_mb: float) -> None:
        enabled = max_growth_mb > 0 and anonymous_bytes() is not None
        self._watch = GrowthWatch(int(max_growth_mb * 1024 * 1024)) if enabled else None

    def applies(self, environ: Mapping[str, Any]) -> bool:
        """True under a gunicorn sync worker (one request per connection), when enabled."""
        return (
            self._watch is not None
            and str(environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn/")
            and not environ.get("wsgi.multithread")
        )

    def after_answer(self) -> None:
        if self._watch is None:
            return
        grown = self._watch.grown_past_limit()
        if grown is None:
            return
        # A warning so that it shows at gunicorn's default level: frequent replacements mean
        # the limit is below what ordinary calls need.
        log.warning(
            "worker %d grew by %.0f MB since it started (CDS_HOOKS_WORKER_MAX_GROWTH_MB=%g): "
            "replaced after this answer",
            os.getpid(),
            grown / 1024 / 1024,
            self._watch.limit_bytes / 1024 / 1024,
        )
        # gunicorn's graceful stop: the worker ends its loop after this request, the arbiter
        # notices it exited and forks a replacement from the preloaded app.
        os.kill(os.getpid(), signal.SIGTERM)
