"""Jobs: the state machine every job moves through (`node.jobs.state`, pure) and the pipeline that
drives one job through it, persisting each step before acknowledging it."""
