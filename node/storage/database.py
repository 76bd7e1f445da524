"""The node's database: one engine, its migrations, and the repositories built on it.

The repositories are synchronous SQLAlchemy. SQLite has no truly asynchronous driver (aiosqlite
runs the same sqlite3 calls on a thread), and one synchronous code path serves SQLite and
PostgreSQL alike. Each repository call is one short transaction, committed before it returns, so
a state change is durable before anyone is told about it. From the event loop, call them through
`await database.run(fn, *args)`, which runs them on a worker thread and never blocks the loop;
open the database the same way (`await asyncio.to_thread(Database.open, url)`), since opening
runs the migrations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine

from node.logging import get_logger
from node.storage.cursors import ChainCursorRepository
from node.storage.engine import create_database_engine, migrate, survives_power_loss
from node.storage.jobs import JobRepository
from node.storage.providers import ProviderRepository
from node.storage.receipts import ReceiptRepository
from node.storage.reputation import ReputationRepository
from node.storage.session import Clock, Transactions
from node.storage.vouchers import VoucherRepository

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """Open with `Database.open(url)`; close with `close()` (or use it as a context manager)."""

    def __init__(self, engine: Engine, *, clock: Clock = time.time, survives_power_loss: bool = True) -> None:
        self.engine = engine
        # Whether a commit survives a power cut, not only a crash of the node: files that rows
        # refer to (job inputs, outputs, receipts) are then fsynced as well.
        self.survives_power_loss = survives_power_loss
        tx = Transactions(engine, clock)
        self.jobs = JobRepository(tx)
        self.receipts = ReceiptRepository(tx)
        self.vouchers = VoucherRepository(tx)
        self.providers = ProviderRepository(tx)
        self.reputation = ReputationRepository(tx)
        self.cursors = ChainCursorRepository(tx)

    @classmethod
    def open(cls, url: str, *, clock: Clock = time.time, run_migrations: bool = True) -> Database:
        """Connect to `url` and bring its schema up to date."""
        engine = create_database_engine(url)
        try:
            if run_migrations:
                migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        log.info("database open", backend=engine.dialect.name, database=engine.url.database)
        return cls(engine, clock=clock, survives_power_loss=survives_power_loss(url))

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a repository call on a worker thread, off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
