"""How a trace asks for code and gets its output back: `tir.dialect`.

- `fenced` (the default): ```python blocks; a round stops at the ```output fence the model
  would write next, and the real output follows as a fenced block. The format of
  NuminaMath-TIR, Qwen2.5-Math, OpenMath and the plan's R1 distill.
- `tools`: the model's own chat template with a `python` tool, in the hermes format
  (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`: Qwen2.5, Qwen3, Hermes and the
  templates that follow them). A round stops at the call's end; the code is the call's
  `arguments.code`, and its output goes back as a tool message rendered by the same template.
- `harmony`: OpenAI's harmony format (gpt-oss), rendered by the reference renderer
  (`openai_harmony`, which vLLM itself uses for gpt-oss) with its built-in `python` tool. The
  model thinks in its analysis channel, calls the tool with a message addressed `to=python`
  ended by `<|call|>`, reads the result as a message from `python`, and answers in its final
  channel, which is the trace's final text (`think_end`). Its text keeps the special tokens:
  they are its structure.

Both write the same rows: each call is a block of `code_blocks` with its output and status.
"""

import functools
import json
import re

from aimo import prompts
from aimo.tir import last_code_block

DIALECTS = ("fenced", "tools", "harmony")

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": prompts.PYTHON_TOOL_DESCRIPTION,
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}


class Fenced:
    name = "fenced"
    stop = (prompts.OUTPUT_FENCE,)
    follows = prompts.OUTPUT_FENCE  # the output's start, which the model's stop tokens spell
    opening = prompts.CODE_FENCE + "\n"  # a trace's text starts so where its first call is forced
    special_turns = False  # its output needs no special tokens: the text spells it all
    keep_special = False  # the text is decoded without special tokens
    think_end = None  # no channel of its own: tir.think_end auto reads the chat template

    def prompt(self, tok, messages) -> str:
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def code(self, text: str) -> str | None:
        return last_code_block(text)

    def unclosed(self, text: str) -> bool:
        """A call the round ended in without its closing stop (at the model's end of turn)."""
        return False  # a block is only run at the output fence the model writes

    def close(self, text: str) -> str:
        """What follows a round's text before its output: a newline where it lacks one."""
        return "" if text.endswith("\n") else "\n"

    def result(self, tok, output: str) -> str:
        return prompts.output_block(output)

    def answer_now(self, text: str) -> str:
        """What follows a cut trace's `text` to ask for its answer (budget forcing)."""
        return prompts.force_answer(text)


class Tools:
    name = "tools"
    CALL, END = "<tool_call>", "</tool_call>"
    stop = (END,)
    follows = ""
    # a forced call is opened up to its code: the 1.5B, given only the tag, wrote prose after it
    opening = CALL + '\n{"name": "python", "arguments": {"code": "'
    special_turns = True  # the tool turn holds the template's special tokens
    keep_special = False
    think_end = None

    def __init__(self):
        self.turn = None  # (before, after) the output in the template's tool turn

    def prompt(self, tok, messages) -> str:
        return tok.apply_chat_template(
            prompts.for_tools(messages),
            tools=[PYTHON_TOOL],
            add_generation_prompt=True,
            tokenize=False,
        )

    def code(self, text: str) -> str | None:
        """The code of the round's last call, or None where it made none. A call that is not
        the python tool's valid JSON becomes code that raises saying so: it runs like any
        failing block, and the model reads the error."""
        at = text.rfind(self.CALL)
        if at < 0:
            return None
        body = text[at + len(self.CALL) :].strip()
        try:
            call = json.loads(body)
            args = call.get("arguments", {})
            args = json.loads(args) if isinstance(args, str) else args
            if call.get("name") != "python":
                problem = f"there is no tool {call.get('name')!r}; the one tool is python"
            elif not isinstance(args.get("code"), str):
                problem = 'the python tool takes {"code": "<Python source>"}'
            else:
                return args["code"]
        except (ValueError, AttributeError) as exc:
            problem = f"the tool call is not valid JSON ({exc})"
        return f"raise ValueError({problem!r})"

    def unclosed(self, text: str) -> bool:
        """The round ended (at the model's end of turn) inside a call it never closed: taken
        as a call, as vLLM's hermes parser takes one. The 1.5B, its call opened for it,
        writes the JSON and ends its turn without </tool_call>."""
        return text.rfind(self.CALL) > text.rfind(self.END)

    def close(self, text: str) -> str:
        return self.END

    def result(self, tok, output: str) -> str:
        """The tool turn after a call, as the model's chat template renders it, up to the
        assistant's next turn: the end of this turn, the tool message, the start of the next."""
        if self.turn is None:
            self.turn = tool_turn(tok)
        before, after = self.turn
        return before + output.rstrip() + after

    def answer_now(self, text: str) -> str:
        return prompts.force_answer(text)


def tool_turn(tok) -> tuple[str, str]:
    """What the chat template writes between an assistant's text and the next assistant turn
    around a tool message, split at the message's content."""
    mark, out = "\x00ASSISTANT\x00", "\x00OUTPUT\x00"
    base = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
    plain = tok.apply_chat_template(base, tokenize=False)
    full = tok.apply_chat_template(
        [*base, {"role": "tool", "content": out}], tokenize=False, add_generation_prompt=True
    )
    end = plain.find(mark) + len(mark)
    if end < len(mark) or full[:end] != plain[:end] or out not in full[end:]:
        raise ValueError(
            "the model's chat template does not render a tool message after an assistant "
            "turn: use tir.dialect fenced with this model"
        )
    return tuple(full[end:].split(out, 1))


class Harmony:
    name = "harmony"
    MESSAGE, CALL, START, END = "<|message|>", "<|call|>", "<|start|>", "<|end|>"
    stop = (CALL,)  # gpt-oss also ends a call with <|call|> as an end of turn: see unclosed
    follows = ""
    opening = "<|channel|>analysis to=python code<|message|>"
    special_turns = True
    keep_special = True  # <|channel|>, <|message|>, ...: the text's structure
    think_end = "<|channel|>final<|message|>"  # the final channel's text is the answer's
    TOOLS = ("python", "functions.python")  # the built-in tool, or a function so named

    def __init__(self, effort: str = "high"):
        self.effort, self.turn = effort, None

    def prompt(self, tok, messages) -> str:
        """`messages` in harmony: the system message with the python tool and the reasoning
        effort, the request's system prompt as the developer's instructions, the user's
        turns; worked examples may hold assistant `tool_calls` and `tool` results."""
        return render(_harmony_messages(prompts.for_tools(messages), self.effort))

    def recipient(self, text: str) -> str | None:
        """Whom the text's last message is addressed to (`to=...` in its header), or None."""
        at = text.rfind(self.MESSAGE)
        if at < 0:
            return None
        head = text[max(text.rfind(self.START, 0, at), text.rfind(self.END, 0, at), 0) : at]
        found = re.search(r"to=([^\s<]+)", head)
        return found.group(1) if found else None

    def code(self, text: str) -> str | None:
        """The code of the last message where it is addressed to a tool; None where the
        round ended a message to nobody (the final answer). A call to another tool becomes
        code that raises saying so."""
        to = self.recipient(text)
        if to is None:
            return None
        if to not in self.TOOLS:
            return f"raise ValueError({f'there is no tool {to!r}; the one tool is python'!r})"
        body = text[text.rfind(self.MESSAGE) + len(self.MESSAGE) :]
        return body.removesuffix(self.CALL)

    def unclosed(self, text: str) -> bool:
        """A round gpt-oss ended at <|call|> as its end of turn (its generation config lists
        it): the message is a call where it is addressed to a tool."""
        return self.recipient(text) is not None

    def close(self, text: str) -> str:
        return "" if text.endswith(self.CALL) else self.CALL

    def result(self, tok, output: str) -> str:
        """The python tool's message and the assistant's next turn, as harmony renders them."""
        if self.turn is None:
            self.turn = harmony_tool_turn()
        before, after = self.turn
        return before + output.rstrip() + after

    def answer_now(self, text: str) -> str:
        """The answer is the final channel's: a trace cut before it is moved there."""
        if self.think_end in text:
            return prompts.FORCE_ANSWER
        return self.END + self.START + "assistant" + self.think_end + prompts.FORCE_ANSWER.lstrip()


# a message's header (role, channel, recipient) and its ends, in text quoted into a message
_HARMONY_MARKUP = re.compile(
    r"(?:<\|start\|>[^<]*)?<\|channel\|>[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"|<\|(?:start|end|call|return|message|channel|constrain)\|>"
)


def plain(text: str) -> str:
    """Harmony text with its markup taken out, each header and end a line break: a trace
    quoted in a later prompt (a critique's draft) must not open messages of its own."""
    return _HARMONY_MARKUP.sub("\n", text)


def _harmony_messages(messages: list[dict], effort: str) -> list:
    import openai_harmony as h

    system = h.SystemContent.new().with_reasoning_effort(h.ReasoningEffort(effort.capitalize()))
    system = system.with_tools(
        h.ToolNamespaceConfig(name="python", description=prompts.PYTHON_TOOL_DESCRIPTION, tools=[])
    )
    out = [h.Message.from_role_and_content(h.Role.SYSTEM, system)]
    for m in messages:
        role, content = m["role"], plain(m.get("content") or "")
        if role == "system":
            dev = h.DeveloperContent.new().with_instructions(content)
            out.append(h.Message.from_role_and_content(h.Role.DEVELOPER, dev))
        elif role == "user":
            out.append(h.Message.from_role_and_content(h.Role.USER, content))
        elif role == "tool":
            author = h.Author.new(h.Role.TOOL, "python")
            msg = h.Message.from_author_and_content(author, content)
            out.append(msg.with_channel("analysis").with_recipient("assistant"))
        elif role == "assistant":
            for call in m.get("tool_calls") or ():
                args = call["function"]["arguments"]
                args = json.loads(args) if isinstance(args, str) else args
                msg = h.Message.from_role_and_content(h.Role.ASSISTANT, args["code"])
                out.append(
                    msg.with_channel("analysis").with_recipient("python").with_content_type("code")
                )
            if content:
                msg = h.Message.from_role_and_content(h.Role.ASSISTANT, content)
                out.append(msg.with_channel("final"))
        else:
            raise ValueError(f"a message of role {role!r} has no harmony form")
    return out


@functools.cache
def harmony_encoding():
    import openai_harmony as h

    return h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)  # ~0.3 s a load


def render(messages: list) -> str:
    """harmony messages as the text of a completion prompt for the assistant."""
    import openai_harmony as h

    enc = harmony_encoding()
    conv = h.Conversation.from_messages(messages)
    return enc.decode(enc.render_conversation_for_completion(conv, h.Role.ASSISTANT))


def harmony_tool_turn() -> tuple[str, str]:
    """What harmony writes after a call's <|call|> around the python tool's output, up to
    the assistant's next turn, split at the output."""
    out = "\x00OUTPUT\x00"
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": {"code": "x"}}}]},
        {"role": "tool", "content": out},
    ]
    text = render(_harmony_messages(msgs, "high"))
    return tuple(text[text.rindex(Harmony.CALL) + len(Harmony.CALL) :].split(out, 1))


def get(name: str, reasoning_effort: str = "high"):
    """The dialect `tir.dialect` names (harmony's system message states `reasoning_effort`)."""
    if name == "fenced":
        return Fenced()
    if name == "tools":
        return Tools()
    if name == "harmony":
        return Harmony(reasoning_effort)
    raise ValueError(f"tir.dialect {name!r}: expected one of {DIALECTS}")
