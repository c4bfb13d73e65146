"""Build hook: copy the top-level ``rules/`` folder (the source of truth for rules, value
sets and parameters) into the wheel as ``cds_hooks/_bundled/rules``, so an installed package
serves and checks from any directory. All other metadata is in pyproject.toml.

An editable install skips the copy: ``cds_hooks.config.bundled_rules_dir`` then finds the
checkout's ``rules/`` directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RULES = Path(__file__).resolve().parent / "rules"


class BuildPyWithRules(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if not (RULES / "parameters.yaml").is_file():
            raise SystemExit(f"cannot build: {RULES} is missing or incomplete (no parameters.yaml)")
        target = Path(self.build_lib) / "cds_hooks" / "_bundled" / "rules"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(RULES, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithRules})
