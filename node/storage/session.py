"""Transactions for the repositories: one short session per call, committed before returning."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from node.storage.engine import WRITE_OPTION
from node.storage.errors import DatabaseUnavailable, DuplicateRecord

Clock = Callable[[], float]
T = TypeVar("T")


class Transactions:
    """Opens read and write transactions; turns driver failures into `DatabaseUnavailable`."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.clock = clock
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        # SQLite lets one writer in at a time and makes the others poll with growing sleeps (1, 2,
        # 5, 10… ms): writers of this process queue on a lock instead and go in the moment the
        # previous one commits. PostgreSQL locks rows, not the database, and needs none.
        self._one_writer: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with _translated(), self._read() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        with self._one_writer, _translated(), self._write() as session, session.begin():
            yield session

    # The job path's statements run on bare connections: the ORM's identity map, unit of work and
    # refresh cost several times the statements themselves on transitions written many times a job.
    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction on a bare connection (Core statements)."""
        with _translated(), self._engine.begin() as connection:
            yield connection

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction on a bare connection; commits when the block ends, else rolls back."""
        with self._one_writer, _translated(), self._write_engine.begin() as connection:
            yield connection


def retry_on_conflict(write: Callable[[], T], attempts: int = 3) -> T:
    """Run `write` again when a concurrent insert of the same key beat it to the commit."""
    for _ in range(attempts - 1):
        try:
            return write()
        except IntegrityError:
            continue
    try:
        return write()
    except IntegrityError as exc:
        raise DuplicateRecord(f"a concurrent writer kept inserting the same record: {exc.orig}") from exc


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        # Repositories turn constraint violations into their own, more precise errors.
        raise
    except DBAPIError as exc:
        raise DatabaseUnavailable(
            f"the database failed: {exc.orig}",
            hint="check that storage.url is reachable and the disk is not full",
        ) from exc
