"""The HTTP routes (FastAPI): tasks, their events, replicas, health and metrics.

    app = create_app(service, token="...")     # served by uvicorn (executor.service.server)

Every route but ``/healthz`` wants ``Authorization: Bearer <token>`` when a token is
set. Request bodies are bounded (``max_body_bytes``) before they are parsed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from pydantic import BaseModel, ValidationError

from executor.errors import ExecutorError
from executor.gateway import Gateway, GatewayConfig
from executor.gateway.routes import PATHS as GATEWAY_PATHS
from executor.gateway.routes import install as install_gateway
from executor.service.auth import authorized, same_secret
from executor.service.dashboard import Dashboard, page
from executor.service.events import task_events
from executor.service.idempotency import MAX_KEY_CHARS, KeyReused, body_hash
from executor.service.models import (
    ReplicaView,
    ServiceStatus,
    SubmitRequest,
    SubmitResponse,
    TaskPage,
    TaskView,
)
from executor.service.tasks import (
    BadAgent,
    Busy,
    LastReplica,
    TaskService,
    UnknownAgent,
    UnknownTask,
)

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 2
COOKIE = "executor_token"  # the dashboard's: set from its link, good for GET only


class Problem(BaseModel):
    """FastAPI's error body: a message, or (422) where in the body and what."""

    detail: str | list[dict[str, Any]]


def _problems_at(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error codes a route answers, declared in its schema (with 401: the token)."""
    return {code: {"model": Problem} for code in (401, *codes)}


def create_app(
    service: TaskService, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    gateway = Gateway(lambda: service.executor.services, GatewayConfig.from_env())
    dashboard = Dashboard(service, gateway)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        dashboard.start()
        gateway.start()
        try:
            yield
        finally:
            await gateway.stop()
            await dashboard.stop()
            await service.close()

    app = FastAPI(title="agent executor", version="1", lifespan=lifespan)

    @app.middleware("http")
    async def bound_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if request.url.path in GATEWAY_PATHS:  # the gateway bounds its own (longer) bodies
            return await call_next(request)
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return JSONResponse(
                {"detail": f"the body is over {max_body_bytes} bytes"}, status_code=413
            )
        return await call_next(request)

    def auth(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        executor_token: Annotated[str | None, Cookie()] = None,
    ) -> None:
        if authorized(authorization, token):
            return
        if request.method == "GET" and executor_token and same_secret(executor_token, token):
            return  # the dashboard (a cookie never authorises a change: no CSRF)
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )

    guarded = [Depends(auth)]
    install_gateway(app, gateway, token)  # /v1/models, /v1/chat/completions, /v1/sessions

    @app.exception_handler(UnknownTask)
    @app.exception_handler(UnknownAgent)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(
        request: Request,
        link_token: Annotated[str | None, Query(alias="token")] = None,
        executor_token: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        """The live dashboard. Open ``/?token=...`` once: the token goes into an HttpOnly
        cookie and out of the address bar."""
        if link_token is not None:
            if not same_secret(link_token, token):
                raise HTTPException(401, "wrong token")
            back = RedirectResponse("/", status_code=303)
            back.set_cookie(
                COOKIE,
                link_token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return back
        if token is not None and not same_secret(executor_token, token):
            return HTMLResponse("<p>open <code>/?token=YOUR_TOKEN</code> once</p>", 401)
        return HTMLResponse(page())

    @app.get("/v1/dashboard", dependencies=guarded, responses=_problems_at())
    async def dashboard_snapshot() -> dict[str, Any]:
        return dashboard.snapshot()

    @app.get("/v1/dashboard/events", dependencies=guarded, responses=_problems_at())
    async def dashboard_events() -> StreamingResponse:
        return StreamingResponse(
            dashboard.events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        dependencies=guarded,
        responses={**_problems_at(), 503: {"description": 'not ready: {"ready": false}'}},
    )
    async def readyz() -> JSONResponse:
        ready = service.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get(
        "/metrics", dependencies=guarded, response_class=PlainTextResponse, responses=_problems_at()
    )
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        service.executor.refresh_gauges()
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/tasks",
        status_code=202,
        response_model=SubmitResponse,
        dependencies=guarded,
        responses=_problems_at(404, 409, 413, 429),
    )
    async def submit(
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY_CHARS)] = None,
    ) -> Any:
        body = await request.body()
        if len(body) > max_body_bytes:  # (a chunked body has no content-length)
            raise HTTPException(413, f"the body is over {max_body_bytes} bytes")
        try:
            req = SubmitRequest.model_validate_json(body)
        except ValidationError as exc:
            raise HTTPException(422, _problems(exc)) from None
        try:
            task_id, _new = await service.asubmit(req, idempotency_key, body_hash(body))
        except KeyReused:
            raise HTTPException(409, "this Idempotency-Key was used with another body") from None
        except Busy as exc:
            retry = RETRY_AFTER_S if exc.retry_after_s is None else math.ceil(exc.retry_after_s)
            raise HTTPException(
                429, str(exc), headers={"Retry-After": str(max(1, retry))}
            ) from None
        except BadAgent as exc:
            raise HTTPException(422, [{"loc": ["body", "agent"], "msg": str(exc)}]) from None
        except UnknownAgent:
            raise
        except ExecutorError as exc:  # the goal does not fit, or the agent is refused
            raise HTTPException(422, [{"loc": ["body", "goal"], "msg": str(exc)}]) from None
        return SubmitResponse(task_id=task_id, status=service.status(service.record(task_id)))

    @app.get("/v1/tasks", response_model=TaskPage, dependencies=guarded, responses=_problems_at())
    async def list_tasks(
        status: ServiceStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> TaskPage:
        tasks = await service.apage(status, limit, offset)
        return TaskPage(tasks=tasks, next_offset=offset + limit if len(tasks) == limit else None)

    @app.get(
        "/v1/tasks/{task_id}",
        response_model=TaskView,
        dependencies=guarded,
        responses=_problems_at(404),
    )
    async def get_task(task_id: str) -> TaskView:
        return service.view(task_id)

    @app.get("/v1/tasks/{task_id}/events", dependencies=guarded, responses=_problems_at(404))
    async def events(
        task_id: str,
        last_event_id: Annotated[int | None, Header()] = None,
        after: Annotated[int | None, Query(ge=-1)] = None,
    ) -> StreamingResponse:
        service.record(task_id)  # 404 before the stream starts
        start = after if after is not None else last_event_id if last_event_id is not None else -1
        return StreamingResponse(
            task_events(service, task_id, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post(
        "/v1/tasks/{task_id}/cancel",
        response_model=SubmitResponse,
        dependencies=guarded,
        responses=_problems_at(404),
    )
    async def cancel(task_id: str) -> SubmitResponse:
        return SubmitResponse(task_id=task_id, status=service.cancel(task_id))

    @app.get(
        "/v1/replicas",
        response_model=list[ReplicaView],
        dependencies=guarded,
        responses=_problems_at(),
    )
    async def replicas() -> list[ReplicaView]:
        return service.replicas()

    @app.post(
        "/v1/replicas/{replica_id}/drain",
        status_code=202,
        dependencies=guarded,
        responses=_problems_at(404, 409),
    )
    async def drain(replica_id: str) -> dict[str, str]:
        if replica_id not in {r.replica_id for r in service.replicas()}:
            raise HTTPException(404, f"no replica {replica_id!r}")
        try:
            service.drain(replica_id)
        except LastReplica as exc:
            raise HTTPException(409, str(exc)) from None
        return {"replica_id": replica_id, "status": "draining"}

    return app


def _problems(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors, each with where in the body it is (``["body", "goal"]``)."""
    return [
        {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
