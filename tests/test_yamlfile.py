"""The rule, parameter, policy and value-set files read by libyaml's parser (start-up time,
issue 15) give exactly the values PyYAML's own safe loader gives, file by file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cds_hooks import yamlfile

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted({*ROOT.joinpath("rules").rglob("*.yaml"), *ROOT.joinpath("cds_hooks").rglob("*.yaml")})


def test_the_c_parser_is_used_where_pyyaml_has_it() -> None:
    assert yamlfile.SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_every_shipped_yaml_file_reads_the_same_with_either_parser() -> None:
    assert len(FILES) > 100
    differ = [
        str(path.relative_to(ROOT))
        for path in FILES
        if yamlfile.safe_load(path.read_text(encoding="utf-8"))
        != yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    ]
    assert differ == []


def test_bad_yaml_is_a_yaml_error_with_either_parser() -> None:
    with pytest.raises(yaml.YAMLError):
        yamlfile.safe_load("valuesets: [unclosed\n  - x: : y")
