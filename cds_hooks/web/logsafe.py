"""Request text made safe for log lines: a path or message from a client must never start a
new line (a forged entry) or carry NUL or other control characters into the log."""

from __future__ import annotations

import logging
import re

MAX_LOGGED_CHARS = 300


def log_safe(text: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` with control characters, backslashes and lone surrogates escaped, cut at
    ``limit`` characters (marked with an ellipsis)."""
    value = str(text)
    cut = len(value) > limit
    value = value[:limit]
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if cut else "")


_QUERY_IN_REQUEST_LINE = re.compile(r'([A-Z]+ /[^ ?"]*)\?[^ "\x1b]*')  # colour codes may wrap it


class RequestLineFilter(logging.Filter):
    """For the development server's request log (logger ``werkzeug``): query strings are cut
    from request lines (a careless client may put a token there) and the line is escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = _QUERY_IN_REQUEST_LINE.sub(r"\1", record.getMessage())
        record.msg, record.args = log_safe(message, 4000), ()
        return True


def install_request_log_filter() -> None:
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RequestLineFilter) for f in logger.filters):
        logger.addFilter(RequestLineFilter())
