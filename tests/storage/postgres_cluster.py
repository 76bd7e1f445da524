"""A throwaway PostgreSQL 15 cluster for the storage tests, run as the `postgres` OS user when root."""

from __future__ import annotations

import contextlib
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


class PostgresCluster:
    """A throwaway PostgreSQL cluster listening only on a unix socket in a temporary directory."""

    def __init__(self) -> None:
        self.bin_dir = _pg_bin()
        self.prefix = _as_postgres_user()
        self.root = Path(tempfile.mkdtemp(prefix="gpunode-pg-"))
        self.data = self.root / "data"
        self.server = PostgresServer(socket_dir=self.root / "sock")
        self.server.socket_dir.mkdir()
        if self.prefix:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.server.socket_dir, "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: object) -> None:
        subprocess.run([*self.prefix, self.bin_dir / tool, *map(str, args)], check=True, capture_output=True)

    def start(self) -> None:
        # pg_ctl -w returns once the server accepts connections.
        options = f"-k {self.server.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "server.log", "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self.prefix, self.bin_dir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
