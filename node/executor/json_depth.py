"""How deep untrusted JSON nests, found before `json.loads` recurses into it.

`json.loads` recurses once per level: deep nesting raises RecursionError, or, where a library in
the process has raised the recursion limit, overflows the C stack and kills the process with a
segmentation fault. Job inputs and worker messages are shallow by design, so anything deeper than
they can be is refused from a scan at C speed: strings removed, brackets kept, innermost pairs
peeled off one level at a time.
"""

from __future__ import annotations

import re

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, max_depth: int) -> bool:
    """Whether the brackets outside strings nest deeper than `max_depth` (or do not balance)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return bool(brackets)
