"""Alembic environment: migrations run in process on a connection `node.storage.engine` passes in."""

from __future__ import annotations

from alembic import context

from node.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("gpunode migrations run through node.storage.engine.migrate(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
