"""The request path stays apart from the development tools: importing the web app loads no
``cds_hooks.devtools`` module, and no test loads a module from ``benchmarks/``."""

from __future__ import annotations

import ast
import subprocess
import sys

from .conftest import ROOT

PROBE = """
import sys
import cds_hooks.app
print(sorted(m for m in sys.modules if m.startswith("cds_hooks.devtools") or m.startswith("cds_hooks.cli")))
"""


def test_the_web_app_imports_no_devtools_or_cli_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    # The console's sandbox reads the rule-case format (cds_hooks.devtools.cases), but only
    # inside its views, when someone opens the sandbox: importing the app loads none of it.
    assert ast.literal_eval(result.stdout.strip()) == []


def test_no_test_loads_modules_from_benchmarks() -> None:
    offenders = [
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if path.name != "test_structure.py"
        and ("benchmarks/" in path.read_text() and "spec_from_file_location" in path.read_text())
    ]
    assert offenders == []
