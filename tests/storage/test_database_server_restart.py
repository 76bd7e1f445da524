"""A PostgreSQL server that goes away fails calls clearly, and the node carries on when it is back."""

from __future__ import annotations

import os

import pytest
from postgres_cluster import PostgresCluster

from node.domain.state import JobState, Matched, PaymentPath, Role
from node.storage import Database, NewJob
from node.storage.errors import DatabaseUnavailable
from node.types import Address, Hash32


@pytest.mark.integration
def test_can_carry_on_after_the_database_server_restarts(own_postgres_cluster: PostgresCluster) -> None:
    cluster = own_postgres_cluster
    url = cluster.server.url(cluster.server.create_database())
    with Database.open(url) as db:
        job = db.jobs.create(
            NewJob(
                job_id=Hash32(os.urandom(32)),
                role=Role.CLIENT,
                payment=PaymentPath.VOUCHER,
                model_id=Hash32(b"\x01" * 32),
                input_hash=Hash32(b"\x02" * 32),
                price_wei=5,
            )
        )
        cluster.stop()
        with pytest.raises(DatabaseUnavailable, match=r"check that storage\.url is reachable"):
            db.jobs.apply(job.job_id, Matched(provider=Address("0x" + "aa" * 20)))
        cluster.start()
        assert db.jobs.get(job.job_id) == job
        moved = db.jobs.apply(job.job_id, Matched(provider=Address("0x" + "aa" * 20)), expected_version=1)
        assert moved.state == JobState.MATCHED
