"""Handing memory back to the system after a large call.

A call on a whole-patient record parses megabytes of JSON into Python objects and frees
them when it ends, but glibc keeps the freed pages in the process heap (more so with the
``GLIBC_TUNABLES`` the README recommends for durable-rules, which raise the trim threshold
to 256 MB), so a worker stays as large as its largest call. After a call whose body was
large, the plain reader's memo of text values and the remembered drug classes are dropped
(their strings, scattered over the pools the record filled, would keep Python from freeing
them) and ``malloc_trim(0)`` returns the free pages, once the answer is sent. Elsewhere than
glibc only the memos are dropped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import partial

from flask import Flask, Response, request

from ..facts.medications import forget_drug_classes
from ..plainread import forget_known_text
from .worker_memory import WorkerReplacement

LARGE_BODY_BYTES = 1_000_000


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    return trim


def install_memory_release(
    app: Flask, threshold_bytes: int = LARGE_BODY_BYTES, replacement: WorkerReplacement | None = None
) -> None:
    """After each answer is sent: hand memory back if the body was large, then let
    ``replacement`` retire the worker if it is still grown past its limit."""
    trim = _malloc_trim()

    @app.after_request
    def release_after_sending(response: Response) -> Response:
        # call_on_close: once the server has sent the answer, so the client does not wait.
        large = (request.content_length or 0) >= threshold_bytes
        replace = replacement if replacement is not None and replacement.applies(request.environ) else None
        if large or replace is not None:
            response.call_on_close(partial(_after_answer, trim, large, replace))
        return response

    del release_after_sending  # registered; the name is not needed


def _after_answer(trim: Callable[[int], int] | None, large: bool, replacement: WorkerReplacement | None) -> None:
    if large:
        forget_known_text()  # first: its strings are what pin the pools the record filled
        forget_drug_classes()
        if trim is not None:
            trim(0)
    if replacement is not None:  # last: what was just handed back is not growth
        replacement.after_answer()
