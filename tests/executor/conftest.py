"""Executor fixtures: see `executor_support` for the helpers test modules import."""

from __future__ import annotations

from executor_support import builtin_models

__all__ = ["builtin_models"]
