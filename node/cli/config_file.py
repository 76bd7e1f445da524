"""Edits to a node's config.toml that commands make for the user, keeping its comments."""

from __future__ import annotations

import re
from pathlib import Path

from node.config import load_settings
from node.errors import ConfigError


def set_in_section(path: Path, section: str, values: dict[str, str]) -> None:
    """Set `key = "value"` for each of `values` in `[section]`, replacing the key's line (or its
    commented-out example) where there is one; the result must still load."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", hint="run `gpunode init` first")
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        lines += ["", f"[{section}]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for key, value in values.items():
        line = f'{key} = "{value}"'
        pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
        found = next((i for i in range(start + 1, end) if pattern.match(lines[i].strip())), None)
        if found is None:
            lines.insert(end, line)
            end += 1
        else:
            lines[found] = line
    text = "\n".join(lines) + "\n"
    previous = path.read_text()
    path.write_text(text)
    try:
        load_settings(path)
    except ConfigError:
        path.write_text(previous)
        raise
