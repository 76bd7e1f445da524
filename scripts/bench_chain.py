"""Chain layer figures: EIP-712 signing/recovery rate, keystore cost, ChainClient throughput.

    .venv/bin/python scripts/bench_chain.py [--transfers N] [--no-anvil] [--json]

Throughput is measured end to end through ChainClient (simulate where it applies, sign, nonce,
send, receipt) on the embedded py-evm chain and on anvil, sequentially and with every transfer in
flight at once from one account. Figures vary with the machine; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.chain.eip712 import Eip712Domain, recover_receipt_signer, sign_receipt
from node.chain.keys import NodeKey, create_keystore, unlock_keystore
from node.config import ChainSettings
from node.logging import configure_logging
from node.types import ResultReceipt, sha256


def bench_eip712(rounds: int) -> dict[str, float]:
    key = NodeKey.generate()
    domain = Eip712Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
    receipt = ResultReceipt(
        job_id=sha256(b"j"),
        model_id=sha256(b"m"),
        input_hash=sha256(b"i"),
        output_hash=sha256(b"o"),
        profile_hash=sha256(b"p"),
        provider=key.address,
    )
    start = time.perf_counter()
    for _ in range(rounds):
        signature = sign_receipt(key.private_key, domain, receipt)
    signed = time.perf_counter()
    for _ in range(rounds):
        recover_receipt_signer(domain, receipt, signature)
    recovered = time.perf_counter()
    reference = _eth_account_sign_rate(key, domain, receipt, max(rounds // 10, 1))
    return {
        "sign_per_s": rounds / (signed - start),
        "recover_per_s": rounds / (recovered - signed),
        "eth_account_sign_per_s": reference,
    }


def _eth_account_sign_rate(key: NodeKey, domain: Eip712Domain, receipt: ResultReceipt, rounds: int) -> float:
    message: dict[str, Any] = {
        "jobId": receipt.job_id,
        "modelId": receipt.model_id,
        "inputHash": receipt.input_hash,
        "outputHash": receipt.output_hash,
        "profileHash": receipt.profile_hash,
        "provider": receipt.provider,
    }
    types = {
        "ResultReceipt": [{"name": k, "type": "address" if k == "provider" else "bytes32"} for k in message]
    }
    domain_data = {
        "name": "gpunode",
        "version": "1",
        "chainId": domain.chain_id,
        "verifyingContract": domain.verifying_contract,
    }
    start = time.perf_counter()
    for _ in range(rounds):
        Account.sign_message(encode_typed_data(domain_data, types, message), key.private_key)
    return rounds / (time.perf_counter() - start)


def bench_keystore() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "keystore.json"
        start = time.perf_counter()
        create_keystore(path, "benchmark")
        created = time.perf_counter()
        unlock_keystore(path, "benchmark")
        unlocked = time.perf_counter()
    return {"create_s": created - start, "unlock_s": unlocked - created}


async def bench_transfers(rpc_url: str, transfers: int) -> dict[str, float]:
    client = await ChainClient.connect(ChainSettings(rpc_url=rpc_url, poll_interval_s=0.05))
    sender = client.dev_accounts()[0]
    recipients = [Account.create().address for _ in range(transfers)]
    start = time.perf_counter()
    for recipient in recipients:
        await client.transfer(recipient, 1, sender=sender)
    sequential = time.perf_counter()
    await asyncio.gather(*(client.transfer(recipient, 1, sender=sender) for recipient in recipients))
    concurrent = time.perf_counter()
    await client.close()
    return {
        "sequential_tx_per_s": transfers / (sequential - start),
        "concurrent_tx_per_s": transfers / (concurrent - sequential),
    }


async def run(transfers: int, with_anvil: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "eip712": bench_eip712(2000),
        "keystore_scrypt": bench_keystore(),
        "embedded": await bench_transfers("embedded", transfers),
    }
    if with_anvil:
        async with AnvilProcess() as anvil:
            figures["anvil"] = await bench_transfers(anvil.rpc_url, transfers)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transfers", type=int, default=100, help="transfers per backend and mode")
    parser.add_argument("--no-anvil", action="store_true", help="skip the anvil backend")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    configure_logging("WARNING")
    figures = asyncio.run(run(args.transfers, not args.no_anvil))
    if args.json:
        print(json.dumps(figures))
        return
    eip = figures["eip712"]
    reference = eip["eth_account_sign_per_s"]
    print(f"EIP-712 receipt sign      {eip['sign_per_s']:>10,.0f} /s  (eth_account: {reference:,.0f} /s)")
    print(f"EIP-712 receipt recover   {eip['recover_per_s']:>10,.0f} /s")
    keystore = figures["keystore_scrypt"]
    print(
        f"keystore (scrypt n=2^18)  create {keystore['create_s']:.2f} s, unlock {keystore['unlock_s']:.2f} s"
    )
    for backend in ("embedded", "anvil"):
        if backend in figures:
            f = figures[backend]
            print(
                f"{backend:<9} transfers        sequential {f['sequential_tx_per_s']:7.1f} tx/s, "
                f"concurrent {f['concurrent_tx_per_s']:7.1f} tx/s"
            )


if __name__ == "__main__":
    main()
