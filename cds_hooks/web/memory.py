"""Handing memory back to the system once large calls stop coming.

A call on a whole-patient record parses megabytes of JSON into Python objects and frees
them when it ends, but glibc keeps the freed pages in the process heap (more so with the
``GLIBC_TUNABLES`` the README recommends for durable-rules, which raise the trim threshold
to 256 MB), so a worker stays as large as its largest call. Releasing drops the plain
reader's memo of text values and the remembered drug classes (their strings, scattered over
the pools the record filled, would keep Python from freeing them) and calls
``malloc_trim(0)`` to return the free pages; elsewhere than glibc only the memos are dropped.

Releasing after every large call made the next one slower: it faulted the same pages back
in, a fifth to a quarter of a 2,000- to 5,000-resource call (benchmarks/http.py's growth
series). So a worker that has answered a large call keeps that memory while large calls keep
coming, and releases it after the first answer to a smaller call, or once no request has
started for ``CDS_HOOKS_MEMORY_RELEASE_IDLE_S`` (0: it releases after every large call),
whichever is first. Either way it happens after an answer
has been sent, so no client waits for it. Only then does the worker replacement look at the
worker's growth: memory kept on purpose is not growth.

Two seconds: when two workers share a series of large calls, one of them can sit out several
calls in a row, each 0.1-0.3 s at 5,000 resources; at one second, with three servers taking
turns, workers released in the middle of the series and lost most of the gain. A longer wait
would keep the memory of a worker that has gone quiet for longer. Allocators that keep freed
memory for reuse wait about as long (jemalloc's default decay is ten seconds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

from flask import Flask, Response, request

from ..config import DEFAULT_MEMORY_RELEASE_IDLE_S
from ..facts.medications import forget_drug_classes
from ..forking import after_fork_in_child
from ..plainread import forget_known_text
from .worker_memory import WorkerReplacement

LARGE_BODY_BYTES = 1_000_000

Trim = Callable[[int], int]


def _malloc_trim() -> Trim | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    return trim


class MemoryRelease:
    """Decides, after each answer, whether to hand memory back now, later (a timer, if the
    worker stays idle) or not at all; then lets the worker replacement check the growth."""

    def __init__(self, trim: Trim | None, idle_s: float = DEFAULT_MEMORY_RELEASE_IDLE_S) -> None:
        self._trim = trim
        self._idle_s = idle_s
        self._reset()
        # In a forked child the parent's timer does not exist: start afresh.
        after_fork_in_child(self, MemoryRelease._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._owed = False  # a large call's memory is being kept
        self._replacement_owed: WorkerReplacement | None = None  # its growth check, put off with it
        self._started = 0  # requests begun; an idle release is void if one began since it was set
        self._timer: threading.Timer | None = None

    def request_started(self) -> None:
        with self._lock:
            self._started += 1

    def answer_sent(self, large: bool, replacement: WorkerReplacement | None) -> None:
        """Called once an answer has gone out (the response's close)."""
        with self._lock:
            if large and self._idle_s > 0:
                self._owed = True
                self._replacement_owed = replacement
                self._set_timer(self._started)
                return
            release, self._owed = large or self._owed, False  # large here: nothing is kept (idle_s 0)
            owed_check, self._replacement_owed = self._replacement_owed, None
            self._cancel_timer()
        check = replacement or owed_check
        if release:
            self._release(check)
        elif check is not None:
            check.after_answer()

    def _set_timer(self, started: int) -> None:
        self._cancel_timer()
        timer = threading.Timer(self._idle_s, self._release_if_idle, args=(started,))
        timer.daemon = True  # never holds a stopping worker back
        timer.start()
        self._timer = timer

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release_if_idle(self, started: int) -> None:
        with self._lock:
            if not self._owed or self._started != started:
                return  # released already, or a request began: its answer decides
            self._owed = False
            replacement, self._replacement_owed = self._replacement_owed, None
            self._timer = None
        self._release(replacement)

    def _release(self, check: WorkerReplacement | None) -> None:
        """Hand the memory back, then let ``check`` look at the growth: what was handed back is
        not growth."""
        forget_known_text()  # first: its strings are what pin the pools the record filled
        forget_drug_classes()
        if self._trim is not None:
            self._trim(0)
        if check is not None:
            check.after_answer()


def install_memory_release(
    app: Flask,
    threshold_bytes: int = LARGE_BODY_BYTES,
    replacement: WorkerReplacement | None = None,
    idle_s: float = DEFAULT_MEMORY_RELEASE_IDLE_S,
) -> MemoryRelease:
    """Counts requests as they begin and, once each answer is sent, lets `MemoryRelease`
    decide; ``replacement`` may then retire the worker if it is still grown past its limit."""
    release = MemoryRelease(_malloc_trim(), idle_s)

    @app.before_request
    def count_request() -> None:
        release.request_started()

    @app.after_request
    def release_after_sending(response: Response) -> Response:
        # call_on_close: once the server has sent the answer, so the client does not wait.
        large = (request.content_length or 0) >= threshold_bytes
        replace = replacement if replacement is not None and replacement.applies(request.environ) else None
        response.call_on_close(lambda: release.answer_sent(large, replace))
        return response

    del count_request, release_after_sending  # registered; the names are not needed
    return release
