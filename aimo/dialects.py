"""How a trace asks for code and gets its output back: `tir.dialect`.

- `fenced` (the default): ```python blocks; a round stops at the ```output fence the model
  would write next, and the real output follows as a fenced block. The format of
  NuminaMath-TIR, Qwen2.5-Math, OpenMath and the plan's R1 distill.
- `tools`: the model's own chat template with a `python` tool, in the hermes format
  (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`: Qwen2.5, Qwen3, Hermes and the
  templates that follow them). A round stops at the call's end; the code is the call's
  `arguments.code`, and its output goes back as a tool message rendered by the same template.

Both write the same rows: each call is a block of `code_blocks` with its output and status.
"""

import json

from aimo import prompts
from aimo.tir import last_code_block

DIALECTS = ("fenced", "tools")

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


class Tools:
    name = "tools"
    CALL, END = "<tool_call>", "</tool_call>"
    stop = (END,)
    follows = ""
    # a forced call is opened up to its code: the 1.5B, given only the tag, wrote prose after it
    opening = CALL + '\n{"name": "python", "arguments": {"code": "'
    special_turns = True  # the tool turn holds the template's special tokens

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


def get(name: str):
    """The dialect `tir.dialect` names."""
    if name == "fenced":
        return Fenced()
    if name == "tools":
        return Tools()
    raise ValueError(f"tir.dialect {name!r}: expected one of {DIALECTS}")
