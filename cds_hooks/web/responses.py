"""JSON answers that always encode. orjson writes them (several times faster than ``json``
on large card lists); text from the request may hold lone surrogates, which UTF-8 cannot
carry and orjson refuses, so those answers fall back to ``json`` with JSON escapes instead
of failing after the fact. A non-finite float is written as ``null`` (never the invalid
``NaN``); a value orjson cannot write (a non-string key) takes the ``json`` path as before."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from flask import Response


def _finite(value: Any) -> Any:
    """The value with NaN/Infinity replaced by None, as orjson writes them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_bytes(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except (orjson.JSONEncodeError, TypeError):
        pass
    safe = _finite(body)
    try:
        return json.dumps(safe, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(safe, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json_bytes(body), status=status, mimetype="application/json")
