"""Safe rendering of card text: Markdown with raw HTML escaped (markdown-it-py in CommonMark
mode with HTML off; it also refuses javascript:, vbscript: and data: links)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from markupsafe import Markup

if TYPE_CHECKING:
    from markdown_it import MarkdownIt


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt  # imported on the first card rendered: serving workers never load it

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: Any) -> Markup:
    """Card detail Markdown as HTML; any HTML in the text comes out escaped."""
    return Markup(_parser().render(str(text or "")))


def safe_url(url: Any) -> str | None:
    """The URL when it is http(s) (card links may be anything a client sends)."""
    if not isinstance(url, str):
        return None
    return url if urlparse(url).scheme in ("http", "https") else None
