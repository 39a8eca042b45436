"""The framework benchmark's tasks and scoring (``benchmarks/toolcalls.py``): values
only the tools know, expected calls that validate against the tools' schemas, and a
score that counts a task right only when its calls ran in order."""

from __future__ import annotations

import jsonschema
import pytest

from benchmarks.toolcalls import SCHEMAS, Run, Task, main, make_tasks


@pytest.mark.parametrize("seed", range(20))
def test_tasks_are_answerable_only_by_their_tools(seed: int) -> None:
    tasks = make_tasks(30, seed)
    assert len(tasks) == 30
    assert {len(t.expected) for t in tasks} == {1, 2}  # single calls and a chain
    for task in tasks:
        run = Run()
        results = [run.tool(task, name, args) for name, args in task.expected]
        for name, args in task.expected:
            jsonschema.validate(args, SCHEMAS[name])
        assert task.answer in results[-1]  # the last call's result holds the answer
        assert task.answer not in task.prompt  # nothing to copy from the question
        assert run.tools_right(task)
        if len(task.expected) == 2:  # the second call needs what the first returned
            assert task.expected[1][1]["station"] == results[0]
    assert make_tasks(30, seed)[5].answer == tasks[5].answer  # seeded


def test_a_task_is_right_only_with_its_calls_in_order() -> None:
    task = make_tasks(4, 1)[3]  # the chain: station code, then weather
    (first, a), (second, b) = task.expected
    run = Run()
    assert run.tool(task, second, b) == task.answer
    run.tool(task, first, a)
    assert not run.tools_right(task)  # the weather before the code: not the chain
    run.tool(task, "population", {"city": "Paris"})  # an extra call between is allowed
    run.tool(task, second, b)
    assert run.tools_right(task)


def test_bad_calls_get_errors_the_model_can_read() -> None:
    task: Task = make_tasks(1, 2)[0]
    run = Run()
    assert run.tool(task, "nope", {}).startswith("error: no tool")
    assert run.tool(task, "station_code", {"city": "Atlantis"}).startswith("error:")
    assert run.tool(task, "station_code", "not an object").startswith("error:")
    assert not run.tools_right(task) and len(run.ran) == 3


def test_the_cli_refuses_unknown_frameworks_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--frameworks", "openai,crewai"])
    assert exc.value.code == 2
    assert "unknown framework or server: crewai" in capsys.readouterr().err
