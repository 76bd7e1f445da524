"""The sandboxed executor: devices, model store, bubblewrap sandbox, warm worker pool, receipts.

Torch is imported only inside worker and probe processes, never by the modules a node imports to
run jobs; `ExecutorPool` is the entry point (`node.executor.pool`).
"""
