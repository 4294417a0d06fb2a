"""The tools dialect's hermes calls and the harmony dialect's messages, read as the models write
them (aimo/dialects.py)."""

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


# gpt-oss's completions, as its harmony format writes them: the recipient after the channel
# (as gpt-oss writes its python calls) or in the message's header (as harmony renders one)
HARMONY_CALLS = [
    "<|channel|>analysis<|message|>Compute it.<|end|><|start|>assistant<|channel|>analysis"
    " to=python code<|message|>print(6 * 7)",
    "<|channel|>analysis<|message|>Compute it.<|end|>"
    "<|start|>assistant to=python<|channel|>analysis <|constrain|>code<|message|>print(6 * 7)",
]


def reference_parse(text):
    """The last message of `text` as openai_harmony (vLLM's gpt-oss parser) reads it."""
    import openai_harmony as h

    enc = dialects.harmony_encoding()
    ids = enc.encode(text + "<|call|>", allowed_special="all")
    return enc.parse_messages_from_completion_tokens(ids, h.Role.ASSISTANT)[-1]


@pytest.mark.parametrize("text", HARMONY_CALLS)
def test_a_harmony_call_is_read_as_the_reference_parser_reads_it(text):
    harmony = dialects.get("harmony")
    ref = reference_parse(text)
    assert harmony.recipient(text) == ref.recipient == "python"
    assert harmony.code(text) == ref.content[0].text == "print(6 * 7)"
    assert harmony.unclosed(text)  # ended by <|call|>, gpt-oss's end of turn for a call
    assert harmony.code(text + "<|call|>") == "print(6 * 7)"


def test_a_harmony_final_message_is_no_call_and_another_tool_is_named():
    harmony = dialects.get("harmony")
    final = "<|channel|>analysis<|message|>42.<|end|><|start|>assistant<|channel|>final<|message|>"
    assert harmony.code(final + "The answer is \\boxed{42}.") is None
    assert not harmony.unclosed(final + "\\boxed{42}")
    browse = "<|channel|>commentary to=browser.search <|constrain|>json<|message|>{}"
    with pytest.raises(ValueError, match="there is no tool 'browser.search'"):
        exec(harmony.code(browse), {})


def test_harmony_renders_the_tool_the_instructions_and_the_tool_turn():
    harmony = dialects.get("harmony")
    shot = [
        {"role": "system", "content": "Solve it."},
        {"role": "user", "content": "6 * 7?"},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": '{"code": "6*7"}'}}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "\\boxed{42}"},
        {"role": "user", "content": "2 + 2?"},
    ]
    text = harmony.prompt(None, shot)
    assert text.startswith("<|start|>system<|message|>") and "Reasoning: high" in text
    assert "## python" in text and "stateful session" in text  # the sandbox's own description
    assert "<|start|>developer<|message|># Instructions\n\nSolve it.<|end|>" in text
    # a finished turn keeps its final message only (harmony drops its thinking and calls)
    assert "6*7" not in text and "<|channel|>final<|message|>\\boxed{42}<|end|>" in text
    assert text.endswith("<|start|>user<|message|>2 + 2?<|end|><|start|>assistant")
    going = harmony.prompt(None, shot[:4])  # a turn under way keeps them
    assert "to=python" in going and "<|message|>6*7<|call|>" in going
    turn = harmony.result(None, "4\n")
    assert turn == (
        "<|start|>python to=assistant<|channel|>analysis<|message|>4<|end|><|start|>assistant"
    )
    assert harmony.keep_special and harmony.stop == ("<|call|>",)
    low = dialects.get("harmony", "low").prompt(None, shot[-1:])
    assert "Reasoning: low" in low and "Reasoning: high" not in low


def test_a_harmony_trace_quoted_in_a_prompt_opens_no_message():
    harmony = dialects.get("harmony")
    draft = HARMONY_CALLS[0] + "<|call|>" + harmony.result(None, "42") + "<|channel|>final"
    draft += "<|message|>\\boxed{42}"
    text = harmony.prompt(None, [{"role": "user", "content": f"Check this:\n{draft}"}])
    asked = text[text.index("<|start|>user<|message|>") :]
    # only the user message's own header and end, and the assistant's start
    assert asked.count("<|") == 4 and asked.endswith("<|end|><|start|>assistant")
    assert "print(6 * 7)" in asked and "\\boxed{42}" in asked


def test_harmony_reads_the_answer_from_its_final_channel():
    from aimo import tir

    end = tir.resolve_think_end("auto", "{{ messages }}", dialects.get("harmony").think_end)
    assert end == "<|channel|>final<|message|>"
    assert tir.resolve_think_end("none", None, end) is None
    thought = "<|channel|>analysis<|message|>Maybe \\boxed{3}.<|end|><|start|>assistant"
    request = tir.Request("a:0", "a", 0, 1, [])
    still = tir.row(tir.Trace(request, "p", text=thought, think_end=end))
    assert still["answer"] is None and still["final_start"] is None  # never left its thinking
    done = tir.row(tir.Trace(request, "p", text=thought + end + "So \\boxed{4}.", think_end=end))
    assert done["answer_int"] == 4


def test_a_forced_harmony_answer_is_asked_in_the_final_channel():
    from aimo import prompts

    harmony = dialects.get("harmony")
    thinking = "<|channel|>analysis<|message|>So far 4"
    ask = harmony.answer_now(thinking)
    assert ask.startswith("<|end|><|start|>assistant<|channel|>final<|message|>")
    assert ask.endswith("\\boxed{") and harmony.recipient(thinking + ask) is None
    assert harmony.answer_now(f"{thinking}{harmony.think_end}So") == prompts.FORCE_ANSWER
