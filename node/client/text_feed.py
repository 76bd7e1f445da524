"""Streamed text of the jobs in flight, for those who follow it (`gpunode job submit --stream`).

The pipeline publishes each piece a provider streams; a follower gets everything published so far
then each new piece, until the job's attempt ends. A follower that comes late misses nothing, and
one that is slow never holds the pipeline (its queue is unbounded; a job's text is bounded by the
provider's output limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from node.types import Hash32


@dataclass
class _Feed:
    pieces: list[str] = field(default_factory=list)
    followers: list[asyncio.Queue[str | None]] = field(default_factory=list)
    ended: bool = False


class TextFeeds:
    def __init__(self) -> None:
        self._feeds: dict[Hash32, _Feed] = {}

    def open(self, job_id: Hash32) -> None:
        """A job that streams: followers wait for its text from now on (a new attempt starts over)."""
        feed = self._feeds.setdefault(job_id, _Feed())
        feed.pieces.clear()
        feed.ended = False

    def publish(self, job_id: Hash32, text: str) -> None:
        feed = self._feeds.get(job_id)
        if feed is None or feed.ended or not text:
            return
        feed.pieces.append(text)
        for follower in feed.followers:
            follower.put_nowait(text)

    def text(self, job_id: Hash32) -> str:
        feed = self._feeds.get(job_id)
        return "".join(feed.pieces) if feed is not None else ""

    def close(self, job_id: Hash32) -> None:
        """The job is over: followers get the end of its stream, and its text is forgotten."""
        feed = self._feeds.pop(job_id, None)
        if feed is None:
            return
        for follower in feed.followers:
            follower.put_nowait(None)

    def streams(self, job_id: Hash32) -> bool:
        return job_id in self._feeds

    async def follow(self, job_id: Hash32) -> AsyncIterator[str]:
        """The job's text so far, then each new piece until the job ends; nothing for a job that
        does not stream (or has ended)."""
        feed = self._feeds.get(job_id)
        if feed is None:
            return
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for earlier in feed.pieces:
            queue.put_nowait(earlier)
        feed.followers.append(queue)
        try:
            while (piece := await queue.get()) is not None:
                yield piece
        finally:
            if queue in feed.followers:
                feed.followers.remove(queue)
