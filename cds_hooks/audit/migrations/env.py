"""Alembic environment for the audit store.

Run programmatically by `AuditStore.migrate()` for a database with an older schema (one
without tables is created from the models instead), which hands over an open connection in
`config.attributes["connection"]`; the `sqlalchemy.url` option is the fallback for running
`alembic` by hand. On PostgreSQL a transaction-scoped advisory lock serialises workers that
all migrate at start-up; on SQLite the store's `BEGIN IMMEDIATE` already does.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from cds_hooks.audit.models import metadata
from cds_hooks.audit.store import MIGRATION_LOCK_ID

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without a database."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection or set sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
