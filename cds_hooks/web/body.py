"""Reading a JSON request body within the size limit, also when it arrives chunked, and
turning every parser failure (bad UTF-8, >4,300-digit integers, NaN, deep nesting) into a 400."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply to be a CDS Hooks message") from None
    except ValueError as exc:  # integer over 4,300 digits, NaN/Infinity
        raise BadRequest(f"The request body is not acceptable JSON: {str(exc)[:120]}") from None


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
