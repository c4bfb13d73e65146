"""Running ``cryo-cds`` as a user does: a subprocess in a working directory of its own,
with its own data directory and no ``CDS_HOOKS_*`` settings from the caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def cli_env(home: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_HOOKS_")}
    return {**env, "CDS_HOOKS_DATA_DIR": str(home["data"]), **extra}


def cryo(home: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", *args],
        cwd=home["cwd"],
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def strip_uuids(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_uuids(v) for k, v in node.items() if k != "uuid"}
    if isinstance(node, list):
        return [strip_uuids(v) for v in node]
    return node


def ctrl_c_enabled() -> None:
    """``preexec_fn`` for a child that must obey Ctrl-C: a runner started in the background
    (``cmd &``) ignores SIGINT, children inherit that, and Python then installs no handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
