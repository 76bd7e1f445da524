"""A provider node in its own process, so a test can SIGKILL it mid-job.

Run as `python provider_node.py CONFIG.json` (settings as JSON and the node's private key in hex).
It prints the node's dialable address on one line once the node is ready, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from node.app import Node
from node.chain.keys import NodeKey
from node.config import Settings
from node.logging import configure_logging


async def main(config: dict[str, Any]) -> None:
    # stdout carries the address line; logs go to stderr.
    configure_logging("WARNING")
    settings = Settings.model_validate(config["settings"])
    node = Node(settings, key=NodeKey.from_private_key(bytes.fromhex(config["key"])), serve_api=False)
    async with node.running():
        print(node.host.addrs[0], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
