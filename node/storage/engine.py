"""Engines for the two supported databases, and the schema migrations run on opening one.

SQLite (the default) runs in WAL mode with foreign keys on and a busy timeout. Its durability is
chosen in the URL (`sqlite:///gpunode.db?synchronous=full`); see `SQLITE_SYNCHRONOUS`. Write
transactions start with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can fail at once with
SQLITE_BUSY when another writer got in between, whereas an immediate one waits its turn.
PostgreSQL is reached by URL through psycopg 3.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from node.errors import ConfigError
from node.logging import get_logger
from node.storage.errors import DatabaseUnavailable

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Execution option marking a connection whose transactions will write.
WRITE_OPTION = "gpunode_write"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# `synchronous` settings a SQLite URL may ask for, and the default. In WAL mode, NORMAL writes each
# commit to the WAL before returning and fsyncs only at checkpoints: a committed state change
# survives the node process crashing or being killed, but the last commits before a power cut or
# an OS crash may be rolled back (the database stays consistent). FULL also fsyncs every commit,
# surviving power loss, at about 0.5 ms per commit here - half the cost of a job's transition.
# NORMAL is the default: every state change is still written before anyone is told of it and
# survives the node crashing; a node on hardware that may lose power without warning, and that
# would rather pay the fsync than redo its last moments, sets `?synchronous=full`.
SQLITE_SYNCHRONOUS = ("normal", "full")


def create_database_engine(url: str) -> Engine:
    """An engine for `url` (`sqlite:///path` or `postgresql+psycopg://…`), configured for the node."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            # The bare `postgresql://` form would pick psycopg2, which the node does not ship.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported database {parsed.get_backend_name()!r} in storage.url",
        hint="use sqlite:///path/to/gpunode.db or postgresql+psycopg://user@host/dbname",
    )


def survives_power_loss(url: str) -> bool:
    """Whether a commit on `url` survives a power cut: PostgreSQL's (fsync on), SQLite's only
    with `?synchronous=full`."""
    parsed = _parse(url)
    return parsed.get_backend_name() != "sqlite" or _sqlite_synchronous(parsed) == "FULL"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"storage.url {url!r} is not a database URL",
            hint="use sqlite:///path/to/gpunode.db or postgresql+psycopg://user@host/dbname",
        ) from exc


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        # Each pooled connection would see its own empty in-memory database.
        raise ConfigError(
            "storage.url names an in-memory SQLite database, which the node cannot share between threads",
            hint="give a file path: sqlite:///path/to/gpunode.db",
        )
    path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the directory of the database {path}: {exc.strerror}",
            hint="point storage.url at a writable location",
        ) from exc
    synchronous = _sqlite_synchronous(url)
    engine = create_engine(url.set(database=str(path)).difference_update_query(["synchronous"]))
    event.listen(engine, "connect", functools.partial(_sqlite_on_connect, synchronous))
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_synchronous(url: URL) -> str:
    asked = url.query.get("synchronous", SQLITE_SYNCHRONOUS[0])
    if not isinstance(asked, str) or asked.lower() not in SQLITE_SYNCHRONOUS:
        raise ConfigError(
            f"storage.url asks for synchronous={asked!r}",
            hint="use ?synchronous=normal (survives a process crash) or ?synchronous=full (also power loss)",
        )
    return asked.upper()


def _sqlite_on_connect(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, decides when a transaction begins (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic, run in process; no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except CommandError as exc:
        raise DatabaseUnavailable(
            f"cannot migrate the database: {exc}",
            hint="it was probably written by a newer gpunode; upgrade gpunode or point storage.url elsewhere",
        ) from exc
    except DBAPIError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database to migrate it: {exc.orig}",
            hint="check storage.url and that the database server is running",
        ) from exc
    log.debug("database migrated", revision=revision, backend=engine.dialect.name)
