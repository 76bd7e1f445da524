"""End-to-end fixtures: see `e2e_support` for the devnet the tests share."""
