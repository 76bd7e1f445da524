"""The executor's faults, each a subclass of the layer bases in `node.errors`."""

from __future__ import annotations

from node.errors import ExecutorError, ModelStoreError, SandboxError


class InvalidInput(ExecutorError):
    """A job's input is not a well-formed tensor payload for the model it names."""


class InputTooLarge(InvalidInput):
    """A job's input is larger than `executor.max_input_bytes`."""


class ModelFailed(ExecutorError):
    """The model raised while running a job (bad shapes, out-of-range token ids, out of memory)."""


class RequestRefused(ModelFailed):
    """The model cannot take this request as it is (a prompt longer than its context); the worker
    found it out and stays warm, and nothing else of its batch is lost."""


class WorkerCrashed(ExecutorError):
    """The worker serving a job died; it is replaced, the job is not retried."""


class JobTimedOut(SandboxError):
    """A job ran past its wall-clock limit; its worker was killed and replaced."""


class SandboxUnavailable(SandboxError):
    """No sandbox mode works on this machine; `gpunode doctor` says what to fix."""


class UnsafeModelFile(ModelStoreError):
    """A model file could run code when loaded (a pickle, or a `.pt2` with unsafe pickled parts)."""


class ProgramRefused(ModelStoreError):
    """A user program could carry one job's data into another's: it mutates its state, reads
    uninitialized memory, or returns something other than the outputs its manifest declares."""


class UnknownModel(ModelStoreError):
    """No model with this id is in the store."""
