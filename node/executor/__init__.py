"""The sandboxed executor: devices, model store, bubblewrap sandbox, warm worker pool, receipts.

Torch is imported only inside worker and probe processes, never by the modules a node imports to
run jobs. What other layers use:

- `pool.ExecutorPool(settings.executor, store)`: `async with` it, then
  `await pool.run(model_id, input_bytes, client=address) -> result.ExecutionResult` (output
  bytes, sha256 hashes computed outside the sandbox, `ExecutionProfile`; user programs batch only
  one client's jobs); `await pool.warm(model_id)`; `pool.lanes()`
  for the models kept warm. Faults are `node.errors.ExecutorError` subclasses (`errors.py`).
- `result.build_receipt(job_id=, model_id=, input_hash=, result=, provider=)` -> the unsigned
  `node.types.ResultReceipt`; sign it with `node.chain.eip712.sign_receipt`.
- `store.ModelStore(settings.executor.model_dir, settings.executor.model_cache_bytes)`; model ids
  are hex sha256 of the canonical manifest (`bytes.fromhex` gives the bytes32). User programs
  (`.pt2`) must follow `program_rules`; workers run them with `program_loader`, never
  `torch.export.load`.
- `wire.parse_payload`: job inputs and outputs are safetensors bytes of named tensors, except for
  Hugging Face models (`store.import_hf_dir`, checked by `hf_model`): their jobs are JSON requests
  (`hf_requests`: `generate` with a prompt or chat messages and sampling settings, `embed` with
  texts), run by `hf_runtime` in the worker; `pool.run(..., on_tokens=)` streams a generation's
  text as it is produced, and cancelling the call stops it in the worker. `hf_tiny` writes small
  causal LMs with seeded weights for tests and benchmarks.
- `inventory.take_inventory()` -> `Inventory` (devices, start-up benchmark figures for adverts).
- `checks.run_checks(settings.executor)`: what `gpunode doctor` shows.
"""
