"""Request text made safe for log lines: a path or message from a client must never start a
new line (a forged entry) or carry NUL or other control characters into the log."""

from __future__ import annotations

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
