"""Headless Chromium for the browser tests (and the console screenshot script): Debian's
``/usr/bin/chromium`` driven by Playwright, with no browser download.

Why one place: both browser test modules and benchmarks/console_screenshots.py need the same
binary, the same closed-network flags, and the same rule that a missing Chromium skips on a
developer machine but fails in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network, as the machine notes prescribe (no background connections).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why Chromium cannot run here, or None when it can."""
    if Path(CHROMIUM).exists():
        return None
    return f"Chromium not found at {CHROMIUM} (Debian package 'chromium')"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A launched headless Chromium, one per test module; skips without Chromium, except in CI."""
    reason = chromium_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the browser tests must run", pytrace=False)
        pytest.skip(f"{reason}; install it, or set CI=1 to turn this skip into a failure")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
