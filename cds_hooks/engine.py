"""The durable-rules engine, wrapped so that its known crashes and wrong answers cannot
reach a request (every measure of design note ``durable-rules.md`` §8).

* One quiet Host per process (no background threads), built once from rule JSON.
* One session id per evaluation, one ``assert_facts`` call, ``delete_state`` in ``finally``.
* Every fact has a unique id; a sentinel fact is asserted last; a ``$done`` rule always
  fires (no segfault in ``delete_state``); a ``$sink`` rule makes every fact handled.
* Actions only record matches and never raise into the engine.
* A process-wide lock around the C calls: the GIL serialises them anyway.
Where ``durable`` cannot be imported (Python 3.13+), ``make_evaluator`` falls back to the
plain evaluator and logs it once.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from .evaluator import NUMBER_LIMIT, Fact, Hit, PlainEvaluator, engine_safe, engine_safe_fact
from .rulebook import SENTINEL_KIND

log = logging.getLogger(__name__)

RULESET = "cryo"
_DONE = "$done"
_SINK = "$sink"

try:
    from durable import engine as _durable_engine
except ImportError:  # no wheel/build for this Python, or the C extension fails to load
    _durable_engine = None


class _EngineJson:
    """The JSON codec durable-rules' Python layer talks to its C core with: orjson, which
    writes numbers exactly as the standard library does (the C core crashes on exponent
    forms, so that matters: tests/test_engine_json.py) and is several times faster. The
    engine encodes and decodes its state at every fired rule, a fifth of an evaluation.
    Anything orjson will not take goes to the standard library, as before."""

    @staticmethod
    def dumps(value: Any, ensure_ascii: bool = False, **options: Any) -> str:
        if not options and not ensure_ascii:
            try:
                return orjson.dumps(value).decode()
            except TypeError:  # non-string keys, integers beyond 64 bits
                pass
        return json.dumps(value, ensure_ascii=ensure_ascii, **options)

    @staticmethod
    def loads(text: str | bytes) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return json.loads(text)


if _durable_engine is not None:
    _durable_engine.json = _EngineJson  # the module's only use of ``json`` is dumps/loads


def durable_available() -> bool:
    return _durable_engine is not None


class DurableEvaluator:
    """Evaluates compiled rules with durable-rules; same interface as PlainEvaluator."""

    name = "durable"

    def __init__(self, rules: Mapping[str, Mapping[str, Any]]):
        if _durable_engine is None:
            raise RuntimeError("durable-rules is not importable on this Python")
        self._hits: dict[str, list[Hit]] = {}
        self._lock = threading.Lock()
        definitions: dict[str, Any] = {}
        for key, definition in rules.items():
            definitions[key] = {**copy.deepcopy(dict(definition)), "run": key}
        definitions[_DONE] = {"all": [{"m": {"kind": SENTINEL_KIND}}], "run": _DONE}
        definitions[_SINK] = {"all": [{"a": {"$ex": {"kind": 1}}}, {"b": {"kind": "$never"}}], "run": _SINK}
        actions = {key: self._recorder(key) for key in definitions}
        self._host = _QuietHost({RULESET: definitions}, actions)

    def _recorder(self, key: str) -> Callable[[Any], None]:
        def record(closure: Any) -> None:
            try:
                if key in (_DONE, _SINK):
                    return
                matched = closure._m
                sid = closure.s.sid
                pairs = tuple((alias, str(fact["id"])) for alias, fact in matched.items() if alias != "req")
                self._hits.setdefault(sid, []).append(Hit(key, pairs))
            except Exception:  # the engine would swallow it; log instead
                log.exception("rule action for %s failed", key)

        return record

    def evaluate(self, facts: Sequence[Fact]) -> list[Hit]:
        sid = uuid.uuid4().hex
        batch = [{**engine_safe_fact(fact), "sid": sid} for fact in facts]
        batch.append({"kind": SENTINEL_KIND, "id": "$eval", "sid": sid})
        with self._lock:
            self._hits[sid] = []
            try:
                self._host.assert_facts(RULESET, batch)
            finally:
                try:
                    self._host.delete_state(RULESET, sid)
                except Exception:  # never let cleanup mask the evaluation's own error
                    log.exception("durable-rules delete_state failed")
                hits = self._hits.pop(sid, [])
        return hits


if _durable_engine is not None:

    class _QuietHost(_durable_engine.Host):  # type: ignore[misc]
        """A Host without the background timer threads that steal and race actions."""

        def __init__(self, definitions: dict[str, Any], actions: Mapping[str, Callable[[Any], None]]):
            self._named_actions = dict(actions)
            super().__init__(definitions)

        def _run(self) -> None:
            return None

        def get_action(self, action_name: str) -> Callable[[Any], None]:
            return self._named_actions[action_name]


Evaluator = DurableEvaluator | PlainEvaluator


def make_evaluator(rules: Mapping[str, Mapping[str, Any]], preferred: str = "durable") -> Evaluator:
    """The configured evaluator; durable-rules unless unavailable or 'plain' is asked for."""
    if preferred == "durable":
        if durable_available():
            return DurableEvaluator(rules)
        log.warning("durable-rules cannot be imported on this Python; using the plain evaluator")
    return PlainEvaluator(rules)


__all__ = [
    "NUMBER_LIMIT",
    "DurableEvaluator",
    "Evaluator",
    "Hit",
    "PlainEvaluator",
    "durable_available",
    "engine_safe",
    "engine_safe_fact",
    "make_evaluator",
]
