"""durable-rules' Python layer speaks JSON to its C core through our codec (orjson). The core
crashes on numbers in exponent form, so the codec must write every number the engine can be
given exactly as the standard library writes it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks import engine
from cds_hooks.evaluator import NUMBER_LIMIT, engine_safe, engine_safe_fact

pytestmark = pytest.mark.skipif(not engine.durable_available(), reason="durable-rules not importable here")

engine_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(min_value=-NUMBER_LIMIT, max_value=NUMBER_LIMIT),
    st.floats(min_value=-1, max_value=1),
)
fact_values = st.one_of(engine_numbers, st.booleans(), st.none(), st.text(max_size=20))


@settings(max_examples=2000, derandomize=True)
@given(engine_numbers)
def test_every_engine_number_is_written_as_the_standard_library_writes_it(value: Any) -> None:
    safe = engine_safe(value)
    assert engine._EngineJson.dumps(safe) == json.dumps(safe, ensure_ascii=False)


@settings(max_examples=300, derandomize=True)
@given(st.dictionaries(st.text(min_size=1, max_size=12), fact_values, max_size=12))
def test_facts_round_trip_and_read_as_the_standard_library_writes_them(fact: dict[str, Any]) -> None:
    batch = [{**engine_safe_fact(fact), "sid": "s", "id": "f-1"}]
    text = engine._EngineJson.dumps(batch, ensure_ascii=False)
    assert json.loads(text) == batch
    assert engine._EngineJson.loads(text) == batch


def test_what_orjson_refuses_goes_to_the_standard_library() -> None:
    assert engine._EngineJson.dumps({1: 2**70}) == json.dumps({1: 2**70}, ensure_ascii=False)
    assert engine._EngineJson.loads('{"a": NaN}')["a"] != 0  # NaN read back (the library reads it)


def test_the_engine_module_uses_the_codec() -> None:
    from durable import engine as durable_engine

    assert durable_engine.json is engine._EngineJson
