"""Cost of one decision write (``AuditStore``), option by option, SQLite and PostgreSQL side by side.

The decision written is a real one: the pipeline's outcome for the typical request of
``benchmarks/pipeline.py`` (one order, every rule evaluated, its cards and hits), written again
and again under fresh decision ids. Options:

* ``store before #15 (0005)``: the write as shipped up to revision 0005: one transaction, one
  INSERT for the decision and one executemany per child table (SQLAlchemy Core), one
  ``rule_evaluation`` row per rule evaluated, run on the store's bounded pool (run_bounded).
  It writes to a scratch ``rule_evaluation`` table made like revision 0001's.
* ``same, caller's thread``: the same statements without the hop to the pool thread.
* ``pre-rendered driver SQL``: the same rows as pre-rendered SQL through ``exec_driver_sql``
  (no compile step; the driver caches or prepares the statements).
* ``one JSON row``: the whole decision as one JSON document in one row of a scratch table
  (what "JSON columns, one statement per call" would cost at best; the analytics would then
  have to unpack it).
* ``evaluation sets, Core``: revision 0006's rows (the decision names its evaluation set,
  stored once; no row per rule) written with the 0005 statements, on the bounded pool.
* ``store (as shipped)``: ``AuditStore.record_decision`` today: revision 0006's rows through
  ``cds_hooks.audit.writer`` (SQLite: statements compiled once, run through the driver;
  PostgreSQL: the whole decision in one statement), on the bounded pool.

The options take turns, one write each, so a busy machine slows all of them alike.

SQLite runs each option with ``synchronous=FULL`` (SQLite's WAL default) and ``NORMAL``. In WAL
mode NORMAL still survives a killed process (the WAL is in the OS's hands once written; only an
OS crash or power loss can lose the last commits); PostgreSQL keeps ``synchronous_commit=on``.
Prints ms per write (median of ``--writes`` writes after a warm-up). The machine is shared:
compare figures of one run only.

    python -P benchmarks/decision_write.py [--writes 300]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's

from sqlalchemy import JSON, Column, Connection, Engine, ForeignKey, MetaData, String, Table, event, insert

from cds_hooks.audit.core import store_evaluation_set
from cds_hooks.audit.models import Card, Decision, DecisionOrder, RuleHit
from cds_hooks.audit.records import DecisionRecord
from cds_hooks.audit.store import AuditStore, _decision_rows, evaluation_set_key
from cds_hooks.config import Config
from cds_hooks.hooks import parse_hook_request
from cds_hooks.ids import time_ordered_uuid
from cds_hooks.pipeline_factory import build_pipeline
from cds_hooks.service import SERVICES
from tests.support.load import postgres_reachable, throwaway_database

KEY = b"benchmark-only-patient-key-32byt"
# The per-rule table of revisions 0001-0005, for the "before" options.
_SCRATCH = MetaData()
Table("decision", _SCRATCH, Column("decision_id", String(64), primary_key=True))
RULE_EVALUATION = Table(
    "rule_evaluation",
    _SCRATCH,
    Column("decision_id", String(64), ForeignKey("decision.decision_id", ondelete="CASCADE"), primary_key=True),
    Column("rule_id", String(64), primary_key=True, index=True),
    Column("rule_version", String(32), nullable=False),
)
CHILDREN = (DecisionOrder.__table__, RULE_EVALUATION, Card.__table__, RuleHit.__table__)
TABLES = {table.name: table for table in (Decision.__table__, *CHILDREN)}


def typical_decision() -> tuple[DecisionRecord, list[tuple[str, str]]]:
    sys.path.append(str(ROOT / "benchmarks"))  # after the standard library (http.py)
    from pipeline import typical_request  # type: ignore[import-not-found]

    pipeline = build_pipeline(Config(rules_dir=ROOT / "rules"))
    body = typical_request()
    outcome = pipeline.run(SERVICES["cryotherapy-order-select"], parse_hook_request(body, "order-select"))
    return outcome.decision, outcome.evaluated_rules


def fresh(rec: DecisionRecord, new_id: Callable[[], str] = time_ordered_uuid) -> DecisionRecord:
    """The same decision under new ids (decision and card uuids are unique in the log), made
    by ``new_id``: the service's time-ordered ids unless a benchmark compares others."""
    new = {card.uuid: new_id() for card in rec.cards}
    return replace(
        rec,
        decision_id=new_id(),
        cards=tuple(replace(card, uuid=new[card.uuid]) for card in rec.cards),
        fired=tuple(replace(hit, card_uuid=new.get(hit.card_uuid or "", hit.card_uuid)) for hit in rec.fired),
    )


WARM_UP_WRITES = 20  # pool, compiled statements, the evaluation set


def timed_writes(write: Callable[[], None], count: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per write over ``count`` calls of ``write``, after a warm-up."""
    for _ in range(WARM_UP_WRITES):
        write()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        write()
    return (time.process_time() - cpu) / count * 1000, (time.perf_counter() - wall) / count * 1000


def in_two_processes(target: Callable[..., None], *args: Any) -> list[tuple[float, float]]:
    """``target(*args, results)`` in two processes at once, as two gunicorn sync workers write
    to one log; what each put in ``results``."""
    results: multiprocessing.Queue[tuple[float, float]] = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=target, args=(*args, results)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [results.get() for _ in processes]


def two_writers_on_a_fresh_log(
    target: Callable[..., None],
    option: str,
    prefill: int,
    writes: int,
    after: Callable[[str], None] | None = None,
) -> tuple[float, float]:
    """Two ``target(url, option, count, results)`` processes on a new, migrated SQLite log:
    ``prefill`` decisions each (so the indexes have a realistic size), then ``writes`` timed
    ones each; the mean (CPU ms, wall ms) per write. ``after(url)`` runs on the log before it
    is deleted."""
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{workdir}/decisions.db"
        store = AuditStore(url, KEY)
        store.migrate()
        store.dispose()
        in_two_processes(target, url, option, prefill)
        figures = in_two_processes(target, url, option, writes)
        if after is not None:
            after(url)
    return (
        sum(cpu for cpu, _wall in figures) / len(figures),
        sum(wall for _cpu, wall in figures) / len(figures),
    )


class DriverInserts:
    """One decision's INSERTs as pre-rendered driver SQL (the option measured, not shipped).

    Values pass through the columns' own bind processors, so they are stored as the store
    stores them; exec_driver_sql keeps SQLAlchemy's error wrapping and disconnect handling."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        self._postgres = dialect.name == "postgresql"
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, list[Callable[[Any], Any]]]] = {}

    def _plan(self, table: str, keys: tuple[str, ...]) -> tuple[str, list[Callable[[Any], Any]]]:
        plan = self._plans.get((table, keys))
        if plan is None:
            columns = TABLES[table].columns
            mark = "%s" if self._postgres else "?"
            sql = f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join(mark for _ in keys)})"
            plan = (sql, [self._processor(columns[key]) for key in keys])
            self._plans[(table, keys)] = plan
        return plan

    def _processor(self, column: Any) -> Callable[[Any], Any]:
        bind = column.type.bind_processor(self._dialect)
        if self._postgres and isinstance(column.type, JSON):
            from psycopg.types.json import Json

            return Json  # psycopg adapts JSON only when told; SQLAlchemy does the same
        return bind if bind is not None else _same

    def run(self, conn: Connection, rows: Mapping[str, Any]) -> None:
        for table in TABLES:
            batch = [rows["decision"]] if table == "decision" else rows[table]
            if not batch:
                continue
            keys = tuple(batch[0])
            sql, processors = self._plan(table, keys)
            params = [tuple(proc(row[key]) for proc, key in zip(processors, keys, strict=True)) for row in batch]
            # exec_driver_sql: no compile step, but SQLAlchemy's error wrapping and
            # disconnect handling stay (IntegrityError, invalidated connections).
            conn.exec_driver_sql(sql, params[0] if len(params) == 1 else params)


def _same(value: Any) -> Any:
    return value


def core_inserts(engine: Engine, rows: dict[str, Any]) -> None:
    """The 0005 store's statements (SQLAlchemy Core, one INSERT or executemany per table)."""
    with engine.begin() as conn:
        conn.execute(insert(Decision), [rows["decision"]])
        for table in CHILDREN:
            if rows[table.name]:
                conn.execute(insert(table), rows[table.name])


def core_with_sets(engine: Engine, known: set[str], rows: dict[str, Any]) -> None:
    """Revision 0006's rows (evaluation set by reference) through the 0005 statements."""
    pairs = [(row["rule_id"], row["rule_version"]) for row in rows["rule_evaluation"]]
    key = evaluation_set_key(pairs)
    with engine.begin() as conn:
        if key not in known:
            store_evaluation_set(conn, key, pairs)
        conn.execute(insert(Decision), [{**rows["decision"], "evaluation_set": key}])
        for table in CHILDREN:
            if table is not RULE_EVALUATION and rows[table.name]:
                conn.execute(insert(table), rows[table.name])
    known.add(key)


def driver_inserts(engine: Engine, writer: DriverInserts, rows: dict[str, Any]) -> None:
    with engine.begin() as conn:
        writer.run(conn, rows)


def one_json_row(engine: Engine, rows: dict[str, Any]) -> None:
    doc = json.dumps(rows, default=str, separators=(",", ":"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO bench_decision_doc (decision_id, doc) VALUES ("
            + ("?, ?)" if engine.dialect.name == "sqlite" else "%s, %s)"),
            (rows["decision"]["decision_id"], doc),
        )


def _time(options: Mapping[str, Callable[[], None]], writes: int) -> dict[str, float]:
    """Median ms per write of each option, the options taking turns write by write."""
    for write in options.values():
        for _ in range(10):
            write()
    samples: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(writes):
        for name, write in options.items():
            started = time.perf_counter()
            write()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(url: str, rec: DecisionRecord, evaluated: list[tuple[str, str]], writes: int, synchronous: str | None):
    store = AuditStore(url, KEY)
    store.migrate()
    engine = store.engine
    if synchronous is not None:
        event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute(f"PRAGMA synchronous = {synchronous}"))
        engine.dispose()
        # The store's own driver connections (its decision writes) are not the engine's.
        connections = store._writer_connections
        if connections is not None:
            opens = connections._connect

            def open_with_setting() -> Any:
                driver = opens()
                driver.execute(f"PRAGMA synchronous = {synchronous}")
                return driver

            connections._connect = open_with_setting
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS bench_decision_doc (decision_id VARCHAR(64) PRIMARY KEY, doc TEXT)"
        )
        RULE_EVALUATION.create(conn)
    hashed = store.hash_patient(rec.patient_id)
    writer = DriverInserts(engine.dialect)

    def rows() -> dict[str, Any]:
        return _decision_rows(fresh(rec), evaluated, hashed)

    known: set[str] = set()
    options: dict[str, Callable[[], None]] = {
        "store before #15 (0005)": lambda: store.run_bounded(partial(core_inserts, engine, rows())),
        "same, caller's thread": lambda: core_inserts(engine, rows()),
        "pre-rendered driver SQL": lambda: driver_inserts(engine, writer, rows()),
        "one JSON row": lambda: one_json_row(engine, rows()),
        "evaluation sets, Core": lambda: store.run_bounded(partial(core_with_sets, engine, known, rows())),
        "store (as shipped)": lambda: store.record_decision(fresh(rec), evaluated),
    }
    results = _time(options, writes)
    store.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    rec, evaluated = typical_decision()
    rows = _decision_rows(rec, evaluated, "x" * 64)
    print(
        f"== decision write, {args.writes} writes per option (median ms/write); one decision = 1 decision row, "
        + ", ".join(f"{len(rows[t.name])} {t.name}" for t in CHILDREN)
        + " (since 0006 the rule_evaluation rows are one evaluation set, stored once)"
    )
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous in ("FULL", "NORMAL"):
            folder = Path(tmp) / synchronous
            folder.mkdir()
            with throwaway_database("sqlite", folder) as url:
                columns[f"SQLite WAL {synchronous}"] = measure(url, rec, evaluated, args.writes, synchronous)
        why_not = postgres_reachable()
        if why_not is None:
            with throwaway_database("postgresql", Path(tmp)) as url:
                columns["PostgreSQL"] = measure(url, rec, evaluated, args.writes, None)
        else:
            print(f"PostgreSQL skipped: {why_not}")
    names = list(columns)
    print(f"{'option':24}" + "".join(f"{n:>20}" for n in names))
    for option in next(iter(columns.values())):
        print(f"{option:24}" + "".join(f"{columns[n][option]:>20.2f}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
