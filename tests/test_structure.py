"""The request path stays apart from the development tools: importing the web app loads no
``cds_hooks.devtools`` module, and no test loads a module from ``benchmarks/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
    # The console's sandbox reads the rule-case format (its presets and cases): the only
    # development module the web app may load.
    allowed = {"cds_hooks.devtools", "cds_hooks.devtools.cases"}
    loaded = set(ast.literal_eval(result.stdout.strip()))
    assert loaded - allowed == set()


def test_no_test_loads_modules_from_benchmarks() -> None:
    offenders = [
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if path.name not in ("test_structure.py", "test_console_browser.py")  # drives the screenshot script users run
        and ("benchmarks/" in path.read_text() and "spec_from_file_location" in path.read_text())
    ]
    assert offenders == []


FACTS_PACKAGE = ROOT / "cds_hooks" / "facts"


def _imports_of(path: Path) -> tuple[set[str], list[str]]:
    """(absolute module names a facts module imports, imports not at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["cds_hooks", "facts"]
    found: set[str] = set()
    nested: list[str] = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(names)
        if id(node) not in top_level:
            nested.append(f"{path.name}:{node.lineno}")
    return found, nested


def _facts_modules() -> dict[str, set[str]]:
    return {f"cds_hooks.facts.{p.stem}": _imports_of(p)[0] for p in sorted(FACTS_PACKAGE.glob("*.py"))}


def test_the_facts_package_does_not_import_the_engine() -> None:
    """Turning facts into what the C engine reads is the engine's job; facts know no evaluator."""
    offenders = {
        module: sorted(n for n in names if n.startswith(("cds_hooks.engine", "cds_hooks.evaluator")))
        for module, names in _facts_modules().items()
    }
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_facts_modules_import_each_other_without_a_cycle_and_at_module_level() -> None:
    modules = _facts_modules()
    graph = {
        module: {n for n in names if n in modules and n != module and n != "cds_hooks.facts"}
        for module, names in modules.items()
    }
    graph["cds_hooks.facts.__init__"] = set()  # the package's front door imports everything
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in trail:
                cycles.append([*trail[trail.index(target) :], target])
            else:
                visit(target, [*trail, target])

    for module in graph:
        visit(module, [module])
    assert cycles == []
    nested = [where for p in sorted(FACTS_PACKAGE.glob("*.py")) for where in _imports_of(p)[1]]
    assert nested == [], "an import inside a function or TYPE_CHECKING block hides a dependency"


def test_the_fact_type_declares_exactly_the_fields_rules_and_cards_may_read() -> None:
    from cds_hooks.facts import Fact
    from cds_hooks.factschema import DISPLAY_FIELDS, FACT_SCHEMA

    declared = set(Fact.__annotations__)
    schema = set(DISPLAY_FIELDS) | {f for fields in FACT_SCHEMA.values() for f in fields}
    assert declared == schema
