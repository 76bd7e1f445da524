"""Continuous batching of generation requests on one warm causal LM, inside the worker.

Requests join and leave the running batch between decoding steps. A request joins with its prompt
run on its own (its prefill, a chunk at a time between the batch's decoding steps, so a long prompt
does not hold the running streams still), then its KV cache is merged into the batch's, the shorter
side padded on the left; each decoding step runs one forward pass for every request in the batch,
each with its own position and attention mask over its own tokens, and each request samples from its
own logits with its own seeded generator, stop sequences and budget. A request that is done leaves
at once; the columns no request needs any more are cut from the cache.

Tokens do not depend on the batch's other requests beyond floating-point rounding: matrix products
over more rows may round otherwise. The node records how many requests shared a request's batch in
its execution profile, so a receipt for a batched request never claims the profile of a lone one.
"""

from __future__ import annotations

import json
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from node.executor import framing
from node.executor.framing import Kind
from node.executor.hf_runtime import Decoding, LoadedModel

Describe = Callable[[BaseException], dict[str, str]]  # a model's error as the worker reports it


class DecodeBatch:
    """The requests being decoded together, by key, and their shared, left-padded KV cache."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.keys: list[int] = []
        self.rows: list[Decoding] = []
        self._cache: Any = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=model.device)  # 1: a real token
        self._positions: list[int] = []  # each row's next position
        self._padded = False  # whether any row has padding (else the model needs no mask)

    def join(self, key: int, decoding: Decoding) -> bool:
        """Run `decoding`'s whole prompt and take its first token; True if that already finished
        it (then it never joins the batch)."""
        prefill = Prefill(self._model, key, decoding)
        prefill.run(len(decoding.ids))
        return self.admit(prefill)

    def admit(self, prefill: Prefill) -> bool:
        """Take the first token of a request whose prompt is all run, and add it to the batch;
        True if that token already finished it (then it never joins)."""
        if self.rows and self._model.unbatched is not None:
            raise RuntimeError(f"model {self._model.manifest['name']} cannot batch: {self._model.unbatched}")
        decoding = prefill.decoding
        if prefill.logits is None:
            raise RuntimeError("a request joined the batch before its prompt was all run")
        if decoding.take(prefill.logits):
            return True
        self._merge(prefill.cache, len(decoding.ids))
        key = prefill.key
        self.keys.append(key)
        self.rows.append(decoding)
        self._positions.append(len(decoding.ids))
        return False

    def step(self) -> list[tuple[int, Decoding]]:
        """One decoding step for every request in the batch; those it finished, which leave."""
        device = self._model.device
        tokens = torch.tensor([[row.last_token] for row in self.rows], device=device)
        positions = torch.tensor([[p] for p in self._positions], device=device)
        mask = torch.cat(
            [self._mask, torch.ones((len(self.rows), 1), dtype=torch.long, device=device)], dim=1
        )
        out = self._model.model(
            input_ids=tokens,
            attention_mask=mask if self._padded else None,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        self._cache, self._mask = out.cache, mask
        self._positions = [p + 1 for p in self._positions]
        logits = out.logits[:, -1].float()
        done = [i for i, row in enumerate(self.rows) if row.take(logits[i])]
        finished = [(self.keys[i], self.rows[i]) for i in done]
        self._keep([i for i in range(len(self.rows)) if i not in done])
        return finished

    def drop(self, key: int) -> Decoding | None:
        """Take a request out of the batch (its caller went away); None if it is not in it."""
        if key not in self.keys:
            return None
        index = self.keys.index(key)
        row = self.rows[index]
        self._keep([i for i in range(len(self.rows)) if i != index])
        return row

    def _merge(self, cache: Any, length: int) -> None:
        width = self._mask.shape[1]
        total = max(width, length)
        device = self._model.device
        row_mask = torch.zeros((1, total), dtype=torch.long, device=device)
        row_mask[0, total - length :] = 1
        if self._cache is None:
            self._cache, self._mask, self._padded = cache, row_mask, False
            return
        for ours, theirs in zip(self._cache.layers, cache.layers, strict=True):
            ours.keys = torch.cat([_pad_left(ours.keys, total), _pad_left(theirs.keys, total)])
            ours.values = torch.cat([_pad_left(ours.values, total), _pad_left(theirs.values, total)])
        padded = torch.nn.functional.pad(self._mask, (total - width, 0))
        self._mask = torch.cat([padded, row_mask])
        self._padded = not bool(self._mask.all())

    def _keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        self.keys = [self.keys[i] for i in indices]
        self.rows = [self.rows[i] for i in indices]
        self._positions = [self._positions[i] for i in indices]
        if not indices:
            self._cache, self._mask = None, self._mask[:0, :0]
            return
        select = torch.tensor(indices, device=self._model.device)
        mask = self._mask[select]
        # Columns that are padding in every row left are needed by no one: cut them.
        start = int(torch.argmax(mask.any(dim=0).to(torch.int8)))
        self._mask = mask[:, start:]
        self._padded = not bool(self._mask.all())
        for layer in self._cache.layers:
            layer.keys = layer.keys[select, :, start:]
            layer.values = layer.values[select, :, start:]


class Prefill:
    """A request's prompt, run on a cache of its own a chunk at a time before it joins the batch:
    a long prompt's chunks go between the running batch's decoding steps, so the streams already
    running go on producing tokens while it is read. The prompt's last token's logits give its first
    token; the positions and the cache each chunk adds are those one pass over the prompt makes."""

    def __init__(self, model: LoadedModel, key: int, decoding: Decoding) -> None:
        self._model = model
        self.key = key
        self.decoding = decoding
        self.cache: Any = None
        self.logits: torch.Tensor | None = None  # once the whole prompt has run
        self._done = 0  # prompt tokens run so far

    @property
    def left(self) -> int:
        return len(self.decoding.ids) - self._done

    def run(self, tokens: int) -> int:
        """Run up to `tokens` more of the prompt; how many it ran."""
        chunk = self.decoding.ids[self._done : self._done + max(1, tokens)]
        device = self._model.device
        out = self._model.model(
            input_ids=torch.tensor([chunk], device=device),
            position_ids=torch.arange(self._done, self._done + len(chunk), device=device).unsqueeze(0),
            cache=self.cache,
            use_cache=True,
        )
        self.cache = out.cache
        self._done += len(chunk)
        if not self.left:
            self.logits = out.logits[0, -1].float()
        return len(chunk)


def _pad_left(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """[batch, heads, positions, dim] padded with zeros on the left to `length` positions."""
    return torch.nn.functional.pad(tensor, (0, 0, length - tensor.shape[2], 0))


# Prompt tokens a worker runs between two decoding steps when none is configured.
PREFILL_CHUNK_TOKENS = 512


def serve(
    sock: socket.socket,
    model: LoadedModel,
    max_body: int,
    describe: Describe,
    *,
    prefill_chunk: int = PREFILL_CHUNK_TOKENS,
    stream_interval_s: float = 0.0,
) -> None:
    """The worker's loop for a generation model: each RUN is one request, with its own request id,
    that joins the batch; its TOKENS, then its RESULT (or ERROR), carry that id. A CANCEL for it
    ends it with what it made so far. Messages are read between decoding steps, without waiting
    while the batch has work.

    Joining requests' prompts run at most `prefill_chunk` tokens between two decoding steps (in
    order of arrival, several short ones in one turn), so a long prompt does not stall the
    running streams for its whole prefill. A model that cannot batch (`LoadedModel.unbatched`
    says why) decodes one request at a time: the others wait their turn, in order of arrival.
    A request's first text goes at once, the rest at most every `stream_interval_s` (all of it
    before its RESULT)."""
    batch = DecodeBatch(model)
    joining = _Joining(model, batch)
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    while True:
        while poll.poll(0 if batch.rows or joining else -1):
            message = framing.recv_blocking(sock, max_body=max_body)
            if message is None or message.kind is Kind.SHUTDOWN:
                return
            if message.kind is Kind.CANCEL:
                cancelled = batch.drop(message.request_id) or joining.drop(message.request_id)
                if cancelled is not None:  # else finished before the CANCEL came
                    cancelled.finish = "cancelled"
                    _answer(sock, message.request_id, cancelled)
            elif message.kind is Kind.RUN and message.count == 1:
                decoding = _decoding(
                    sock, model, message.request_id, message.items[0], describe, stream_interval_s
                )
                if decoding is not None:
                    joining.add(message.request_id, decoding)
            else:
                raise framing.FramingError(f"worker got an unexpected {message.kind.name} message")
        _prefill(sock, joining, prefill_chunk, describe)
        if not batch.rows:
            continue
        try:
            finished = batch.step()
        except (framing.FramingError, KeyboardInterrupt):
            raise
        except Exception as error:  # the model's fault: every request in the step gets it
            body = json.dumps(describe(error)).encode()
            for key in list(batch.keys):
                batch.drop(key)
                framing.send_blocking(sock, Kind.ERROR, key, body)
            continue
        for key, decoding in finished:
            _answer(sock, key, decoding)


class _Joining:
    """Requests on their way into the batch, in order of arrival: their prompts being run."""

    def __init__(self, model: LoadedModel, batch: DecodeBatch) -> None:
        self._model = model
        self._batch = batch
        self._queue: deque[Prefill] = deque()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def add(self, key: int, decoding: Decoding) -> None:
        self._queue.append(Prefill(self._model, key, decoding))

    def drop(self, key: int) -> Decoding | None:
        for prefill in self._queue:
            if prefill.key == key:
                self._queue.remove(prefill)
                return prefill.decoding
        return None

    def next(self) -> Prefill | None:
        """The prompt to run now; None while a model that cannot batch has a request decoding."""
        if not self._queue or (self._model.unbatched is not None and self._batch.rows):
            return None
        return self._queue[0]

    def admit(self, prefill: Prefill) -> bool:
        """`prefill`, whose prompt is all run, leaves the queue for the batch (see `DecodeBatch.admit`)."""
        self._queue.remove(prefill)
        return self._batch.admit(prefill)


def _prefill(sock: socket.socket, joining: _Joining, budget: int, describe: Describe) -> None:
    """Run up to `budget` tokens of the joining prompts; the requests whose prompt is all run join
    the batch (or are answered at once, when their first token ends them)."""
    while budget > 0 and (prefill := joining.next()) is not None:
        try:
            budget -= prefill.run(budget)
            if prefill.left:
                return
            done = joining.admit(prefill)
        except (framing.FramingError, KeyboardInterrupt):
            raise
        except Exception as error:  # a failed prefill; the others go on
            joining.drop(prefill.key)
            framing.send_blocking(sock, Kind.ERROR, prefill.key, json.dumps(describe(error)).encode())
            continue
        if done:
            _answer(sock, prefill.key, prefill.decoding)


def _decoding(
    sock: socket.socket, model: LoadedModel, key: int, item: bytes, describe: Describe, interval_s: float
) -> Decoding | None:
    """The request, checked against the model (a refused one is answered at once), or None."""
    try:
        return Decoding(model, json.loads(item), _emitter(sock, key), interval_s)
    except (framing.FramingError, KeyboardInterrupt):
        raise
    except Exception as error:  # a refused request; the others go on
        framing.send_blocking(sock, Kind.ERROR, key, json.dumps(describe(error)).encode())
        return None


def _answer(sock: socket.socket, key: int, decoding: Decoding) -> None:
    framing.send_blocking(sock, Kind.RESULT, key, framing.pack_items([decoding.result()]), 1)


def _emitter(sock: socket.socket, key: int) -> Callable[[str], None]:
    def emit(text: str) -> None:
        # Escaped, 4000 characters stay well under CONTROL_LIMIT: a long burst goes as several.
        for start in range(0, len(text), 4000):
            body = json.dumps({"index": 0, "text": text[start : start + 4000]}).encode()
            framing.send_blocking(sock, Kind.TOKENS, key, body)

    return emit
