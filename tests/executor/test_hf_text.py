"""Incremental detokenization for streaming: what is sent never changes afterwards, text that
ends mid-character waits for the rest, and invalid bytes do not hold the stream up for ever."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from node.executor.hf_runtime import _IncrementalText, _streamable


def all_bytes_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def stream(tokenizer: Tokenizer, tokens: list[int], stops: tuple[str, ...] = ()) -> tuple[list[str], str]:
    text, emitted, pieces = _IncrementalText(tokenizer), 0, []
    for token in tokens:
        so_far = text.add(token)
        ready = _streamable(so_far, stops, text.settled)
        if ready > emitted:
            pieces.append(so_far[emitted:ready])
            emitted = ready
    if len(text.text) > emitted:
        pieces.append(text.text[emitted:])
    return pieces, text.text


@pytest.mark.parametrize("seed", range(50))
def test_can_stream_random_bytes_as_pieces_adding_up_to_the_full_decode(seed: int) -> None:
    tokenizer = all_bytes_tokenizer()
    rng = random.Random(seed)
    tokens = [rng.randrange(256) for _ in range(200)]
    pieces, text = stream(tokenizer, tokens)
    assert "".join(pieces) == text == tokenizer.decode(tokens)


def test_can_hold_a_character_until_its_last_byte_comes() -> None:
    tokenizer = all_bytes_tokenizer()
    tokens = tokenizer.encode("caf\u00e9 \u2603!").ids  # é is 2 bytes, the snowman 3
    text, seen = _IncrementalText(tokenizer), []
    for token in tokens:
        so_far = text.add(token)
        seen.append(so_far[: _streamable(so_far, (), text.settled)])
    assert "\ufffd" not in "".join(seen)
    assert seen[-1] == "caf\u00e9 \u2603!"


def test_cannot_stall_on_bytes_that_never_form_a_character() -> None:
    tokenizer = all_bytes_tokenizer()
    stray = [tokenizer.encode("\u00e9").ids[1]] * 40  # a continuation byte, alone, forty times
    text = _IncrementalText(tokenizer)
    for token in stray:
        so_far = text.add(token)
    assert _streamable(so_far, (), text.settled) >= 30  # all but the last few are sent
