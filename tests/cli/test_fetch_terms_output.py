"""How `node peers` and `models available` show a provider's terms for models it lacks (fetched
over the overlay): whether it fetches, the largest model it fetches and its cold-start price, in
80 columns."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.table import Table

from node.cli.output import fetching_providers_table, format_bytes, jsonable, peers_table
from node.domain.service import OfferedModelView, PeerView
from node.types import Address, FetchTerms

FETCHER = PeerView(
    "16Uiu2HAmQ5kYz3r9oJ6Xz2Jm9fVb9m7q8s1H4tX2uN5pL3yC8dEf",
    Address("0x" + "ab" * 20),
    True,
    True,
    ("/ip4/127.0.0.1/tcp/4001",),
    (OfferedModelView("ab" * 32, 10**12, True, "tensor", "fp32"),),
    ("cpu: x86_64",),
    fetch=FetchTerms(4 * 2**30, 10**12, 10**13),
)
HOLDER = PeerView(
    "16Uiu2HAmQ5kYz3r9oJ6Xz2Jm9fVb9m7q8s1H4tX2uN5pL3yC8dEg",
    Address("0x" + "cd" * 20),
    True,
    True,
    ("/ip4/127.0.0.1/tcp/4002",),
)
CLIENT = PeerView(
    "16Uiu2HAmQ5kYz3r9oJ6Xz2Jm9fVb9m7q8s1H4tX2uN5pL3yC8dEh", Address("0x" + "ef" * 20), True, False, ()
)


def rendered(table: Table) -> list[str]:
    console = Console(width=80, record=True)
    console.print(table)
    return console.export_text().splitlines()


def test_can_show_in_peers_whether_a_provider_fetches_models_its_limit_and_cold_start() -> None:
    lines = rendered(peers_table([FETCHER, HOLDER, CLIENT]))
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "fetches up" in text
    assert "to 4 GiB" in text
    assert "10000 gwei" in text  # the cold start
    assert "fetches no" in text  # the provider that does not fetch


def test_can_list_the_providers_that_fetch_models_they_lack() -> None:
    lines = rendered(fetching_providers_table([HOLDER, FETCHER, CLIENT]))
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│")]
    text = "".join(line.split("│")[1].strip() for line in rows)
    assert text == FETCHER.address  # the only one that fetches, its address whole
    assert "4 GiB" in rows[0]
    assert "1000 gwei" in rows[0]  # the job's price
    assert "10000 gwei" in rows[0]  # its cold start


def test_can_give_fetch_terms_as_json() -> None:
    shown = jsonable(FETCHER)
    assert shown["fetch"] == {
        "max_bytes": 4 * 2**30,
        "price_per_job_wei": 10**12,
        "cold_start_price_wei": 10**13,
    }
    assert jsonable(HOLDER)["fetch"] is None


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (900, "900 B"), (64 * 1024, "64 KiB"), (3 * 2**19, "1.5 MiB"), (4 * 2**30, "4 GiB")],
)
def test_can_show_a_size_in_the_unit_that_reads_best(size: int, shown: str) -> None:
    assert format_bytes(size) == shown
