"""The chain layer: everything gpunode says to and hears from Ethereum.

- `client`    ChainClient over AsyncWeb3 (embedded py-evm or any JSON-RPC URL): simulate, sign,
              send with per-sender nonces, await receipts, decode reverts into TransactionReverted.
- `revert`    custom errors, Error(string) and Panic(uint256) decoded from contract ABIs.
- `eip712`    ResultReceipt and Voucher digests, signing and recovery (low-s only).
- `keys`      NodeKey and its encrypted v3 keystore.
- `follower`  contract events with a confirmation depth and a resumable cursor.
- `anvil`     a local anvil dev chain as an async context manager.
- `artifacts`, `registry`, `market`, `deploy`  compiled contracts and their typed wrappers.

Submodules are imported by name; this package imports nothing so that a light user (the
EIP-712 helpers) does not pay for web3.
"""
