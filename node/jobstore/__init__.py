"""Where jobs are kept, for both roles: change notifications and job inputs and outputs on disk.

Every state change is persisted before it is acknowledged (see `node.storage`).
"""
