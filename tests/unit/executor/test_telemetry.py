"""Behaviour of executor.telemetry with the in-memory exporters (no collector needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from executor.telemetry import Telemetry


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    t = Telemetry("memory")
    yield t
    t.shutdown()


def _by_name(tel: Telemetry) -> dict[str, Any]:
    return {s.name: s for s in tel.finished_spans()}


def _record(tel: Telemetry, span: Any, **overrides: Any) -> None:
    kwargs: dict[str, Any] = dict(
        replica_id="r0",
        input_tokens=100,
        output_tokens=20,
        cached_tokens=50,
        queue_wait_s=0.25,
        latency_s=1.5,
        finish_reason="stop",
    )
    kwargs.update(overrides)
    tel.record_call(span, **kwargs)


def test_spans_nest_under_the_task_span(tel: Telemetry) -> None:
    with tel.task_span(agent="analyst", task_id="t1", model="tiny"):
        with tel.chat_span(model="tiny", task_id="t1", step=0):
            pass
        with tel.tool_span(tool="python", call_id="c1"):
            pass
    spans = _by_name(tel)
    assert set(spans) == {"invoke_agent analyst", "chat tiny", "execute_tool python"}
    task, chat, tool = (
        spans["invoke_agent analyst"],
        spans["chat tiny"],
        spans["execute_tool python"],
    )
    assert task.parent is None
    for child in (chat, tool):
        assert child.parent is not None
        assert child.parent.span_id == task.context.span_id
        assert child.context.trace_id == task.context.trace_id
    assert task.kind is SpanKind.INTERNAL
    assert chat.kind is SpanKind.CLIENT
    assert tool.kind is SpanKind.INTERNAL
    assert task.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert task.attributes["gen_ai.agent.name"] == "analyst"
    assert task.attributes["gen_ai.conversation.id"] == "t1"
    assert task.attributes["gen_ai.request.model"] == "tiny"
    assert task.attributes["gen_ai.provider.name"] == "sglang"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["executor.step"] == 0
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "python"
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"


def test_separate_tasks_get_separate_traces(tel: Telemetry) -> None:
    for i in range(2):
        with tel.task_span(agent="analyst", task_id=f"t{i}", model="tiny"):
            pass
    a, b = tel.finished_spans()
    assert a.context.trace_id != b.context.trace_id


def test_usage_lands_on_the_chat_span(tel: Telemetry) -> None:
    with (
        tel.task_span(agent="analyst", task_id="t1", model="tiny"),
        tel.chat_span(model="tiny", task_id="t1", step=3) as span,
    ):
        _record(tel, span)
        tel.event(span, "failover", from_replica="r1", to_replica="r0")
    chat = _by_name(tel)["chat tiny"]
    attrs = chat.attributes
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 50
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["executor.replica.id"] == "r0"
    assert attrs["executor.queue_wait_s"] == 0.25
    assert [(e.name, dict(e.attributes)) for e in chat.events] == [
        ("failover", {"from_replica": "r1", "to_replica": "r0"})
    ]
    assert "gen_ai.usage.input_tokens" not in _by_name(tel)["invoke_agent analyst"].attributes


def test_exception_in_tool_span_marks_error_and_reraises(tel: Telemetry) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        tel.task_span(agent="analyst", task_id="t1", model="tiny"),
        tel.tool_span(tool="python", call_id="c1"),
    ):
        1 / 0  # noqa: B018
    spans = _by_name(tel)
    tool = spans["execute_tool python"]
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes["error.type"] == "ZeroDivisionError"
    assert any(e.name == "exception" for e in tool.events)
    assert spans["invoke_agent analyst"].status.status_code is StatusCode.ERROR


def test_ok_spans_are_not_errors(tel: Telemetry) -> None:
    with tel.task_span(agent="analyst", task_id="t1", model="tiny"):
        pass
    (task,) = tel.finished_spans()
    assert task.status.status_code is not StatusCode.ERROR


def test_call_metrics(tel: Telemetry) -> None:
    with tel.chat_span(model="tiny", task_id="t1", step=0) as span:
        _record(tel, span, input_tokens=100, cached_tokens=50, latency_s=1.0)
    with tel.chat_span(model="tiny", task_id="t1", step=1) as span:
        _record(tel, span, input_tokens=200, cached_tokens=50, latency_s=2.0, queue_wait_s=0.5)
    points = tel.metric_points()

    ((attrs, duration),) = points["gen_ai.client.operation.duration"]
    assert attrs == {"gen_ai.operation.name": "chat", "executor.replica.id": "r0"}
    assert duration["count"] == 2
    assert duration["sum"] == pytest.approx(3.0)

    ((_, ratio),) = points["executor.call.cached_token_ratio"]
    assert ratio["count"] == 2
    assert ratio["sum"] == pytest.approx(0.5 + 0.25)

    usage = {a["gen_ai.token.type"]: v for a, v in points["gen_ai.client.token.usage"]}
    assert usage["input"] == {"count": 2, "sum": 300}
    assert usage["output"] == {"count": 2, "sum": 40}

    ((_, wait),) = points["executor.call.queue_wait"]
    assert wait["sum"] == pytest.approx(0.75)


def test_cached_ratio_is_zero_without_input(tel: Telemetry) -> None:
    with tel.chat_span(model="tiny", task_id="t1", step=0) as span:
        _record(tel, span, input_tokens=0, cached_tokens=0)
    ((_, ratio),) = tel.metric_points()["executor.call.cached_token_ratio"]
    assert ratio == {"count": 1, "sum": 0}


def test_task_duration(tel: Telemetry) -> None:
    tel.record_task(agent="analyst", latency_s=4.0, status="ok")
    tel.record_task(agent="analyst", latency_s=1.0, status="failed")
    points = {
        a["executor.task.status"]: (a, v) for a, v in tel.metric_points()["executor.task.duration"]
    }
    assert points["ok"] == (
        {"gen_ai.agent.name": "analyst", "executor.task.status": "ok"},
        {"count": 1, "sum": 4.0},
    )
    assert points["failed"][1] == {"count": 1, "sum": 1.0}


def test_kv_occupancy_gauge_per_replica(tel: Telemetry) -> None:
    tel.set_kv_occupancy("r0", 1024, 4096)
    tel.set_kv_occupancy("r1", 100, 1000)
    tel.set_kv_occupancy("r1", 500, 1000)  # the latest value wins
    tel.set_kv_occupancy("r2", 10, 0)  # no capacity: reported as 0, not a crash
    got = {
        a["executor.replica.id"]: v for a, v in tel.metric_points()["executor.replica.kv_occupancy"]
    }
    assert got == {"r0": pytest.approx(0.25), "r1": pytest.approx(0.5), "r2": 0}


def test_queue_depth_gauge(tel: Telemetry) -> None:
    assert "executor.queue.depth" not in tel.metric_points()  # nothing set yet
    tel.set_queue_depth(3)
    tel.set_queue_depth(7)
    assert tel.metric_points()["executor.queue.depth"] == [({}, 7)]


def test_instances_are_independent() -> None:
    a, b = Telemetry("memory"), Telemetry("memory")
    try:
        with a.task_span(agent="analyst", task_id="t1", model="tiny"):
            pass
        assert len(a.finished_spans()) == 1
        assert b.finished_spans() == []
    finally:
        a.shutdown()
        b.shutdown()


def test_unknown_exporter_raises() -> None:
    with pytest.raises(ValueError, match="console"):
        Telemetry("jaeger")  # type: ignore[arg-type]


def test_test_helpers_need_memory_exporter() -> None:
    t = Telemetry("none")
    try:
        with t.task_span(agent="analyst", task_id="t1", model="tiny") as span:
            assert span.get_span_context().is_valid  # spans still get ids
        with pytest.raises(RuntimeError):
            t.finished_spans()
        with pytest.raises(RuntimeError):
            t.metric_points()
    finally:
        t.shutdown()


def test_shutdown_is_idempotent() -> None:
    t = Telemetry("memory")
    t.shutdown()
    t.shutdown()


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "none"), ("console", "console"), (" Memory ", "memory")]
)
def test_from_env(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str) -> None:
    if value is None:
        monkeypatch.delenv("EXECUTOR_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("EXECUTOR_TELEMETRY", value)
    t = Telemetry.from_env()
    try:
        assert t.exporter == expected
    finally:
        t.shutdown()


def test_from_env_rejects_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_TELEMETRY", "bogus")
    with pytest.raises(ValueError, match="EXECUTOR_TELEMETRY"):
        Telemetry.from_env()


def test_console_exporter_writes_spans(capsys: pytest.CaptureFixture[str]) -> None:
    t = Telemetry("console")
    try:
        with t.task_span(agent="analyst", task_id="t1", model="tiny"):
            pass
    finally:
        t.shutdown()
    captured = capsys.readouterr()
    assert "invoke_agent analyst" in captured.err + captured.out


def test_otlp_exporter_builds_and_shuts_down_without_data() -> None:
    # Nothing recorded, so nothing is sent: no collector needed.
    t = Telemetry("otlp", otlp_endpoint="http://127.0.0.1:9/")
    t.shutdown()
