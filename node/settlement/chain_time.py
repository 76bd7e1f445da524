"""The chain's clock, as settlement reads it: the latest block's timestamp."""

from __future__ import annotations

import time

from node.chain.market import JobMarket
from node.errors import ChainError


async def chain_time(market: JobMarket) -> float:
    """The latest block's timestamp; a `ChainError` when the chain cannot be reached, so a
    settlement round fails and the next one tries again instead of the node stopping."""
    try:
        block = await market.client.w3.eth.get_block("latest")
    except ChainError:
        raise
    except Exception as exc:
        # web3 raises its transport's own errors (aiohttp, OSError, timeouts) for a plain read.
        raise ChainError(
            f"reading the chain's latest block failed: {type(exc).__name__}: {exc}",
            hint="is the chain node running? check chain.rpc_url",
        ) from exc
    return float(block["timestamp"]) if block else time.time()
