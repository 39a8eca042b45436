"""Unit tests of the health monitor (with stand-in replica handles) and of the control
channel through which ``python -m executor drain`` reaches a running executor."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from executor.errors import ExecutorError, ReplicaUnavailableError, ReplicaUnreachableError
from executor.fleet.control import ControlChannel
from executor.fleet.health import HealthConfig, HealthMonitor
from executor.fleet.registry import ReplicaRegistry


class StandIn:
    """A replica handle whose health answers follow a script."""

    def __init__(self, replica_id: str, script: list[str]) -> None:
        self.replica_id = replica_id
        self.script = script

    async def ahealth(self, timeout: float) -> dict[str, Any]:
        step = self.script.pop(0) if self.script else "ok"
        if step == "hang":
            raise TimeoutError
        if step == "gone":
            raise ReplicaUnavailableError(self.replica_id, "engine processes [7] are gone")
        if step == "error":
            raise RuntimeError("boom")
        if step == "unavailable":
            raise ReplicaUnreachableError(self.replica_id, "ActorUnavailableError")
        return {"ok": True}


def run_checks(replicas: dict[str, Any], config: HealthConfig, rounds: int) -> list[tuple]:
    dead: list[tuple[str, str]] = []
    registry = ReplicaRegistry()
    for handle in replicas.values():
        registry.add(handle)
    monitor = HealthMonitor(config, registry, lambda rid, why: dead.append((rid, why)))

    async def go() -> None:
        for _ in range(rounds):
            await monitor.check()

    asyncio.run(go())
    return dead


def test_misses_in_a_row_declare_a_replica_dead_an_answer_resets_them() -> None:
    config = HealthConfig(timeout_s=5, failures=2)
    replicas = {
        "flaky": StandIn("flaky", ["hang", "ok", "hang", "ok"]),  # never twice in a row
        "hung": StandIn("hung", ["hang", "error"]),
        "fine": StandIn("fine", []),
    }
    dead = run_checks(replicas, config, rounds=4)
    assert dead == [("hung", "health check failed: boom, 2 times in a row")]


def test_an_unavailable_actor_is_a_miss_not_a_death() -> None:
    """Ray's ActorUnavailableError is transient: one is a miss; ``failures`` in a row kill."""
    config = HealthConfig(timeout_s=5, failures=2)
    replicas = {
        "blip": StandIn("blip", ["unavailable", "ok", "unavailable"]),
        "away": StandIn("away", ["unavailable", "unavailable"]),
    }
    dead = run_checks(replicas, config, rounds=3)
    assert dead == [("away", "actor unavailable (ActorUnavailableError), 2 times in a row")]


def test_a_gone_engine_is_dead_at_once() -> None:
    dead = run_checks({"r0": StandIn("r0", ["gone"])}, HealthConfig(failures=3), rounds=1)
    assert dead == [("r0", "engine processes [7] are gone")]


def test_health_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="failures >= 1"):
        HealthConfig(failures=0)


def test_a_command_is_claimed_once_by_the_executor_that_serves_the_replica(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    with ControlChannel(path) as operator, ControlChannel(path) as executor:
        cid = operator.request("drain", "r1")
        assert executor.claim({"r0"}) == []  # not its replica
        (command,) = executor.claim({"r0", "r1"})
        assert (command.id, command.command, command.replica_id) == (cid, "drain", "r1")
        assert executor.claim({"r1"}) == []  # taken once
        threading.Timer(0.3, executor.complete, (cid, True, "replica r1 drained")).start()
        done = operator.wait(cid, claim_timeout_s=5, timeout_s=10, poll_s=0.05)
        assert done.ok and done.result == "replica r1 drained"


def test_an_unclaimed_command_times_out_with_a_clear_error(tmp_path: Path) -> None:
    with ControlChannel(tmp_path / "j.sqlite") as operator:
        cid = operator.request("drain", "r9")
        with pytest.raises(ExecutorError, match="no running executor .* serves replica r9"):
            operator.wait(cid, claim_timeout_s=0.2, timeout_s=10, poll_s=0.05)
        with pytest.raises(ExecutorError, match="unknown command"):
            operator.request("explode", "r1")


# -- Ray's actor errors: died is not unavailable ---------------------------------------


class _Method:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def remote(self, *args: Any) -> Any:
        async def fail() -> None:
            raise self.exc

        return fail()


class _Actor:
    """A stand-in Ray actor whose every method raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.generate = self.health = _Method(exc)


def _handle_error(exc: BaseException, call: str) -> BaseException:
    from executor.fleet.handle import ReplicaHandle

    handle = ReplicaHandle("r0", _Actor(exc), {})

    async def go() -> None:
        if call == "generate":
            await handle.agenerate({"text": "x"})
        else:
            await handle.ahealth(5)

    with pytest.raises(Exception) as info:
        asyncio.run(go())
    return info.value


@pytest.mark.parametrize("call", ["generate", "health"])
def test_actor_died_is_death(call: str) -> None:
    from ray.exceptions import ActorDiedError

    err = _handle_error(ActorDiedError(), call)
    assert isinstance(err, ReplicaUnavailableError) and err.reason == "ActorDiedError"


@pytest.mark.parametrize("call", ["generate", "health"])
def test_actor_unavailable_is_transient(call: str) -> None:
    from ray.exceptions import ActorUnavailableError

    err = _handle_error(ActorUnavailableError("network blip", None), call)
    assert isinstance(err, ReplicaUnreachableError)
    assert not isinstance(err, ReplicaUnavailableError)
