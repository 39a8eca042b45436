"""Build the service and serve it: one Executor (one scheduler core for the fleet), its
journal, the agents clients may name, uvicorn on ``host:port``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from executor.agent import Agent
from executor.config import ExecutorConfig
from executor.fleet.pool import ReplicaPool
from executor.result import Step
from executor.runtime import Executor
from executor.service.app import MAX_BODY_BYTES, create_app
from executor.service.auth import check_bind
from executor.service.tasks import TaskService
from executor.telemetry import Telemetry, TelemetryExporter

log = logging.getLogger("executor.service")


@dataclass
class ServiceOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_active: int = 256
    max_body_bytes: int = MAX_BODY_BYTES


def build_service(
    config: ExecutorConfig,
    agents: dict[str, Agent],
    *,
    pool: ReplicaPool | None = None,
    max_active: int = 256,
    telemetry: TelemetryExporter | None = None,
) -> TaskService:
    """The service's tasks on a new Executor whose metrics also go to ``/metrics``."""
    holder: list[TaskService] = []

    def on_step(task_id: str, step: Step) -> None:
        if holder:
            holder[0].on_step(task_id, step)

    config = config.model_copy(
        update={"telemetry": Telemetry(telemetry or "none", prometheus=True)}
    )
    executor = Executor(config, pool=pool, on_step=on_step)
    holder.append(TaskService(executor, agents, max_active=max_active))
    return holder[0]


def serve(service: TaskService, options: ServiceOptions) -> None:
    """Run until interrupted (the tasks that were running resume at the next start)."""
    import uvicorn

    check_bind(options.host, options.token)
    app = create_app(service, token=options.token, max_body_bytes=options.max_body_bytes)
    log.info(
        "serving on http://%s:%d (agents: %s)",
        options.host,
        options.port,
        ", ".join(service.agents) or "inline only",
    )
    uvicorn.run(
        app, host=options.host, port=options.port, log_level="warning", timeout_graceful_shutdown=5
    )
