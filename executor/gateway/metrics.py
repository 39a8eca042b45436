"""The gateway's sessions on the service's ``/metrics`` (Prometheus), beside the
``Agent`` tasks' metrics that ``executor.telemetry`` exports.

    executor_gateway_sessions{kind}                       live sessions (keyed / keyless)
    executor_gateway_sessions_ended_total                 sessions ended (any reason)
    executor_gateway_keyless_matched_total                keyless requests matched by prefix
    executor_gateway_prompts_total{prefix}                calls by prompt: exact / rendered
    executor_gateway_session_calls{session_id,replica_id}            per session (the
    executor_gateway_session_cached_tokens{session_id,replica_id}    ``SESSION_ROWS`` most
    executor_gateway_session_prompt_tokens{session_id,replica_id}    recently used ones:
    executor_gateway_session_queue_wait_seconds{session_id,replica_id}  bounded labels)

Collected when scraped, from the live gateway (no copy kept); one collector per
process, registered once, following the gateway last started.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from executor.gateway.sessions import SessionStore


class Gateway(Protocol):  # what is read of ``gateway.Gateway``
    sessions: SessionStore
    exact_reuses: int
    rendered: int


SESSION_ROWS = 50


class SessionCollector(Collector):
    def __init__(self) -> None:
        self._gateway: weakref.ref[Gateway] | None = None

    def follow(self, gateway: Gateway) -> None:
        self._gateway = weakref.ref(gateway)

    def collect(self) -> Iterator[Metric]:
        gw = self._gateway() if self._gateway is not None else None
        if gw is None:
            return
        live = gw.sessions.sessions()  # least recently used first
        kinds = GaugeMetricFamily(
            "executor_gateway_sessions", "Live gateway sessions.", labels=["kind"]
        )
        keyed = sum(1 for s in live if s.keyed)
        kinds.add_metric(["keyed"], keyed)
        kinds.add_metric(["keyless"], len(live) - keyed)
        yield kinds
        yield CounterMetricFamily(
            "executor_gateway_sessions_ended", "Gateway sessions ended.", value=gw.sessions.ended
        )
        yield CounterMetricFamily(
            "executor_gateway_keyless_matched",
            "Keyless requests matched to a live session by prefix.",
            value=gw.sessions.matched,
        )
        prompts = CounterMetricFamily(
            "executor_gateway_prompts",
            "Gateway calls by how the prompt was built.",
            labels=["prefix"],
        )
        prompts.add_metric(["exact"], gw.exact_reuses)
        prompts.add_metric(["rendered"], gw.rendered)
        yield prompts
        labels = ["session_id", "replica_id"]
        families = {
            "calls": GaugeMetricFamily(
                "executor_gateway_session_calls", "Calls made by a gateway session.", labels=labels
            ),
            "cached": GaugeMetricFamily(
                "executor_gateway_session_cached_tokens",
                "Cached prompt tokens of the session's last call.",
                labels=labels,
            ),
            "prompt": GaugeMetricFamily(
                "executor_gateway_session_prompt_tokens",
                "Prompt tokens of the session's last call.",
                labels=labels,
            ),
            "wait": GaugeMetricFamily(
                "executor_gateway_session_queue_wait_seconds",
                "Time the session's calls waited for admission.",
                labels=labels,
            ),
        }
        for s in live[-SESSION_ROWS:]:
            if not s.calls:
                continue
            at = [s.key, s.replica_id or ""]
            families["calls"].add_metric(at, s.calls)
            families["cached"].add_metric(at, s.cached[-1] if s.cached else 0)
            families["prompt"].add_metric(at, s.prompts[-1] if s.prompts else 0)
            families["wait"].add_metric(at, s.queue_wait_s)
        yield from families.values()


_COLLECTOR = SessionCollector()
_registered = False


def export(gateway: Gateway) -> None:
    """Show ``gateway``'s sessions on the process's Prometheus registry."""
    global _registered
    _COLLECTOR.follow(gateway)
    if not _registered:
        REGISTRY.register(_COLLECTOR)
        _registered = True
