"""What reaches a user's terminal: the node's own records, not its libraries' chatter."""

from __future__ import annotations

import logging

import pytest

from node.logging import configure_logging, get_logger


def test_library_chatter_stays_off_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        for library in ("alembic.runtime.migration", "libp2p.network", "zeroconf", "multiaddr"):
            logging.getLogger(library).info("Running upgrade 0001 -> 0002")
        get_logger("node.test").info("node_ready")
        logging.getLogger("alembic").warning("a real problem")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "Running upgrade" not in err
    assert "node_ready" in err
    assert "a real problem" in err
