"""Every gateway route fuzzed from its OpenAPI schema (schemathesis, in-process over
ASGI): the gateway's routes on a FastAPI app, the real scheduler core and a stand-in
replica (no engine). A 500 is a bug, and so is a status code or a response body the
schema does not declare."""

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

TOKEN = "fuzz-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app() -> FastAPI:
    from transformers import AutoTokenizer

    from executor.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(str(resolve("tiny")))
    gateway, _replica, _dispatcher = make(tokenizer, queue_wait_s=0.2)
    app = FastAPI(title="gateway under fuzz", version="1")
    install(app, gateway, TOKEN)
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=40,
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
    """(Runs after the fuzz test, in file order.) Some chat bodies got a 200 through
    the core and the stand-in replica, and some a 400: the fuzz was not all refusals."""
    chat = SEEN.get("POST /v1/chat/completions", set())
    assert {200, 400} <= chat, SEEN
