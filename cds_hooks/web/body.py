"""Reading a JSON request body within the size limit, also when it arrives chunked, and
turning every parser failure (bad UTF-8, >4,300-digit integers, NaN, Infinity, numbers too
large for a double, deep nesting) into a 400.

orjson parses well-formed bodies about twice as fast as the standard library. It differs on
a few inputs, and for those the standard library's reading is kept: a body orjson refuses is
parsed again by ``json`` (so lone surrogates are read as before and every refusal gets the
same clear message), and a body holding an integer of 20 digits or more goes to ``json``
straight away, because orjson turns integers beyond 64 bits into floats and loses digits.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from flask import current_app, request

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

LONG_INTEGER = b"0" * 20  # 20 digits may exceed 64 bits
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # every digit -> "0", the rest -> " "


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def _may_hold_long_integer(raw: bytes) -> bool:
    """True if a run of 20 or more digits occurs anywhere (cheap: one translate, one find)."""
    return LONG_INTEGER in raw.translate(_DIGITS_AS_ZERO)


def _parse_with_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply to be a CDS Hooks message") from None
    except ValueError as exc:  # integer over 4,300 digits, NaN/Infinity, 1e400
        raise BadRequest(f"The request body is not acceptable JSON: {str(exc)[:120]}") from None


def parse_json(raw: bytes) -> Any:
    """The parsed body; BadRequest (400) with a clear reason when it is not acceptable JSON."""
    if not _may_hold_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library says why, or reads what orjson will not (lone surrogates)
    return _parse_with_json(raw)


def json_body() -> Any:
    """The parsed body of the current request (application/json or +json)."""
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"Send the request as application/json, not {request.mimetype or 'no content type'}")
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    raw = request.get_data(cache=False)
    # A chunked body is cut at the limit by the stream wrapper; one that reaches it is too large.
    if limit is not None and request.content_length is None and len(raw) >= limit:
        raise PayloadTooLarge(f"The request body is larger than the configured limit of {limit} bytes")
    return parse_json(raw)
