"""Storage fixtures: every storage test runs on SQLite and on a real PostgreSQL 15 started here."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from node.storage import Database

_db_numbers = itertools.count()


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.socket_dir}"

    def create_database(self) -> str:
        name = f"gpunode_test_{os.getpid()}_{next(_db_numbers)}"
        with psycopg.connect(
            host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return name


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries are missing; run `bash scripts/dev.sh setup` to install them")
    return Path(found[-1]).parent


def _as_postgres_user() -> list[str]:
    # initdb refuses to run as root; run the server as the unprivileged `postgres` account.
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs a `postgres` OS user; run `bash scripts/dev.sh setup`")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster listening only on a unix socket in a temporary directory."""
    bin_dir = _pg_bin()
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="gpunode-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(
        [*prefix, bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-k {sock} -c listen_addresses='' -c fsync=off -c max_connections=50"
    subprocess.run(
        [*prefix, bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer(socket_dir=sock)
    finally:
        subprocess.run(
            [*prefix, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


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
