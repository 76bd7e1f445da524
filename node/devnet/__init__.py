"""A local marketplace: the building blocks (`Marketplace`) and the `gpunode devnet` run."""

from node.devnet.marketplace import Marketplace, make_builtin_model, sample_input
from node.devnet.scenario import DevnetOptions, DevnetSummary, ProviderSummary, Serving, run_devnet

__all__ = [
    "DevnetOptions",
    "DevnetSummary",
    "Marketplace",
    "ProviderSummary",
    "Serving",
    "make_builtin_model",
    "run_devnet",
    "sample_input",
]
