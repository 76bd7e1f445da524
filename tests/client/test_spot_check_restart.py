"""An exclusion outlives a restart: the provider that lost a spot check stays out of this client's
choices when the node starts again over the same database."""

from __future__ import annotations

import asyncio
import contextlib

from client_support import ClientSide

from node.client.model_specs import ModelSpecs
from node.client.reputation import ReputationBook
from node.client.spot_checks import SpotChecker
from node.scheduler.spot import check_lost


async def test_can_keep_a_provider_excluded_across_a_restart(client: ClientSide) -> None:
    liar = client.provider(price=1)
    honest = client.provider(price=2)
    book = ReputationBook(client.db)
    await book.update(liar.address, lambda r: check_lost(r, "lost a spot check of job 00"))

    await client.restart()
    checker = SpotChecker(client.jobs, ReputationBook(client.db), ModelSpecs(None), client.key, share=0.06)  # type: ignore[arg-type]
    running = asyncio.create_task(checker.run())
    try:
        await asyncio.wait_for(checker.ready.wait(), 10)
        assert checker.matchmaker.excluded == {liar.address}
        assert checker.book.get(liar.address).excluded
        # The liar is the cheapest, and still no job goes to it.
        view = await client.submit()
        done = await client.finished(view.job_id)
        assert done.provider == honest.address
        assert client.requests_to(liar) == []
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
