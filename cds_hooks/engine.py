"""The durable-rules engine, wrapped so that its known crashes and wrong answers cannot
reach a request (every measure of design note ``durable-rules.md`` §8).

* One quiet Host per process (no background threads), built once from rule JSON.
* One ``assert_facts`` call per evaluation, into a session that is kept: see `DurableEvaluator`.
* Every fact has a unique id; a sentinel fact is asserted last; a ``$done`` rule always
  fires (no segfault in ``delete_state``); a ``$sink`` rule makes every fact handled.
* Fired rules are completed in our own loop over the engine's C calls, noting each match;
  nothing runs inside the engine's action machinery.
* A process-wide lock around the C calls: the GIL serialises them anyway.
Where ``durable`` cannot be imported (Python 3.13+), ``make_evaluator`` falls back to the
plain evaluator and logs it once.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from .evaluator import NUMBER_LIMIT, Fact, Hit, PlainEvaluator, engine_safe, engine_safe_fact
from .rulebook import SENTINEL_KIND

log = logging.getLogger(__name__)

RULESET = "cryo"
_DONE = "$done"
_SINK = "$sink"
# Every fact asserted carries the number of its evaluation in the kept session, so a match
# can be checked to bind only this evaluation's facts (no rule reads this field).
EVALUATION = "$evaluation"
SESSION_EVALUATIONS = 4096  # then the session is replaced, whatever it may have accumulated
# An evaluation of more facts replaces the session after it: the session's tables grow to fit
# the facts (about 9 KB each) and would keep that memory, and a fresh session costs little
# beside a call that large (the 5,000-resource body of benchmarks/http.py gives 181 facts).
SESSION_FACTS = 64

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
    """Evaluates compiled rules with durable-rules; same interface as PlainEvaluator.

    The fired rules are read in a loop of our own over the engine's C calls, the same calls
    in the same order as durable's Python layer makes them (``Ruleset.assert_facts`` then
    ``do_actions``). That layer builds a closure, a state object and a callback chain per
    fired rule and re-encodes the unchanged session state each time, to run an action that
    only notes the match: a sixth of an evaluation on a typical call.

    The session is kept from one evaluation to the next. A new session per evaluation (the
    design note's first recipe) allocates and zeroes about a megabyte of index arrays and frees
    it again, and a serving process then spent about a tenth more CPU per small call
    (benchmarks/http_ab.py). So each evaluation asserts its facts, reads the hits and takes the
    same facts out again, and nothing of one evaluation can reach the next:

    * every fact carries the evaluation's number, and a match binding any other is never
      answered with: the session is replaced and the evaluation run again in the fresh one;
    * after the facts are taken out, the session must hold none and have no rule waiting to
      run, or it is replaced (logged, counted in ``sessions_replaced``);
    * any error replaces it too, and so does every ``SESSION_EVALUATIONS``-th evaluation and
      every evaluation of more than ``SESSION_FACTS`` facts.
    """

    name = "durable"

    def __init__(self, rules: Mapping[str, Mapping[str, Any]]):
        if _durable_engine is None:
            raise RuntimeError("durable-rules is not importable on this Python")
        self._lock = threading.Lock()
        definitions: dict[str, Any] = {}
        for key, definition in rules.items():
            definitions[key] = {**copy.deepcopy(dict(definition)), "run": key}
        definitions[_DONE] = {"all": [{"m": {"kind": SENTINEL_KIND}}], "run": _DONE}
        definitions[_SINK] = {"all": [{"a": {"$ex": {"kind": 1}}}, {"b": {"kind": "$never"}}], "run": _SINK}
        self._host = _QuietHost({RULESET: definitions})
        self._ruleset = self._host.get_ruleset(RULESET)
        self._handle = self._ruleset._handle
        self._sid = uuid.uuid4().hex  # the kept session (see the class docstring)
        self._evaluations = 0  # numbers this session's evaluations; stamped on every fact
        self._acted = False  # an action has started in this session: it can be deleted safely
        self.sessions_replaced = 0  # after an anomaly (logged); not the routine renewals
        # A forked process opens a session of its own at once: see `_open_in_child`.
        os.register_at_fork(after_in_child=partial(_open_in_child, weakref.ref(self)))

    def evaluate(self, facts: Sequence[Fact], *, ready: bool = False) -> list[Hit]:
        """The rules' hits on ``facts``; ``ready`` when they come from ``engine_ready``."""
        safe = facts if ready else [engine_safe_fact(f) for f in facts]
        with self._lock:
            try:
                return self._evaluate_in_session(safe)
            except _LeftoverMatch:
                # A match bound a fact of an earlier evaluation: never answer with it. The
                # session has been replaced, and a fresh one holds nothing else: run it again.
                log.error("durable-rules matched a fact left from an earlier evaluation; session replaced")
                return self._evaluate_in_session(safe)

    def _evaluate_in_session(self, facts: Sequence[Fact]) -> list[Hit]:
        """Assert ``facts`` with the sentinel, read the hits, take the facts back out."""
        self._evaluations += 1
        number, sid = self._evaluations, self._sid
        batch = [{**fact, "sid": sid, EVALUATION: number} for fact in facts]
        batch.append({"kind": SENTINEL_KIND, "id": "$eval", "sid": sid, EVALUATION: number})
        try:
            hits = self._fired_rules(batch, _EngineJson.dumps(batch), number)
        except BaseException:
            # Deleted, not emptied: taking facts out of a session whose action was abandoned
            # crashes the engine.
            self._replace_session(anomaly=True)
            raise
        # The sentinel first: every absence rule waits for it, so none can fire while the facts
        # it waits on are being taken out.
        if not self._retract(_EngineJson.dumps(batch[::-1])):
            self._replace_session(anomaly=True)
        elif self._evaluations >= SESSION_EVALUATIONS or len(facts) > SESSION_FACTS:
            self._replace_session(anomaly=False)
        return hits

    def _retract(self, payload: str) -> bool:
        """Take an evaluation's facts out of the session; True when it is then empty, with no
        rule waiting to run."""
        core = _durable_engine.durable_rules_engine
        try:
            state_handle = _state_handle(core.retract_facts(self._handle, payload))
            if core.start_action_for_state(self._handle, state_handle):
                core.abandon_action(self._handle, state_handle)
                log.error("durable-rules had a rule to run after taking an evaluation's facts out")
                return False
            left = _EngineJson.loads(core.get_facts(self._handle, self._sid))
        except Exception:
            log.exception("durable-rules could not take an evaluation's facts out")
            return False
        if left:
            log.error("durable-rules kept %d facts after taking an evaluation's facts out", len(left))
            return False
        return True

    def _replace_session(self, *, anomaly: bool) -> None:
        """Drop the kept session (its C memory is freed) and start a fresh one."""
        if self._evaluations:  # the engine creates a session at its first assert
            try:
                if not self._acted:
                    self._make_deletable()
                if self._acted:
                    self._ruleset.delete_state(self._sid)
                else:
                    log.error("durable-rules session left undeleted: no action could run in it")
            except Exception:  # never let cleanup mask the evaluation's own error
                log.exception("durable-rules delete_state failed")
        self._sid, self._evaluations, self._acted = uuid.uuid4().hex, 0, False
        if anomaly:
            self.sessions_replaced += 1

    def _make_deletable(self) -> None:
        """``delete_state`` crashes the process on a session in which no action ever started
        (design note §6.1): that is one whose first evaluation failed. Start and complete the
        ``$done`` rule in it with a sentinel of its own."""
        closing = [{"kind": SENTINEL_KIND, "id": "$close", "sid": self._sid}]
        try:
            for _match in self._completed_matches(closing, _EngineJson.dumps(closing)):
                pass
        except (_durable_engine.MessageNotHandledException, _durable_engine.MessageObservedException):
            return  # no action started: the session stays undeleted (logged by the caller)

    def _open_session_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by one of its threads
        self._replace_session(anomaly=False)  # the parent's copy, if it had one: freed here
        self._evaluate_in_session([])  # the sentinel alone: the session and its tables exist

    def _fired_rules(self, batch: list[dict[str, Any]], payload: str, number: int) -> list[Hit]:
        """Assert the batch and complete each fired rule in turn, noting what it matched;
        `_LeftoverMatch` if a match binds a fact not asserted by evaluation ``number``."""
        hits: list[Hit] = []
        leftover = False
        for message in self._completed_matches(batch, payload):
            # A match on an earlier evaluation's fact is completed like the others (abandoning
            # it would leave the session unsafe to delete) but never noted.
            if _binds_other_evaluation(message, number):
                leftover = True
            elif not leftover:
                _note(message, hits)
        if leftover:
            raise _LeftoverMatch
        return hits

    def _completed_matches(self, batch: list[dict[str, Any]], payload: str) -> Iterator[Mapping[str, Any]]:
        """Assert ``payload`` (``batch`` as JSON), then start each fired rule in turn, yield its
        match and complete it once the caller has read it. Read it to the end: a rule left
        started would stay in the session."""
        core = _durable_engine.durable_rules_engine
        result = core.assert_facts(self._handle, payload)
        if result[0] == 1:
            raise _durable_engine.MessageNotHandledException(batch)
        if result[0] == 2:
            raise _durable_engine.MessageObservedException(batch)
        state_handle = _state_handle(result)
        started = core.start_action_for_state(self._handle, state_handle)
        if not started:
            return
        self._acted = True
        state, message_text = started
        while True:
            yield _EngineJson.loads(message_text)
            try:
                core.update_state(self._handle, state)  # the state as the engine gave it: no action changes it
                message_text = core.complete_and_start_action(self._handle, state_handle)
            except BaseException:
                core.abandon_action(self._handle, state_handle)
                raise
            if not message_text:
                return


def _state_handle(result: Sequence[Any]) -> Any:
    """The state handle in the result of an assert or a retract (0 for code 3), as durable's
    Python layer reads it."""
    return 0 if result[0] == 3 else result[1]


def _open_in_child(ref: weakref.ReferenceType[DurableEvaluator]) -> None:
    """In a forked child (a gunicorn worker), open the session before serving. Its megabyte is
    then part of what the worker had when it started, not growth: this hook is registered when
    the pipeline is built, before `web.worker_memory.GrowthWatch` registers its own, and
    fork hooks run in the order they were registered. A master loaded with --preload never
    evaluates, so it holds no session, and no worker's RSS counts one it inherited."""
    evaluator = ref()
    if evaluator is None:
        return
    try:
        evaluator._open_session_in_child()
    except Exception:  # the first evaluation opens it then
        log.exception("durable-rules session could not be opened in the forked process")


class _LeftoverMatch(Exception):
    """A fired rule bound a fact that an earlier evaluation asserted."""


def _binds_other_evaluation(message: Mapping[str, Any], number: int) -> bool:
    """True when a fired rule's match binds a fact not stamped with evaluation ``number``."""
    try:
        return any(fact.get(EVALUATION) != number for matched in message.values() for fact in matched.values())
    except AttributeError:  # a match of a shape we do not know: `_note` logs it
        return False


def _note(message: Mapping[str, Any], hits: list[Hit]) -> None:
    """Add a fired rule's match to ``hits``: its key and the fact id each pattern bound
    (the sentinel's ``req`` binding left out); the engine's own rules are not hits."""
    try:
        for key, matched in message.items():
            if key not in (_DONE, _SINK):
                hits.append(
                    Hit(key, tuple((alias, str(fact["id"])) for alias, fact in matched.items() if alias != "req"))
                )
            return
    except Exception as exc:  # a match of a shape we do not know: say so (no fact values), keep the session
        log.error("durable-rules match of %s could not be read (%s)", list(message)[:1], type(exc).__name__)


def _never_called(_closure: Any) -> None:
    log.error("a durable-rules action ran outside DurableEvaluator's loop")


if _durable_engine is not None:

    class _QuietHost(_durable_engine.Host):  # type: ignore[misc]
        """A Host without the background timer threads that steal and race actions. Its
        rulesets' actions are never called: `DurableEvaluator` completes them itself."""

        def _run(self) -> None:
            return None

        def get_action(self, action_name: str) -> Callable[[Any], None]:
            return _never_called


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
