"""The gateway's pieces without an engine: identity, the session store (bounded,
TTL, final), the exact prefix reuse on the tiny model's tokenizer, the tool-call
grammars (checked with xgrammar, the engine's grammar backend) and their parsing,
and the OpenAI error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
import xgrammar as xgr
from sglang.srt.entrypoints.openai.protocol import Tool, ToolChoice
from xgrammar.testing import _is_grammar_accept_string as accepts

from executor.gateway.errors import GatewayError
from executor.gateway.gateway import GatewayConfig
from executor.gateway.identity import is_final, session_key
from executor.gateway.matcher import PrefixIndex
from executor.gateway.render import Renderer, template_messages
from executor.gateway.sessions import Session, SessionStore
from executor.gateway.toolcalls import ToolCalls, check_choice, family_parser
from executor.gateway.transcript import Turn, build_prompt, reply_form

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [
    Tool.model_validate(
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    ),
    Tool.model_validate({"type": "function", "function": {"name": "noop"}}),
]
CALL = '{"name":"get_weather", "arguments":{"city": "Oslo"}}'


def test_identity_first_carrier_wins() -> None:
    body = {
        "prompt_cache_key": "pck",
        "program_id": "prog",
        "user": "u",
        "metadata": {"session_id": "meta"},
    }
    assert session_key({"X-Session-ID": "hdr"}, body).key == "hdr"  # type: ignore[union-attr]
    assert session_key({}, body).source == "body:prompt_cache_key"  # type: ignore[union-attr]
    assert session_key({}, {"program_id": "p", "user": "u"}).key == "p"  # type: ignore[union-attr]
    assert session_key({}, {"metadata": {"session_id": "m"}, "user": "u"}).key == "m"  # type: ignore[union-attr]
    order = ["x-dynamo-session-id", "x-claude-code-session-id", "session-id", "x-session-affinity"]
    headers = {h: h for h in order}
    for h in order:
        assert session_key(headers, {"user": "u"}).key == h  # type: ignore[union-attr]
        del headers[h]
    assert session_key({}, {"user": "u"}).source == "body:user"  # type: ignore[union-attr]
    assert session_key({}, {"user": "  "}) is None and session_key({}, {}) is None
    assert is_final({"X-Session-Final": "true"}) and not is_final({"X-Session-Final": "no"})


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def store(max_sessions: int = 4, ttl: float = 60) -> tuple[SessionStore, list[tuple[str, str]]]:
    ended: list[tuple[str, str]] = []
    clock = Clock()
    s = SessionStore(
        max_sessions=max_sessions,
        idle_ttl_s=ttl,
        clock=clock,
        on_end=lambda sess, why: ended.append((sess.key, why)),
    )
    return s, ended


def test_sessions_are_bounded_and_evict_the_least_recent_idle_one() -> None:
    s, ended = store(max_sessions=100)
    for i in range(10_000):  # many idle sessions: memory stays bounded
        s.release(s.acquire(f"k{i}"))
    assert len(s) == 100 and s.ended == 9_900 == len(ended)
    assert ended[0] == ("k0", "evicted (the session limit)")
    assert s.get("k9999") is not None and s.get("k0") is None


def test_a_busy_session_is_never_evicted_and_a_full_store_says_429() -> None:
    s, ended = store(max_sessions=2)
    a, b = s.acquire("a"), s.acquire("b")
    with pytest.raises(GatewayError) as full:
        s.acquire("c")
    assert full.value.status == 429 and full.value.headers["Retry-After"]
    s.release(a)
    assert s.acquire("c").key == "c" and ended == [("a", "evicted (the session limit)")]
    assert s.acquire("b") is b  # the same session again


def test_ttl_final_delete_and_keyless() -> None:
    s, ended = store(ttl=60)
    clock: Any = s.clock
    s.release(s.acquire("old"))
    clock.t = 30
    s.release(s.acquire("new"))
    busy = s.acquire("busy")
    clock.t = 61
    assert s.sweep() == 1 and ended[-1] == ("old", "idle")
    s.release(s.acquire("fin"), final=True)
    assert ended[-1] == ("fin", "final")
    anon = s.acquire(None)
    s.release(anon)
    assert s.get(anon.key) is anon  # keyless: lives on, to be matched by its prefix
    assert s.end("busy", "deleted") and s.get("busy") is busy  # ends when its request does
    s.release(busy)
    assert ended[-1] == ("busy", "deleted") and not s.end("busy", "deleted")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    from transformers import AutoTokenizer

    from executor.models import resolve

    return Renderer(AutoTokenizer.from_pretrained(str(resolve("tiny"))))


def test_exact_reuse_keeps_the_generated_ids(renderer: Renderer) -> None:
    tools = [t.model_dump(mode="json", exclude_none=True) for t in TOOLS]
    ask = template_messages(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "weather?"}]
    )
    ids, reused = build_prompt(renderer, ask, tools, None)
    assert not reused and ids == renderer.prompt(ask, tools)
    # a reply whose ids are not what the text re-tokenizes to (as sampling can give)
    out = renderer.encode("wea") + renderer.encode("ther") + renderer.encode("<|im_end|>")
    assert out[:-1] != renderer.encode("weather")
    turn = Turn.make(ask, tools, ids, out, reply_form("weather", []))
    follow = [
        *ask,
        {"role": "assistant", "content": "weather", "refusal": None},
        {"role": "user", "content": "more"},
    ]
    ids2, reused = build_prompt(renderer, template_messages(follow), tools, turn)
    assert reused and ids2[: len(ids) + len(out)] == ids + out
    assert renderer.decode(ids2[len(ids) + len(out) :]) == (
        "\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n"
    )
    changed = [*follow[:2], {"role": "assistant", "content": "edited"}, follow[3]]
    assert not build_prompt(renderer, template_messages(changed), tools, turn)[1]
    other_tools = tools[:1]
    assert not build_prompt(renderer, template_messages(follow), other_tools, turn)[1]


def test_a_tool_call_reply_is_matched_by_name_and_arguments(renderer: Renderer) -> None:
    ask = template_messages([{"role": "user", "content": "w?"}])
    ids, _ = build_prompt(renderer, ask, None, None)
    turn = Turn.make(
        ask, None, ids, [5, 6, 7], reply_form(None, [("get_weather", {"city": "Oslo"})])
    )
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{ "city":"Oslo" }'},
    }
    back = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
    ]
    ids2, reused = build_prompt(renderer, template_messages(back), None, turn)
    assert reused and ids2[: len(ids) + 3] == [*ids, 5, 6, 7]
    with pytest.raises(GatewayError) as bad:
        template_messages(
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{x"},
                        }
                    ],
                }
            ]
        )
    assert bad.value.status == 400 and bad.value.code == "invalid_tool_call_arguments"


def grammar(kind_value: tuple[str, str] | None) -> Any:
    assert kind_value is not None
    kind, value = kind_value
    if kind == "json_schema":
        return xgr.Grammar.from_json_schema(value)
    tag = json.loads(value)
    if "structures" in tag:  # SGLang's legacy form, converted as its grammar backend does
        tags = [
            xgr.StructuralTagItem(begin=s["begin"], schema=json.dumps(s["schema"]), end=s["end"])
            for s in tag["structures"]
        ]
        st = xgr.StructuralTag.from_legacy_structural_tag(tags, tag["triggers"])
        st.format.at_least_one = tag["at_least_one"]  # type: ignore[union-attr]
        return xgr.Grammar.from_structural_tag(st)
    return xgr.Grammar.from_structural_tag(value)


def test_auto_allows_text_and_calls_and_steers_bare_json() -> None:
    tc = ToolCalls("qwen25")
    g = grammar(tc.constraint(TOOLS, "auto", True))
    tagged = f"<tool_call>\n{CALL}\n</tool_call>"
    for ok in ["Sunny, I think.", "Été", tagged, f"Let me see. {tagged}", CALL]:
        assert accepts(g, ok), ok
    for bad in [
        '{"answer": 1}',
        ' {"name":"get_weather"}',
        CALL.replace("Oslo", "Rome"),
        tagged.replace("get_weather", "launch"),
    ]:
        assert not accepts(g, bad), bad
    assert tc.parse(CALL, TOOLS, "auto").calls == [("get_weather", {"city": "Oslo"})]
    assert tc.parse(f"ok {tagged}", TOOLS, "auto").calls == [("get_weather", {"city": "Oslo"})]
    assert tc.parse("plain", TOOLS, "auto").content == "plain"
    assert tc.parse('{"name": "launch", "arguments": {}}', TOOLS, "auto").calls == []


def test_required_and_named_allow_only_calls() -> None:
    tc = ToolCalls("qwen25")
    required = grammar(tc.constraint(TOOLS, "required", True))
    assert accepts(required, f"<tool_call>\n{CALL}\n</tool_call>")
    assert not accepts(required, "just text")
    named = grammar(tc.constraint(TOOLS, ToolChoice(function={"name": "noop"}), False))
    assert accepts(named, '<tool_call>\n{"name":"noop", "arguments":{}}\n</tool_call>')
    assert not accepts(named, f"<tool_call>\n{CALL}\n</tool_call>")
    assert tc.constraint(TOOLS, "none", True) is None and tc.constraint(None, "auto", True) is None
    before = tc.compiled
    tc.constraint(TOOLS, "required", True)
    assert tc.compiled == before  # cached per tool set


def test_a_family_without_a_format_falls_back() -> None:
    assert family_parser("{{ messages }}") is None
    assert family_parser("... <tool_call> ...") == "qwen25"
    tc = ToolCalls(family_parser("{{ messages }}"))
    assert tc.label == "fallback" and tc.constraint(TOOLS, "auto", True) is None
    g = grammar(tc.constraint(TOOLS, "required", False))
    text = '[{"name": "get_weather", "parameters": {"city": "Paris"}}]'
    assert accepts(g, text) and not accepts(g, "[]")
    assert tc.parse(text, TOOLS, "required").calls == [("get_weather", {"city": "Paris"})]
    assert tc.parse(CALL, TOOLS, "auto").calls == [("get_weather", {"city": "Oslo"})]


def test_tool_choice_checks_and_the_error_shape() -> None:
    with pytest.raises(GatewayError) as unknown:
        check_choice(TOOLS, ToolChoice(function={"name": "launch"}))
    assert unknown.value.status == 400 and unknown.value.param == "tool_choice"
    with pytest.raises(GatewayError):
        check_choice(None, "required")
    body = unknown.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    assert GatewayError(429, "busy").body()["error"]["type"] == "rate_limit_error"


def test_config_from_the_environment() -> None:
    c = GatewayConfig.from_env(
        {"EXECUTOR_GATEWAY_IDLE_TTL_S": "5", "EXECUTOR_GATEWAY_TOOL_CALL_PARSER": "qwen25"}
    )
    assert c.idle_ttl_s == 5 and c.tool_call_parser == "qwen25" and c.max_sessions == 4096


def test_session_new_task_changes_the_core_task() -> None:
    s = Session("k", True, "gw-1", 0.0)
    s.new_task()
    assert s.task_id != "gw-1" and s.task_id.startswith("gw-")


def _turn(renderer: Renderer, messages: list[dict[str, Any]], reply: str) -> Turn:
    ids = renderer.prompt(messages, None)
    out = renderer.encode(reply + "<|im_end|>")
    return Turn.make(messages, None, ids, out, reply_form(reply, []))


def test_keyless_sessions_are_told_apart_by_their_prefix(renderer: Renderer) -> None:
    """Two keyless sessions with the same system prompt and the same first question
    are told apart by their replies; an unrelated prompt starts a new session; a
    reply edited by the client still finds its session by the token prefix."""
    s, ended = store(max_sessions=8)
    first = template_messages(
        [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": "Fix the bug."},
        ]
    )

    def keyless(messages: list[dict[str, Any]]) -> Session:
        return s.acquire_keyless(
            messages,
            None,
            lambda: renderer.prompt(messages, None),
            lambda: len(renderer.prompt(messages[:2], None)),
        )

    a, b = keyless(first), keyless(first)
    assert a is not b  # no transcript yet: nothing to tell them apart by
    for session, reply in ((a, "I read main.py"), (b, "I ran the tests")):
        session.last = _turn(renderer, first, reply)
        s.release(session)

    def then(reply: str, user: str) -> list[dict[str, Any]]:
        return [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": user}]

    again_b = keyless(template_messages(then("I ran the tests", "and?")))
    assert again_b is b and s.matched == 1
    s.release(again_b)
    again_a = keyless(template_messages(then("I read main.py", "go on")))
    assert again_a is a
    s.release(again_a)
    # the client stripped a word from the reply: the token prefix still runs past the
    # shared first turn further into a's transcript than into b's
    edited = keyless(template_messages(then("I read main", "go on")))
    assert edited is a and s.matched == 3
    s.release(edited)
    other = keyless(
        template_messages(
            [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": "Write docs."},
            ]
        )
    )
    assert other not in (a, b) and len(s) == 3
    s.release(other)
    # a reply that is neither's, with the shared first turn only: a new session
    stranger = keyless(template_messages(then("Hello there", "x")))
    assert stranger not in (a, b, other)
    s.release(stranger)
    s.end(a.key, "deleted")
    assert a.key not in s.index.candidates(s.index._anchor_of[b.key])


def test_the_prefix_index_is_bounded() -> None:
    index = PrefixIndex(bucket=3)
    for i in range(10):
        index.add(f"s{i}", "h")
    assert index.candidates("h") == ["s9", "s8", "s7"] and len(index) == 3
    for key in ("s9", "s8", "s7"):
        index.remove(key)
    assert len(index) == 0 and index.candidates("h") == []
