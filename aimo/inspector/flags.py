"""The inspector's flags, each defined once: its name, what it means, and the test that raises it.

A trace flag's test takes (trace, execution, correct): a TRACES row, its EXECUTIONS row (None
when it has none) and the problem's known answer (None when unknown); a problem flag's takes
(pick, answers): the submission strategy's voted answer and the answers of the traces that
vote. A test returns the flag's detail (a short sentence) when the flag is up, else None.
This module reads rows only: no files, no DuckDB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from aimo.answers import ANSWER_MAX, ANSWER_MIN, in_range
from aimo.prompts import FORCE_ANSWER
from aimo.schemas import CANCELLED, NO_CODE, NOT_RUN, OK

__all__ = ["Flag", "FLAGS", "BY_NAME", "TAIL_CHARS", "TRUNCATED", "trace_flags", "problem_flags"]

# the finish reasons (schemas.FINISHED) of a trace cut by its token budget or the context
TRUNCATED = ("length", "prompt_too_long")
# how far from the end of a trace's text an unboxed answer is looked for
TAIL_CHARS = 1000


@dataclass(frozen=True)
class Flag:
    """One flag: `name` (the id in the pages' filters), `label` (shown), `about` (its
    definition, shown in the legend), `level` (trace or problem) and `test`."""

    name: str
    label: str
    about: str
    level: str
    test: Callable[..., str | None]


def _no_answer(t, ex, correct):
    if not (t["answer"] or "").strip():
        return "no \\boxed{} answer and no 'the answer is' sentence"
    return None


def _unextracted(t, ex, correct):
    if correct is None or in_range(t["answer_int"]):
        return None
    tail = (t["text"] or "")[-TAIL_CHARS:]
    if re.search(rf"(?<![\d.]){int(correct)}(?!\.?\d)", tail):
        return f"the correct answer {correct} is written near the end, but not as the answer"
    return None


def _truncated(t, ex, correct):
    if t["finish_reason"] == "length":
        return "stopped at the token budget or the end of the context"
    if t["finish_reason"] == "prompt_too_long":
        return "the prompt did not fit the context"
    return None


def _code_failed(t, ex, correct):
    bad = [
        f"block {i}: {b['status']}"
        for i, b in enumerate(t["code_blocks"] or [], 1)
        if b["status"] not in (OK, NOT_RUN)
    ]
    if ex is not None and ex["exec_status"] not in (OK, NO_CODE):
        bad.append(f"re-run: {ex['exec_status']}")
    return "; ".join(bad) or None


def _out_of_range(t, ex, correct):
    answer = (t["answer"] or "").strip()
    if not answer or in_range(t["answer_int"]):
        return None
    if t["answer_int"] is None:
        return f"'{answer[:60]}' is not an integer"
    return f"{t['answer_int']} is outside [{ANSWER_MIN}, {ANSWER_MAX}]"


def _forced(t, ex, correct):
    if FORCE_ANSWER in (t["text"] or ""):
        return "answered only when asked for its answer at the deadline (online.force_traces)"
    return None


def _cancelled(t, ex, correct):
    if t["finish_reason"] in CANCELLED:
        return f"stopped by the scheduler: {t['finish_reason']}"
    return None


def _minority_pick(pick, answers):
    if pick is None or not answers:
        return None
    support = sum(a == pick for a in answers)
    if 2 * support < len(answers):
        return f"{support} of the {len(answers)} traces that vote give {pick}"
    return None


FLAGS = (
    Flag("no_answer", "no answer", "The trace gives no answer at all.", "trace", _no_answer),
    Flag(
        "unextracted",
        "answer not extracted",
        f"The known answer is written in the last {TAIL_CHARS} characters of the text (prose "
        "or a code output), but what was extracted is not a valid answer.",
        "trace",
        _unextracted,
    ),
    Flag(
        "truncated",
        "truncated",
        "The trace ended at its token budget or the context length (finish reason length or "
        "prompt_too_long).",
        "trace",
        _truncated,
    ),
    Flag(
        "code_failed",
        "code error",
        "A code block ended in an error, a timeout, the memory limit or another sandbox "
        "failure, in the trace or in execute's re-run.",
        "trace",
        _code_failed,
    ),
    Flag(
        "out_of_range",
        "out of range",
        f"The answer given is not an integer in [{ANSWER_MIN}, {ANSWER_MAX}].",
        "trace",
        _out_of_range,
    ),
    Flag(
        "forced",
        "forced answer",
        "The answer came from budget forcing: the trace was asked for it at the deadline.",
        "trace",
        _forced,
    ),
    Flag(
        "cancelled",
        "cancelled",
        "The scheduler stopped the trace (early stop, deadline, pruned for low confidence, or "
        "never started).",
        "trace",
        _cancelled,
    ),
    Flag(
        "minority_pick",
        "minority pick",
        "The submission's answer is given by fewer than half of the traces that vote.",
        "problem",
        _minority_pick,
    ),
)
BY_NAME = {f.name: f for f in FLAGS}


def trace_flags(trace: dict, execution: dict | None, correct: int | None) -> dict:
    """{flag name: detail} of the trace flags that `trace` raises."""
    out = {}
    for f in FLAGS:
        if f.level == "trace":
            detail = f.test(trace, execution, correct)
            if detail:
                out[f.name] = detail
    return out


def problem_flags(pick: int | None, answers: list) -> dict:
    """{flag name: detail} of the problem flags raised by the vote's `pick` and the `answers`
    (answer_int, None for none) of the traces that vote."""
    out = {}
    for f in FLAGS:
        if f.level == "problem":
            detail = f.test(pick, answers)
            if detail:
                out[f.name] = detail
    return out
