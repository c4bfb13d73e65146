"""The orjson path for request bodies and answers reads and refuses exactly what the
standard library did: where orjson differs (integers beyond 64 bits, lone surrogates,
numbers too large for a double) the body is read by ``json``, and every refusal is a 400."""

from __future__ import annotations

import json

import pytest

from cds_hooks.errors import BadRequest
from cds_hooks.web.body import parse_json
from cds_hooks.web.responses import json_bytes


def test_an_ordinary_body_is_read_as_the_standard_library_reads_it() -> None:
    raw = b'{"a": [1, 2.5, -3e-7, true, null, "\xc3\xa9\\u00e9"], "b": {"c": 18446744073709551615}}'
    assert parse_json(raw) == json.loads(raw)


@pytest.mark.parametrize("digits", [20, 25, 4300])
def test_a_long_integer_keeps_every_digit(digits: int) -> None:
    number = int("9" * digits)
    value = parse_json(b'{"valueInteger": ' + str(number).encode() + b"}")
    assert value["valueInteger"] == number and isinstance(value["valueInteger"], int)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"n": ' + b"9" * 4301 + b"}", "not acceptable JSON"),
        (b'{"n": NaN}', "not acceptable JSON"),
        (b'{"n": -Infinity}', "not acceptable JSON"),
        (b'{"n": 1e400}', "too large for a double"),
        (b'{"n": "\xff"}', "not valid"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"n": 1,}', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
    ids=["4301-digit integer", "NaN", "-Infinity", "1e400", "bad UTF-8", "deep nesting", "trailing comma", "empty"],
)
def test_what_cannot_be_read_is_a_clear_400(raw: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_json(raw)
    assert words in str(refused.value)


def test_a_lone_surrogate_is_read_as_before_and_answered_with_an_escape() -> None:
    value = parse_json(b'{"text": "a\\ud800b"}')
    assert value == {"text": "a\ud800b"}
    assert json_bytes(value) == b'{"text":"a\\ud800b"}'


def test_answers_are_compact_utf8_json_and_never_write_nan() -> None:
    body = {"summary": "Kälte", "n": [1, 2.5], "nan": float("nan"), "inf": float("inf")}
    written = json_bytes(body)
    assert written == '{"summary":"Kälte","n":[1,2.5],"nan":null,"inf":null}'.encode()
    assert json.loads(written)["nan"] is None


def test_an_answer_orjson_cannot_write_takes_the_standard_path() -> None:
    assert json.loads(json_bytes({1: "int key", "big": 2**70})) == {"1": "int key", "big": 2**70}
