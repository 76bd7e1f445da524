"""A client's side of a job: submit, match a provider, pay, send, check the result, reassign.

- `jobs` — `ClientJobs`, the façade's client half (submit, watch, cancel, deposit);
- `pipeline` — `ClientPipeline`, which drives one job from matching to a checked result;
- `matching` — choosing a provider from live adverts and the on-chain registry;
- `payments` — cumulative vouchers and per-attempt escrow terms;
- `views` / `recent` — what a client sees of a job, and the results it answered lately.
"""
