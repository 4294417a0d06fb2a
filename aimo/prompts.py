"""Every prompt the workflow sends to a model, and the fences that frame code and its output.

Inference, reflexion, critique and the SFT data all build their chat messages here, so that the
text a model is trained on and the text it is asked at inference agree to the character. This
module must never import an engine or touch files.
"""

CODE_FENCE = "```python"
OUTPUT_FENCE = "```output"
FENCE_END = "```"

SYSTEM = "You are a careful competition mathematician who writes Python to check every step."

TIR_INSTRUCTION = (
    "Please integrate natural language reasoning with programs to solve the problem above. "
    "Write Python code in ```python blocks; each block's printed output will be shown to you in "
    "an ```output block. The answer is an integer between 0 and 99999. "
    "Put your final answer within \\boxed{}."
)

# tir.dialect tools: the same request, the code through the model's own `python` tool
TOOLS_INSTRUCTION = (
    "Please integrate natural language reasoning with programs to solve the problem above. "
    "Call the python tool to run code; what it prints comes back to you. The answer is an "
    "integer between 0 and 99999. Put your final answer within \\boxed{}."
)

PYTHON_TOOL_DESCRIPTION = (
    "Run Python 3 code in a stateful session (variables persist between calls) and return "
    "what it prints. math, sympy, numpy and itertools are available; there is no network, "
    "no file system outside a scratch folder, and each call is stopped after a few seconds. "
    "Print the values you need."
)


def for_tools(messages: list[dict]) -> list[dict]:
    """`messages` (any of the requests built here) asking for the python tool in place of
    fenced code blocks."""
    return [
        dict(m, content=(m.get("content") or "").replace(TIR_INSTRUCTION, TOOLS_INSTRUCTION))
        for m in messages
    ]


REFLEXION_INSTRUCTION = (
    "Your previous attempt at this problem went wrong:\n{error}\n"
    "The previous code failed or gave no final answer. Fix it: find the mistake, write corrected "
    "Python code, and put your final answer within \\boxed{{}}."
)

CRITIQUE_INSTRUCTION = (
    "Here is a draft solution to the problem above:\n\n{solution}\n\n"
    "Review the draft. Check for calculation errors, edge cases (n=0, n=1), and logic gaps. "
    "You may write Python code in ```python blocks to check it. Then state the corrected final "
    "answer (the same one if the draft is right) within \\boxed{{}}."
)


# In place of a code block's output once a trace's code blocks are used up (tir.max_rounds)
NO_MORE_CODE = "No more code can run. Give the final answer now, as \\boxed{integer}."


# After a cancelled trace's text, when none of a problem's traces answered in time (s1's budget
# forcing); the model writes the rest of the box
FORCE_ANSWER = "\n\nTime is up. The final answer is \\boxed{"


def force_answer(text: str) -> str:
    """What follows a cut trace's `text` to ask for its answer: its open code block closed."""
    close = "\n" + FENCE_END if text.count(FENCE_END) % 2 else ""
    return close + FORCE_ANSWER


def user_prompt(problem: str) -> str:
    """The user turn that asks for a tool-integrated solution of `problem`."""
    return f"{problem.strip()}\n\n{TIR_INSTRUCTION}"


def tir_messages(problem: str) -> list[dict]:
    """Chat messages for a first attempt at `problem`."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user_prompt(problem)},
    ]


def reflexion_messages(problem: str, error: str) -> list[dict]:
    """Chat messages asking the model to repair an attempt that failed with `error`."""
    text = f"{problem.strip()}\n\n{REFLEXION_INSTRUCTION.format(error=error.strip())}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def critique_messages(problem: str, solution: str) -> list[dict]:
    """Chat messages asking the model to review `solution` and give a corrected answer."""
    text = f"{problem.strip()}\n\n{CRITIQUE_INSTRUCTION.format(solution=solution.strip())}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def clean_error(text, limit: int) -> str:
    """`text` made safe for a prompt: printable, and at most `limit` characters (tail kept,
    where tracebacks put the cause)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in (text or ""))
    text = text.strip()
    if len(text) > limit:
        text = "...[cut]...\n" + text[-limit:]
    return text


def output_block(output: str) -> str:
    """The text appended after a code block: its real output, fenced as the model expects."""
    return f"{OUTPUT_FENCE}\n{output.rstrip()}\n{FENCE_END}\n"
