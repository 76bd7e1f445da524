"""The job domain: states per role and their transitions, records and the façade's values. Pure: no I/O.

- `state` — the transition function for both payment paths and both sides of a job;
- `records` — the frozen records the store takes and returns (`JobRecord`, receipts, vouchers);
- `service` — the façade the API and CLI call (`JobSpec`, the views, the `*Api` protocols).
"""
