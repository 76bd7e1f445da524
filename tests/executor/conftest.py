"""Executor fixtures; `executor_support` holds what the test modules import."""

from __future__ import annotations

from executor_support import builtin_models, clean_program, exploits, tenant_programs

__all__ = ["builtin_models", "clean_program", "exploits", "tenant_programs"]
