"""OpenTelemetry traces and metrics for the agent runtime.

Follows the OpenTelemetry GenAI semantic conventions (``gen_ai.*``); everything specific to this
executor lives under ``executor.*``.

Traces (one trace per agent task)::

    invoke_agent {agent}     INTERNAL  gen_ai.operation.name="invoke_agent", gen_ai.agent.name,
    |                                  gen_ai.conversation.id (= task id), gen_ai.request.model,
    |                                  gen_ai.provider.name="sglang"
    +-- chat {model}         CLIENT    gen_ai.operation.name="chat", gen_ai.request.model,
    |                                  gen_ai.provider.name, gen_ai.conversation.id,
    |                                  executor.step; after the call (``record_call``):
    |                                  gen_ai.usage.input_tokens, gen_ai.usage.output_tokens,
    |                                  gen_ai.usage.cache_read.input_tokens,
    |                                  gen_ai.response.finish_reasons, executor.replica.id,
    |                                  executor.queue_wait_s; events such as "failover"
    +-- execute_tool {tool}  INTERNAL  gen_ai.operation.name="execute_tool", gen_ai.tool.name,
                                       gen_ai.tool.call.id

A span whose body raises gets the exception recorded as an event, ``error.type`` set and ERROR
status; the exception is re-raised.

Metrics:

* ``gen_ai.client.operation.duration`` (histogram, s): latency of one model call, by
  ``gen_ai.operation.name`` and ``executor.replica.id``.
* ``gen_ai.client.token.usage`` (histogram, {token}): tokens per call, by ``gen_ai.token.type``
  (``input`` / ``output``).
* ``executor.call.cached_token_ratio`` (histogram, 1): prefix-cache hits / input tokens per call.
* ``executor.call.queue_wait`` (histogram, s): time a call waited for a replica slot.
* ``executor.task.duration`` (histogram, s): wall time of one agent task, by
  ``gen_ai.agent.name`` and ``executor.task.status``.
* ``executor.replica.kv_occupancy`` (gauge, 1): used / capacity KV-cache tokens per
  ``executor.replica.id`` (latest value set with ``set_kv_occupancy``).
* ``executor.queue.depth`` (gauge, {call}): calls waiting for a replica (latest value set with
  ``set_queue_depth``).

Every :class:`Telemetry` owns its own ``TracerProvider`` and ``MeterProvider``; nothing is
installed globally, so several instances can live in one process. Exporters: ``none`` (spans and
ids are still created, nothing leaves the process), ``console`` (stderr), ``otlp`` (OTLP/HTTP;
endpoint from ``otlp_endpoint`` or the standard ``OTEL_EXPORTER_OTLP_*`` variables) and
``memory`` (in-process, for tests; see :meth:`Telemetry.finished_spans` and
:meth:`Telemetry.metric_points`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast, get_args

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = ["Telemetry", "TelemetryExporter"]

TelemetryExporter = Literal["none", "console", "otlp", "memory"]
EXPORTERS: tuple[str, ...] = get_args(TelemetryExporter)

ENV_VAR = "EXECUTOR_TELEMETRY"
PROVIDER = "sglang"
INSTRUMENTATION_SCOPE = "executor.telemetry"

# Bucket boundaries recommended by the GenAI semantic conventions.
_DURATION_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
_TOKEN_BUCKETS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
_RATIO_BUCKETS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
_TASK_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600]


class Telemetry:
    """Traces and metrics of one executor; see the module docstring for what is emitted."""

    def __init__(
        self,
        exporter: TelemetryExporter = "none",
        *,
        otlp_endpoint: str | None = None,
        service_name: str = "agent-executor",
        prometheus: bool = False,
    ) -> None:
        """``prometheus``: also expose the metrics to ``prometheus_client``'s registry (a
        service's ``/metrics`` serves it), whatever the exporter."""
        if exporter not in EXPORTERS:
            raise ValueError(
                f"unknown telemetry exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}"
            )
        self.exporter: TelemetryExporter = exporter
        resource = Resource.create({"service.name": service_name})

        self._span_exporter: InMemorySpanExporter | None = None
        self._metric_reader: InMemoryMetricReader | None = None
        self._tracer_provider = TracerProvider(resource=resource)
        readers: list[MetricReader] = []
        if exporter == "memory":
            self._span_exporter = InMemorySpanExporter()
            self._tracer_provider.add_span_processor(SimpleSpanProcessor(self._span_exporter))
            self._metric_reader = InMemoryMetricReader()
            readers.append(self._metric_reader)
        elif exporter == "console":
            self._tracer_provider.add_span_processor(
                SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
            )
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
        elif exporter == "otlp":
            # Imported here: the OTLP exporter pulls in protobuf and requests.
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # Given a base endpoint, append the per-signal paths the way the exporters do for
            # OTEL_EXPORTER_OTLP_ENDPOINT; without one they read the standard variables.
            base = otlp_endpoint.rstrip("/") if otlp_endpoint else None
            span_exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None)
            metric_exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None)
            self._tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            readers.append(PeriodicExportingMetricReader(metric_exporter))
        if prometheus:
            # Imported here: only a service needs prometheus_client.
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
        self._meter_provider = MeterProvider(resource=resource, metric_readers=readers)

        self._tracer = self._tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
        self._lock = threading.Lock()
        self._kv_occupancy: dict[str, float] = {}
        self._queue_depth: int | None = None
        self._create_instruments(self._meter_provider.get_meter(INSTRUMENTATION_SCOPE))
        self._shut_down = False

    def _create_instruments(self, meter: Meter) -> None:
        """The metrics of the module docstring, on this instance's own meter."""
        self._op_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._cached_ratio = meter.create_histogram(
            "executor.call.cached_token_ratio",
            unit="1",
            description="Fraction of a call's input tokens served from the prefix cache",
            explicit_bucket_boundaries_advisory=_RATIO_BUCKETS,
        )
        self._queue_wait = meter.create_histogram(
            "executor.call.queue_wait",
            unit="s",
            description="Time a model call waited before it was sent to a replica",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._task_duration = meter.create_histogram(
            "executor.task.duration",
            unit="s",
            description="Wall time of one agent task",
            explicit_bucket_boundaries_advisory=_TASK_BUCKETS,
        )

        meter.create_observable_gauge(
            "executor.replica.kv_occupancy",
            callbacks=[self._observe_kv_occupancy],
            unit="1",
            description="Used / capacity KV-cache tokens of a replica",
        )
        meter.create_observable_gauge(
            "executor.queue.depth",
            callbacks=[self._observe_queue_depth],
            unit="{call}",
            description="Model calls waiting for a replica",
        )

    @classmethod
    def from_env(cls) -> Telemetry:
        """An instance whose exporter is ``$EXECUTOR_TELEMETRY`` (none|console|otlp; default none).

        ``otlp`` takes its endpoint from the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` variable.
        """
        name = os.environ.get(ENV_VAR, "").strip().lower() or "none"
        if name not in EXPORTERS:
            raise ValueError(
                f"{ENV_VAR}={name!r} is not a telemetry exporter; choose one of "
                f"{', '.join(EXPORTERS)}"
            )
        return cls(cast(TelemetryExporter, name))

    # -- spans ---------------------------------------------------------------------------------

    @contextmanager
    def _span(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:  # not BaseException: cancellation is no error (as the SDK)
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

    @contextmanager
    def task_span(self, *, agent: str, task_id: str, model: str) -> Iterator[Span]:
        """Span ``invoke_agent {agent}`` around one agent task (the root of its trace)."""
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": task_id,
            "gen_ai.request.model": model,
            "gen_ai.provider.name": PROVIDER,
        }
        with self._span(f"invoke_agent {agent}", SpanKind.INTERNAL, attributes) as span:
            yield span

    @contextmanager
    def chat_span(self, *, model: str, task_id: str, step: int) -> Iterator[Span]:
        """Span ``chat {model}`` around one model call, a child of the current span."""
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.conversation.id": task_id,
            "executor.step": step,
        }
        with self._span(f"chat {model}", SpanKind.CLIENT, attributes) as span:
            yield span

    @contextmanager
    def tool_span(self, *, tool: str, call_id: str) -> Iterator[Span]:
        """Span ``execute_tool {tool}`` around one tool call, a child of the current span."""
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
        }
        with self._span(f"execute_tool {tool}", SpanKind.INTERNAL, attributes) as span:
            yield span

    def event(self, span: Span, name: str, **attributes: Any) -> None:
        """Add an event (e.g. ``failover``) to ``span``."""
        span.add_event(name, attributes=attributes)

    # -- metrics -------------------------------------------------------------------------------

    def record_call(
        self,
        span: Span,
        *,
        replica_id: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        queue_wait_s: float,
        latency_s: float,
        finish_reason: str,
    ) -> None:
        """Record the outcome of one model call on its chat span and in the call metrics."""
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.usage.cache_read.input_tokens": cached_tokens,
                "gen_ai.response.finish_reasons": [finish_reason],
                "executor.replica.id": replica_id,
                "executor.queue_wait_s": queue_wait_s,
            }
        )
        self._op_duration.record(
            latency_s, {"gen_ai.operation.name": "chat", "executor.replica.id": replica_id}
        )
        self._token_usage.record(input_tokens, {"gen_ai.token.type": "input"})
        self._token_usage.record(output_tokens, {"gen_ai.token.type": "output"})
        self._cached_ratio.record(cached_tokens / input_tokens if input_tokens > 0 else 0.0)
        self._queue_wait.record(queue_wait_s)

    def record_task(self, *, agent: str, latency_s: float, status: str) -> None:
        """Record the wall time and final status of one agent task."""
        self._task_duration.record(
            latency_s, {"gen_ai.agent.name": agent, "executor.task.status": status}
        )

    def set_kv_occupancy(self, replica_id: str, used_tokens: int, capacity_tokens: int) -> None:
        """Latest KV-cache use of a replica, reported as a ratio by the occupancy gauge."""
        ratio = used_tokens / capacity_tokens if capacity_tokens > 0 else 0.0
        with self._lock:
            self._kv_occupancy[replica_id] = ratio

    def set_queue_depth(self, depth: int) -> None:
        """Latest number of calls waiting for a replica, reported by the queue-depth gauge."""
        with self._lock:
            self._queue_depth = depth

    def _observe_kv_occupancy(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            values = list(self._kv_occupancy.items())
        return [Observation(ratio, {"executor.replica.id": rid}) for rid, ratio in values]

    def _observe_queue_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            depth = self._queue_depth
        return [] if depth is None else [Observation(depth)]

    # -- test helpers --------------------------------------------------------------------------

    def finished_spans(self) -> list[ReadableSpan]:
        """Spans ended so far (``exporter="memory"`` only)."""
        if self._span_exporter is None:
            raise RuntimeError(f"finished_spans needs exporter='memory', not {self.exporter!r}")
        return list(self._span_exporter.get_finished_spans())

    def metric_points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Collect the metrics now: {name: [(attributes, value)]} (``exporter="memory"`` only).

        A histogram point's value is ``{"count": ..., "sum": ...}``; a gauge's (or counter's) is
        its ``value``.
        """
        if self._metric_reader is None:
            raise RuntimeError(f"metric_points needs exporter='memory', not {self.exporter!r}")
        points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self._metric_reader.get_metrics_data()
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    out = points.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        value: Any
                        if isinstance(point, HistogramDataPoint):
                            value = {"count": point.count, "sum": point.sum}
                        elif isinstance(point, NumberDataPoint):
                            value = point.value
                        else:  # (exponential histograms: not used here)
                            continue
                        out.append((dict(point.attributes or {}), value))
        return points

    def shutdown(self) -> None:
        """Flush and shut down both providers; later calls do nothing."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        try:
            self._tracer_provider.shutdown()
        finally:
            self._meter_provider.shutdown()
