"""A provider's side of a job: admission, running, on-chain jobs, delivery.

- `jobs` — `ProviderJobs`: admission (price, capacity, model) and payment checks for a request;
- `runner` — `JobRunner`: the sandboxed run and the signed receipt;
- `onchain` — `OnchainJobs`: dApp jobs claimed from chain events and delivered on-chain;
- `delivery` — putting an escrowed result on-chain, retried until the job's deadline;
- `models` / `info` — the provider's models and what it reports about itself.
"""
