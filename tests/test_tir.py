import json
import math
from pathlib import Path

import pytest
from conftest import need_shared

from aimo import prompts, tir
from aimo.answers import extract_answer

pytestmark = pytest.mark.needs("unit")


def test_last_code_block():
    text = "Let me compute.\n```python\nx = 1\nprint(x)\n```\nok\n```python\nprint(2)\n```\n"
    assert tir.last_code_block(text) == "print(2)"
    assert tir.last_code_block("```python\nprint(3)\n") == "print(3)"  # cut by the stop fence
    assert tir.last_code_block("no code here") is None
    assert tir.last_code_block("```python\n\n```") is None


def test_seeds_are_stable_distinct_and_independent_of_n():
    problems = [{"problem_id": "a", "problem": "p"}, {"problem_id": "b", "problem": "q"}]
    first = tir.requests(problems, range(2, 4), seed=5)
    assert [r.sample for r in first] == [2, 3, 2, 3]
    assert len({r.seed for r in first}) == 4
    again = tir.requests(problems, range(2, 4), seed=5)
    assert [r.seed for r in first] == [r.seed for r in again]
    assert [r.seed for r in tir.requests(problems, range(2, 4), seed=6)] != [r.seed for r in first]
    assert first[0].trace_id == "a:2" and first[0].messages == prompts.tir_messages("p")


def test_request_seeds_are_pinned():
    """The seeds of rows already stored (runs/vote_bench, made with the global seed 2026) and
    of a shard past the first, computed before the request builder was shared: a change to
    how requests are built must leave them as they are."""
    problems = [
        {"problem_id": "gsm8k-0000", "problem": "p"},
        {"problem_id": "gsm8k-0001", "problem": "q"},
    ]
    stored = {r.trace_id: r.seed for r in tir.requests(problems, range(2), seed=2026)}
    assert stored["gsm8k-0000:0"] == 4080868028617218185
    assert stored["gsm8k-0000:1"] == 4001360861417021217
    assert stored["gsm8k-0001:1"] == 7374828174477301484
    later = tir.requests([{"problem_id": "abc", "problem": "y"}], range(2, 4), seed=2026)
    assert [(r.trace_id, r.sample, r.seed) for r in later] == [
        ("abc:2", 2, 8098247159525788709),
        ("abc:3", 3, 3620534266215750141),
    ]


def test_output_block_is_fenced():
    assert prompts.output_block("42\n") == "```output\n42\n```\n"


def make_trace(**kw):
    return tir.Trace(tir.Request("a:0", "a", 0, 1, []), "prompt", **kw)


def test_entropy_of_top_k_log_probabilities():
    e = tir.Entropy(tail=2)
    e.add([math.log(0.5), math.log(0.5)])  # ln 2
    e.add([0.0, -math.inf])  # certain: 0 (a zero probability adds nothing)
    e.add([math.log(0.25)] * 4)  # ln 4
    mean, tail = e.means()
    assert mean == pytest.approx((math.log(2) + math.log(4)) / 3)
    assert tail == pytest.approx(math.log(4) / 2)  # the last 2 positions: no answer marked
    e.add([float("nan"), 0.0])  # a NaN position is left out, not a NaN mean
    assert e.n == 3 and math.isfinite(e.means()[0])
    e.answer_starts()  # the tail is taken where the final answer starts
    e.add([math.log(0.5)] * 2)
    assert e.means()[1] == pytest.approx(math.log(4) / 2)


def test_row_of_a_trace_with_no_tokens_or_no_log_probabilities():
    r = tir.row(make_trace())  # zero tokens: nothing measured, nothing certain
    assert r["mean_logprob"] is None and r["mean_entropy"] is None and r["tail_entropy"] is None
    r = tir.row(make_trace(completion_tokens=5, logprob_sum=0.0, logprobs_known=False))
    assert r["mean_logprob"] is None  # a missing cumulative log-probability is not certainty
    r = tir.row(make_trace(completion_tokens=5, logprob_sum=0.0))
    assert r["mean_logprob"] == 0.0


R1_TRACES = Path(__file__).resolve().parents[2] / "shared/data/tir_traces_aimo2_r1distill.jsonl"


def test_think_end_auto_follows_the_chat_template():
    r1 = "{% set content = content.split('</think>')[-1] %}{{ content }}"
    assert tir.resolve_think_end("auto", r1) == "</think>"
    assert tir.resolve_think_end("auto", "{{ messages }}") is None
    assert tir.resolve_think_end("auto", None) is None
    assert tir.resolve_think_end("none", r1) is None
    assert tir.resolve_think_end("<|end_think|>", None) == "<|end_think|>"


def test_without_a_thinking_channel_the_whole_text_is_read():
    row = tir.row(make_trace(text="I think \\boxed{12}, so", completion_tokens=9))
    assert row["answer_int"] == 12
    assert row["final_start"] is None and row["reasoning_tokens"] is None


def test_a_thinking_trace_is_graded_on_its_final_text_only():
    still = tir.row(
        make_trace(text="<think>maybe \\boxed{3}", completion_tokens=7, think_end="</think>")
    )
    assert still["answer"] is None and still["final_start"] is None
    assert still["reasoning_tokens"] == 7  # all of it: it never left its thinking
    text = "maybe \\boxed{3}? no.</think>The answer is \\boxed{4}."
    done = tir.row(
        make_trace(text=text, completion_tokens=20, think_end="</think>", reasoning_tokens=12)
    )
    assert done["answer_int"] == 4 and text[done["final_start"] :] == "The answer is \\boxed{4}."
    assert done["reasoning_tokens"] == 12
    boxed_only_in_thought = "so \\boxed{3}.</think>I am done."
    assert tir.row(make_trace(text=boxed_only_in_thought, think_end="</think>"))["answer"] is None


def test_real_r1_distill_traces_are_read_after_their_thinking():
    """The 22 real DeepSeek-R1-Distill outputs: their prompt opens <think>, most completions
    close it. Read whole, every one that boxes an answer counts; read as the model means it,
    one that boxes only inside its thinking, or never closes it, is unanswered."""
    rows = [json.loads(line) for line in need_shared(R1_TRACES).read_text().splitlines()]
    read = [tir.row(make_trace(text=r["completion"], think_end="</think>")) for r in rows]
    whole = [tir.row(make_trace(text=r["completion"])) for r in rows]
    never_closed = [r for r in rows if "</think>" not in r["completion"]]
    assert len(never_closed) == 3 and all(
        x["answer"] is None for x, r in zip(read, rows) if r in never_closed
    )
    for x, r in zip(read, rows):
        final = r["completion"][r["completion"].find("</think>") + len("</think>") :]
        if r in never_closed:
            continue
        assert x["final_start"] == len(r["completion"]) - len(final)
        assert x["answer"] == extract_answer(final)
    answered_whole = sum(w["answer"] is not None for w in whole)
    answered_final = sum(x["answer"] is not None for x in read)
    assert answered_final == 14 and answered_whole > answered_final
