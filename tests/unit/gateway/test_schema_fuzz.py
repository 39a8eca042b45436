"""Every HTTP route fuzzed from its OpenAPI schema (schemathesis, in-process over
ASGI). The gateway's routes: on a FastAPI app of their own, the real scheduler core
and a stand-in replica (no engine). The service's app (``create_app``): the real app
and its routes over a fleet-less ``TaskService`` stand-in (no task exists; a submit is
validated by the real ``agent_for`` and then refused as busy). A 500 is a bug, and so
is a status code or a response body the schema does not declare."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_gateway_admission import make

from executor.gateway.routes import install
from executor.service import create_app
from executor.service.models import ReplicaView, SubmitRequest, TaskSummary
from executor.service.tasks import Busy, LastReplica, TaskService, UnknownTask

TOKEN = "fuzz-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from executor.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve("tiny")))


TOKENIZER = _tokenizer()


def _app() -> FastAPI:
    gateway, _replica, _dispatcher = make(TOKENIZER, queue_wait_s=0.2)
    app = FastAPI(title="gateway under fuzz", version="1")
    install(app, gateway, TOKEN)
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


class Journal:
    def list(self, limit: int) -> list[dict[str, Any]]:
        return []


class Executor:
    def __init__(self) -> None:
        gateway, _replica, dispatcher = make(TOKENIZER)
        self.services = gateway.services
        self.dispatcher = dispatcher
        self.journal = Journal()
        self.model = "tiny"

    def refresh_gauges(self) -> None:
        pass


class FleetlessService:
    """The ``TaskService`` surface the routes use, with no fleet and no task."""

    def __init__(self) -> None:
        self.executor = Executor()
        self.agents: dict[str, Any] = {}
        self.handles: dict[str, Any] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def ready(self) -> bool:
        return False

    def replicas(self) -> list[ReplicaView]:
        return []

    async def apage(self, status: str | None, limit: int, offset: int) -> list[TaskSummary]:
        return []

    def record(self, task_id: str) -> Any:
        raise UnknownTask(f"no task {task_id!r}")

    view = cancel = record

    def drain(self, replica_id: str) -> None:
        raise LastReplica("no replica")

    async def asubmit(self, req: SubmitRequest, key: str | None, digest: str) -> Any:
        TaskService.agent_for(self, req)  # type: ignore[arg-type]  # the real validation
        raise Busy("no fleet here", retry_after_s=1)


service_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(FleetlessService(), token=TOKEN),  # type: ignore[arg-type]
).exclude(path_regex="^/v1/(chat/completions|models|sessions|dashboard/events)")
# (the gateway's routes are fuzzed above; the dashboard's event stream never ends)


@service_schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_service_route_answers_as_its_schema_says(case: Any) -> None:
    checks = CHECKS
    if case.operation.path == "/readyz":  # "not ready" is its documented 503, no fault
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=checks)


@schema.parametrize()
@settings(
    max_examples=80,
    derandomize=True,  # the same examples each run (CI must not flake on a draw)
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_gateway_route_answers_as_its_schema_says(case: Any) -> None:
    if isinstance(case.body, dict) and case.body.get("model") is not None:
        case.body["model"] = "tiny"  # the served model: past the 404, to the core and back
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
    SEEN.setdefault(case.operation.label, set()).add(response.status_code)


SEEN: dict[str, set[int]] = {}


def test_the_fuzzer_reached_the_replica() -> None:
    """(Runs after the fuzz test, in file order.) Some chat and responses bodies got a
    200 through the core and the stand-in replica, and some a 400: the fuzz was not
    all refusals."""
    for route in ("POST /v1/chat/completions", "POST /v1/responses"):
        assert {200, 400} <= SEEN.get(route, set()), SEEN
