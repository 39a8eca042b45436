"""Opt-in SLO-aware shedding at the service's door: a task whose predicted admission
wait (the scheduler core's) exceeds ``SchedulerConfig.shed_slo_s`` gets ``Busy`` with
a retry-after (the app answers 429 with that ``Retry-After``). No engine needed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from executor.service.tasks import Busy, TaskService
from scheduler import SchedulerConfig


class _Core:
    def __init__(self, wait: float | None) -> None:
        self.wait = wait

    def predicted_wait_s(self) -> float | None:
        return self.wait


def _service(slo: float | None, wait: float | None) -> TaskService:
    cfg = SimpleNamespace(scheduler=SchedulerConfig(shed_slo_s=slo))
    executor = SimpleNamespace(
        config=cfg, dispatcher=SimpleNamespace(queue_depth=0, core=_Core(wait))
    )
    return TaskService(cast(Any, executor), {})


def test_shed_when_the_predicted_wait_exceeds_the_slo() -> None:
    with pytest.raises(Busy, match="predicted queue wait 95.0 s exceeds the SLO") as exc:
        _service(60.0, 95.0)._admit()
    assert exc.value.retry_after_s == pytest.approx(35.0)


@pytest.mark.parametrize(("slo", "wait"), [(None, 1e9), (60.0, 59.0), (60.0, None)])
def test_admitted_when_off_in_time_or_unknown(slo: float | None, wait: float | None) -> None:
    _service(slo, wait)._admit()  # no Busy
