"""Jobs: the state machine every job moves through and the pipeline that drives it.

- `state` — the pure transition function for both payment paths and both sides of a job;
- `service` — the façade the API and CLI call (`JobSpec`, the views, the `*Api` protocols);
- `client` / `pipeline` / `matching` / `payments` — the client side: submit, match a provider
  from live adverts, pay (cumulative voucher or per-attempt escrow), send, verify, reassign;
- `provider` / `runner` / `onchain` — the provider side: admission and payment checks, the
  sandboxed run and the signed receipt, and on-chain (dApp) jobs claimed from chain events;
- `models` / `node_info` — models, node and provider status for the API;
- `events` / `blobs` / `views` — change notifications, inputs and outputs on disk, views.

Every state change is persisted before it is acknowledged (see `node.storage`).
"""
