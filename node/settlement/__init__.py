"""Settlement: batched voucher redemption, finalization and refunds of on-chain jobs, withdrawals,
and reconciling local state with the chain on start-up (the chain is the source of truth)."""
