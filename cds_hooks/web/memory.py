"""Handing memory back to the system after a large call.

A call on a whole-patient record parses megabytes of JSON into Python objects and frees
them when it ends, but glibc keeps the freed pages in the process heap (more so with the
``GLIBC_TUNABLES`` the README recommends for durable-rules, which raise the trim threshold
to 256 MB), so a worker stays as large as its largest call. After a call whose body was
large, ``malloc_trim(0)`` returns the free pages, once the answer is sent. Elsewhere than
glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from flask import Flask, Response, request

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


def install_memory_release(app: Flask, threshold_bytes: int = LARGE_BODY_BYTES) -> None:
    trim = _malloc_trim()
    if trim is None:
        return

    @app.after_request
    def release_after_sending(response: Response) -> Response:
        # call_on_close: once the server has sent the answer, so the client does not wait.
        if (request.content_length or 0) >= threshold_bytes:
            response.call_on_close(lambda: trim(0))
        return response

    del release_after_sending  # registered; the name is not needed
