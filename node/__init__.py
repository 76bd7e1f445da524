"""gpunode: a node for a decentralized GPU inference marketplace."""

__version__ = "0.1.0"
