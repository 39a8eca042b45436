"""The service's pure pieces: the token check, where it may bind, idempotency keys,
the event stream's format (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.errors import ExecutorError
from executor.remote import agent_spec, parse_sse
from executor.service.auth import authorized, check_bind, load_token
from executor.service.events import sse
from executor.service.idempotency import IdempotencyStore, KeyReused, body_hash


def test_bearer_token() -> None:
    assert authorized("Bearer s3cret", "s3cret")
    assert authorized("bearer s3cret", "s3cret")
    assert not authorized(None, "s3cret")
    assert not authorized("Bearer wrong", "s3cret")
    assert not authorized("Basic s3cret", "s3cret")
    assert not authorized("Bearer s3cret-and-more", "s3cret")
    assert authorized(None, None)  # no token: loopback only, see below


def test_no_token_binds_loopback_only() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "tok")
    for host in ("0.0.0.0", "10.1.2.3", "example.org"):
        with pytest.raises(ExecutorError, match="without a token"):
            check_bind(host, None)


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_TOKEN", "from-env")
    assert load_token() == "from-env"
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    assert load_token(f) == "from-file"
    f.write_text("")
    with pytest.raises(ExecutorError, match="empty"):
        load_token(f)
    monkeypatch.delenv("EXECUTOR_TOKEN")
    assert load_token() is None


def test_idempotency_keys(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "j.sqlite")
    a, b = body_hash(b'{"goal": "a"}'), body_hash(b'{"goal": "b"}')
    assert store.claim("k1", a, "t1") == "t1"
    assert store.claim("k1", a, "t2") == "t1"  # a retry: the first task
    with pytest.raises(KeyReused):
        store.claim("k1", b, "t3")
    store.release("k1", "t1")
    assert store.claim("k1", b, "t4") == "t4"
    store.close()
    again = IdempotencyStore(tmp_path / "j.sqlite")  # keys outlive the process
    assert again.claim("k1", b, "t5") == "t4"
    again.close()


def test_sse_round_trip() -> None:
    text = sse("step", {"seq": 3}, 3) + ": keep-alive\n\n" + sse("result", {"status": "x"})
    events = list(parse_sse(iter(text.split("\n"))))
    assert events == [
        {"id": "3", "event": "step", "data": {"seq": 3}},
        {"event": "result", "data": {"status": "x"}},
    ]


def test_remote_agent_spec() -> None:
    from agent_tools import mark, tiny_agent

    from tools import python

    assert agent_spec("calc") == "calc"
    assert agent_spec(tiny_agent(mark, name="m")) == "m"  # code tools: by name
    inline = agent_spec(tiny_agent(python, name="p"))
    assert isinstance(inline, dict) and inline["tools"] == ["python"]
