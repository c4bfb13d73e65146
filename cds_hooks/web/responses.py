"""JSON answers that always encode: text from the request may hold lone surrogates, which
UTF-8 cannot carry, so those fall back to JSON escapes instead of failing after the fact."""

from __future__ import annotations

import json
from typing import Any

from flask import Response


def json_bytes(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json_bytes(body), status=status, mimetype="application/json")
