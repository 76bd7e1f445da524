"""Storage: SQLAlchemy models, repositories and Alembic migrations (the only package importing sqlalchemy).

`Database.open(settings.storage.url)` gives `jobs`, `receipts`, `vouchers`, `providers` and `cursors`
repositories; they take and return frozen values (`node.domain.records`, `node.domain.state`), never
ORM rows. See `node.storage.database` for why they are synchronous and how to call them from asyncio.
"""

from node.domain.records import (
    JobEventRecord,
    JobRecord,
    KnownProvider,
    NewJob,
    ProviderReputation,
    SignedReceipt,
    SignedVoucher,
    StoredReceipt,
    StoredVoucher,
)
from node.storage.database import Database

__all__ = [
    "Database",
    "JobEventRecord",
    "JobRecord",
    "KnownProvider",
    "NewJob",
    "ProviderReputation",
    "SignedReceipt",
    "SignedVoucher",
    "StoredReceipt",
    "StoredVoucher",
]
