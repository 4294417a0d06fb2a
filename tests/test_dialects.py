"""The tools dialect's hermes calls, read as the model writes them (aimo/dialects.py)."""

import json

import pytest

from aimo import dialects

pytestmark = pytest.mark.needs("unit")


def call(code="print(6 * 7)", name="python", as_string=False):
    args = {"code": code}
    body = {"name": name, "arguments": json.dumps(args) if as_string else args}
    return f"Let me compute.\n<tool_call>\n{json.dumps(body)}\n"


def test_a_python_call_gives_its_code():
    tools = dialects.get("tools")
    assert tools.code(call()) == "print(6 * 7)"
    assert tools.code(call(as_string=True)) == "print(6 * 7)"  # arguments as a JSON string
    assert tools.code(call("x = 1") + "</tool_call>\n" + call("print(x)")) == "print(x)"
    assert tools.code("No call here, \\boxed{4}.") is None


@pytest.mark.parametrize(
    "text, says",
    [
        (call(name="calculator"), "there is no tool 'calculator'"),
        ("<tool_call>\n{'name': 'python'}\n", "not valid JSON"),
        ('<tool_call>\n{"name": "python", "arguments": {"src": "1"}}\n', '{"code": '),
    ],
)
def test_a_bad_call_runs_as_code_that_says_what_is_wrong(text, says):
    code = dialects.get("tools").code(text)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        exec(code, {})


def test_fenced_is_the_default_and_an_unknown_dialect_is_named():
    fenced = dialects.get("fenced")
    assert fenced.code("```python\nprint(1)\n") == "print(1)"
    with pytest.raises(ValueError, match="tir.dialect 'xml'"):
        dialects.get("xml")


def test_a_call_ended_by_the_end_of_turn_is_still_a_call():
    tools = dialects.get("tools")
    assert tools.unclosed(call())  # the JSON written, then the model's end of turn
    assert not tools.unclosed(call() + "</tool_call>\nThe answer is \\boxed{42}.")
    assert not tools.unclosed("No call, \\boxed{4}.")
    assert not dialects.get("fenced").unclosed("```python\nprint(1)\n")  # a block needs its fence
