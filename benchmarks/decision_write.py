"""Cost of one decision write (``AuditStore``), option by option, SQLite and PostgreSQL side by side.

The decision written is a real one: the pipeline's outcome for the typical request of
``benchmarks/pipeline.py`` (one order, every rule evaluated, its cards and hits), written again
and again under fresh decision ids. Options:

* ``store (as shipped)``: ``AuditStore.record_decision``: one transaction, one INSERT for the
  decision and one executemany per child table (SQLAlchemy Core), run on the store's
  bounded pool (run_bounded).
* ``same, caller's thread``: the same statements without the hop to the pool thread.
* ``pre-rendered driver SQL``: the same rows as pre-rendered SQL through ``exec_driver_sql``
  (no compile step; the driver caches or prepares the statements).
* ``one JSON row``: the whole decision as one JSON document in one row of a scratch table
  (what "JSON columns, one statement per call" would cost at best; the analytics would then
  have to unpack it).

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
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import JSON, Connection, Engine, event, insert

from cds_hooks.audit.models import Card, Decision, DecisionOrder, RuleEvaluation, RuleHit
from cds_hooks.audit.records import DecisionRecord
from cds_hooks.audit.store import AuditStore, _decision_rows
from cds_hooks.config import Config
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import build_pipeline
from cds_hooks.service import SERVICES
from tests.support.load import postgres_reachable, throwaway_database

KEY = b"benchmark-only-patient-key-32byt"
CHILDREN = (DecisionOrder, RuleEvaluation, Card, RuleHit)
TABLES = {model.__tablename__: model.__table__ for model in (Decision, *CHILDREN)}


def typical_decision() -> tuple[DecisionRecord, list[tuple[str, str]]]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import typical_request  # type: ignore[import-not-found]

    pipeline = build_pipeline(Config(rules_dir=ROOT / "rules"))
    body = typical_request()
    outcome = pipeline.run(SERVICES["cryotherapy-order-select"], parse_hook_request(body, "order-select"))
    return outcome.decision, outcome.evaluated_rules


def fresh(rec: DecisionRecord) -> DecisionRecord:
    """The same decision under new ids (decision and card uuids are unique in the log)."""
    new = {card.uuid: str(uuid.uuid4()) for card in rec.cards}
    return replace(
        rec,
        decision_id=str(uuid.uuid4()),
        cards=tuple(replace(card, uuid=new[card.uuid]) for card in rec.cards),
        fired=tuple(replace(hit, card_uuid=new.get(hit.card_uuid or "", hit.card_uuid)) for hit in rec.fired),
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
    """The store's statements (SQLAlchemy Core, one INSERT or executemany per table)."""
    with engine.begin() as conn:
        conn.execute(insert(Decision), [rows["decision"]])
        for model in CHILDREN:
            if rows[model.__tablename__]:
                conn.execute(insert(model), rows[model.__tablename__])


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


def _time(write: Callable[[], None], writes: int) -> float:
    for _ in range(10):
        write()
    samples = []
    for _ in range(writes):
        started = time.perf_counter()
        write()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(url: str, rec: DecisionRecord, evaluated: list[tuple[str, str]], writes: int, synchronous: str | None):
    store = AuditStore(url, KEY)
    store.migrate()
    engine = store.engine
    if synchronous is not None:
        event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute(f"PRAGMA synchronous = {synchronous}"))
        engine.dispose()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS bench_decision_doc (decision_id VARCHAR(64) PRIMARY KEY, doc TEXT)"
        )
    hashed = store.hash_patient(rec.patient_id)
    writer = DriverInserts(engine.dialect)

    def rows() -> dict[str, Any]:
        return _decision_rows(fresh(rec), evaluated, hashed)

    results = {
        "store (as shipped)": _time(lambda: store.record_decision(fresh(rec), evaluated), writes),
        "same, caller's thread": _time(lambda: core_inserts(engine, rows()), writes),
        "pre-rendered driver SQL": _time(lambda: driver_inserts(engine, writer, rows()), writes),
        "one JSON row": _time(lambda: one_json_row(engine, rows()), writes),
    }
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
        + ", ".join(f"{len(rows[m.__tablename__])} {m.__tablename__}" for m in CHILDREN)
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
