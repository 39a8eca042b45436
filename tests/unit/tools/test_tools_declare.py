"""@tool: schemas from type hints and docstrings, validation with clear errors."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from tools import Tool, Toolbox, ToolContext, ToolDeclarationError, ToolError, ToolResult, tool
from tools.output import truncate_text


@tool
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    More text that is not the summary.

    Args:
        a: the first number
        b: the second number,
            which defaults to two
    """
    return a + b


@tool(name="greet", description="Say hello.")
async def hello(
    ctx: ToolContext,
    who: Annotated[str, Field(description="a name")],
    mode: Literal["plain", "loud"] = "plain",
) -> str:  # noqa: E501
    text = f"hello {who} ({ctx.task_id})"
    return text.upper() if mode == "loud" else text


class Point(BaseModel):
    x: float
    y: float


@tool
def norm(p: Point) -> dict:
    """Length of a vector.

    :param p: the point
    """
    return {"length": (p.x**2 + p.y**2) ** 0.5}


def invoke(t: Tool, args, ctx=None) -> ToolResult:  # noqa: ANN001
    return asyncio.run(t.invoke(args, ctx))


def test_schema_comes_from_hints_and_docstring() -> None:
    assert isinstance(add, Tool)
    assert add.name == "add"
    assert add.description == "Add two numbers."
    schema = add.parameters_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["a"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"] == {"type": "integer", "description": "the first number"}
    assert schema["properties"]["b"]["default"] == 2
    assert schema["properties"]["b"]["description"] == "the second number, which defaults to two"
    assert "title" not in schema and "title" not in schema["properties"]["a"]
    assert add.openai_spec() == {"type": "function", "function": add.spec()}


def test_context_parameter_is_not_in_the_schema_and_is_passed() -> None:
    assert hello.name == "greet" and hello.description == "Say hello."
    props = hello.parameters_schema["properties"]
    assert set(props) == {"who", "mode"}
    assert props["who"]["description"] == "a name"
    assert props["mode"]["enum"] == ["plain", "loud"]
    res = invoke(hello, {"who": "ada", "mode": "loud"}, ToolContext(task_id="t1"))
    assert res.ok and res.text == "HELLO ADA (T1)"


def test_nested_models_and_sphinx_docstrings() -> None:
    assert norm.parameters_schema["properties"]["p"]["description"] == "the point"
    assert "$defs" in norm.parameters_schema
    res = invoke(norm, {"p": {"x": 3, "y": 4}})
    assert res.ok and res.data == {"length": 5.0} and res.text == '{"length": 5.0}'


def test_valid_arguments_run_the_function() -> None:
    assert invoke(add, {"a": 1}).text == "3"
    assert invoke(add, '{"a": 1, "b": 5}').text == "6"  # a JSON string, as a model writes it
    assert add(1, 1) == 2  # still a plain function


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "missing required argument 'a'"),
        ({"a": 1, "c": 3}, "unexpected argument 'c'"),
        ({"a": "seven"}, "argument 'a': Input should be a valid integer"),
        ('{"a": ', "are not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ({"a": [1]}, "(got [1])"),
    ],
)
def test_bad_arguments_give_clear_errors(args: object, expected: str) -> None:
    res = invoke(add, args)
    assert not res.ok
    assert res.text.startswith("error: ")
    assert expected in res.text
    assert "Traceback" not in res.text
    if isinstance(args, dict):
        assert "Expected arguments: a, b?" in res.text


def test_errors_inside_a_tool_become_results() -> None:
    @tool
    def fails(kind: str) -> str:
        """Fail on purpose."""
        if kind == "expected":
            raise ToolError("the file is too big")
        raise KeyError("boom")

    expected = invoke(fails, {"kind": "expected"})
    assert not expected.ok and expected.text == "error: the file is too big"
    crash = invoke(fails, {"kind": "crash"})
    assert not crash.ok
    assert crash.text == "error: tool 'fails' failed: KeyError: 'boom'"


def test_output_is_truncated_with_a_marker() -> None:
    @tool
    def big(n: int) -> str:
        """Return n characters."""
        return "a" * (n - 100) + "z" * 100

    res = invoke(big, {"n": 50_000}, ToolContext(max_output_chars=1000))
    assert len(res.text) < 1100
    assert "[... 49000 characters truncated ...]" in res.text
    assert res.text.startswith("a") and res.text.endswith("z" * 100)
    assert res.data["output_truncated"] is True
    assert truncate_text("short", 10) == ("short", False)


def test_declaration_errors_are_clear() -> None:
    def untyped(x):  # noqa: ANN001, ANN202
        return x

    with pytest.raises(ToolDeclarationError, match="parameter 'x' needs a type hint"):
        tool(untyped)
    with pytest.raises(ToolDeclarationError, match="plain named parameter"):

        @tool
        def star(*args: int) -> None: ...

    with pytest.raises(ToolDeclarationError, match="tool name"):
        tool(name="bad name!")(add.fn)


def test_toolbox_lists_and_dispatches() -> None:
    box = Toolbox([add, hello])
    assert box.names == ["add", "greet"]
    assert [s["name"] for s in box.specs()] == ["add", "greet"]
    assert asyncio.run(box.call("add", {"a": 2}, ToolContext())).text == "4"
    unknown = asyncio.run(box.call("nope", {}, ToolContext()))
    assert not unknown.ok and "unknown tool 'nope'; available tools: add, greet" in unknown.text
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        Toolbox([add, add])


def test_tools_needing_a_sandbox_say_so() -> None:
    from tools import shell

    res = shell.invoke_sync({"command": "true"}, ToolContext())
    assert not res.ok and "needs the task's sandbox" in res.text
