"""The decision log's JSON columns on SQLite: orjson writes the plain values, the column's own
encoder everything orjson would write differently; both read back as the same value."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import JSON
from sqlalchemy.dialects import sqlite

from cds_hooks.audit.writer import _WRITER_BINDS


def _column_processor(none_as_null: bool = False) -> Any:
    return _WRITER_BINDS["json_or_null" if none_as_null else "json"]


def _core(value: Any, none_as_null: bool = False) -> Any:
    dialect = sqlite.dialect()
    bind = JSON(none_as_null=none_as_null).dialect_impl(dialect).bind_processor(dialect)
    return bind(value)


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "lab", "value": 7.2, "flags": [True, False, None], "label": "Kälteurtikaria – “cold”"},
        [{"days_before_treatment": -3, "nested": {"a": [1, 2.5, "x"]}}],
        {},
        [],
        {"emoji": "\U0001f976", "zero": 0, "big": 2**62},
    ],
)
def test_plain_values_read_back_as_core_writes_them(value: Any) -> None:
    written = _column_processor()(value)
    assert isinstance(written, str)
    assert json.loads(written) == json.loads(_core(value)) == value


def test_values_orjson_would_change_go_the_columns_way() -> None:
    process = _column_processor()
    nan = {"value": float("nan"), "ok": "null"}
    assert process(nan) == _core(nan)  # "NaN", as before, not null
    assert math.isnan(json.loads(process(nan))["value"])
    keyed = {1: "int key"}
    assert process(keyed) == _core(keyed)  # {"1": ...}
    with pytest.raises(TypeError):  # the column refuses a datetime; so does the fast path
        process({"at": datetime(2026, 1, 1, tzinfo=UTC)})


@pytest.mark.parametrize("none_as_null", [False, True])
def test_none_is_stored_as_the_column_says(none_as_null: bool) -> None:
    assert _column_processor(none_as_null)(None) == _core(None, none_as_null)
