"""Executor fixtures; `executor_support` holds what the test modules import."""

from __future__ import annotations

from executor_support import builtin_models

__all__ = ["builtin_models"]
