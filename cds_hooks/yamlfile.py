"""YAML of the rule, parameter and value-set files, parsed by libyaml when PyYAML has it.

Why: start-up reads some seventy YAML files, and PyYAML's pure-Python parser spends most of
the pipeline's build time on them; the C parser feeds the same safe constructor (same
values, same ``yaml.YAMLError`` on bad input) several times faster (issue 15: start-up ≤ 1 s).
"""

from __future__ import annotations

from typing import Any

import yaml

SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, with the C parser when available."""
    return yaml.load(text, Loader=SAFE_LOADER)  # a safe loader, plain or C
