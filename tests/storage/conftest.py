"""Storage fixtures: every storage test runs on SQLite and on a real PostgreSQL 15 started here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_cluster import PostgresCluster, PostgresServer, postgres_cluster

from node.storage import Database


@pytest.fixture
def own_postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, for tests that stop and start the server."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the whole session; each test gets its own database in it."""
    with postgres_cluster() as cluster:
        yield cluster.server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gpunode.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.open(database_url)
    try:
        yield database
    finally:
        database.close()
