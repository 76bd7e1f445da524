"""The migrated schema is exactly the models' schema, on both backends; bad URLs fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from node.errors import ConfigError
from node.storage import Database
from node.storage.engine import create_database_engine, migrate, survives_power_loss
from node.storage.errors import DatabaseUnavailable
from node.storage.models import Base
from node.types import Hash32


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_database_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0005"
    finally:
        engine.dispose()


def test_can_open_an_already_migrated_database_again(database_url: str) -> None:
    Database.open(database_url).close()
    with Database.open(database_url) as db:
        assert db.jobs.list() == ()


def test_cannot_open_a_database_from_a_newer_release(database_url: str) -> None:
    Database.open(database_url).close()
    engine = create_database_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'ffffffff'"))
    finally:
        engine.dispose()
    with pytest.raises(DatabaseUnavailable, match="newer gpunode"):
        Database.open(database_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("mysql://root@localhost/gpunode", "unsupported database 'mysql'"),
        ("not a url", "is not a database URL"),
        ("sqlite:///gpunode.db?synchronous=off", "synchronous='off'"),
    ],
)
def test_cannot_open_an_unusable_url(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Database.open(url)


def test_cannot_reach_a_postgresql_server_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        Database.open(f"postgresql://nobody@/gpunode?host={tmp_path}&connect_timeout=2")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'g.db'}") as db, db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 10_000


@pytest.mark.parametrize(
    ("query", "level", "power_safe"),
    [("", 1, False), ("?synchronous=normal", 1, False), ("?synchronous=FULL", 2, True)],
)
def test_sqlite_durability_is_chosen_in_the_url(
    tmp_path: Path, query: str, level: int, power_safe: bool
) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'g.db'}{query}") as db, db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA synchronous").scalar_one() == level
        assert db.survives_power_loss is power_safe
    assert (tmp_path / "g.db").exists()


def test_postgresql_commits_survive_power_loss() -> None:
    assert survives_power_loss("postgresql+psycopg://gpunode@127.0.0.1/gpunode")


def test_cannot_put_a_sqlite_database_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(DatabaseUnavailable, match="cannot create the directory"):
        Database.open(f"sqlite:///{blocker / 'gpunode.db'}")


def test_can_read_attempts_stored_before_they_kept_their_price(database_url: str) -> None:
    engine = create_database_engine(database_url)
    job_id = b"\x01" * 32
    try:
        migrate(engine, "0001")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs (job_id, role, payment, state, model_id, input_hash, price_wei,"
                    " client, deadline, reason, version, created_at, updated_at)"
                    " VALUES (:job_id, 'client', 'voucher', 'paid', :hash, :hash, '100', :client,"
                    " NULL, NULL, 2, 0, 0)"
                ),
                {"job_id": job_id, "hash": b"\x02" * 32, "client": "0x" + "aa" * 20},
            )
            connection.execute(
                text(
                    "INSERT INTO job_attempts (job_id, number, provider, paid, outcome)"
                    " VALUES (:job_id, 0, :provider, true, NULL)"
                ),
                {"job_id": job_id, "provider": "0x" + "bb" * 20},
            )
    finally:
        engine.dispose()
    with Database.open(database_url) as db:
        (attempt,) = db.jobs.get(Hash32(job_id)).status.attempts
    assert attempt.paid
    assert attempt.price_wei is None
