"""Executor fixtures; `executor_support` holds what the test modules import."""

from __future__ import annotations

from executor_support import builtin_models, clean_program, exploits, tenant_programs
from hf_support import hf_models

__all__ = ["builtin_models", "clean_program", "exploits", "hf_models", "tenant_programs"]
