"""The executor's typed errors: each says what went wrong and what to do about it."""

from __future__ import annotations

from pydantic import ValidationError


class ExecutorError(RuntimeError):
    """Base class of every error the executor raises on purpose."""


class InvalidRequestError(ExecutorError, ValueError):
    """A generate request the engine must not see (empty, too long, bad sampling params).

    Raised before the engine is called, so the replica keeps serving.
    """


class ReplicaUnavailableError(ExecutorError):
    """The replica (its actor or its engine) is dead or does not answer."""

    def __init__(self, replica_id: str, reason: str) -> None:
        super().__init__(f"replica {replica_id} is unavailable: {reason}")
        self.replica_id = replica_id
        self.reason = reason


class ReplicaUnreachableError(ExecutorError):
    """The replica's actor did not answer this time (Ray's ``ActorUnavailableError``:
    a network blip, or an actor restarting). Not a death: a call is retried, and a
    health probe counts it as one miss; only ``failures`` misses in a row, or an
    ``ActorDiedError``, declare the replica dead."""

    def __init__(self, replica_id: str, reason: str) -> None:
        super().__init__(f"replica {replica_id} did not answer: {reason}")
        self.replica_id = replica_id
        self.reason = reason


def validation_problems(exc: ValidationError, what: str) -> str:
    """Pydantic's errors in one line, each with the field it names (``what`` when none)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or what}: {err['msg']}" for err in exc.errors()
    )
