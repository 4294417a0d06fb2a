"""The continuous-batching scheduler on a real engine (SmolLM2-135M-Instruct through vLLM) and
the real sandbox: token-id continuations, admission, early stop, deadlines, prompts that do
not fit. The tiny model rarely closes a code block by itself, so most requests here show it
two worked examples first; it then writes a block, stops at the output fence and goes on
after the real output."""

import json
import random
import threading
import time

import pytest

from aimo import config, policies, prompts, scheduler, tir
from aimo.engines import embedded
from aimo.sandbox import Sandbox
from aimo.schemas import CANCELLED
from aimo.tables import comparable

pytestmark = pytest.mark.needs("engine")

# a complete sampling section (the scheduler reads every key), log-probabilities off
SAMPLING = dict(
    config.defaults("sampling"), temperature=0.8, top_p=0.95, max_tokens=200, top_logprobs=0
)
WORKED = [  # question, code, its output (the answer)
    ("What is 6 times 7? Use Python.", "print(6 * 7)", "42"),
    ("What is 2 to the power 10? Use Python.", "print(2 ** 10)", "1024"),
]


def shots(box_first=False):
    """The two worked examples: code, its output, then the boxed answer; or, `box_first`, the
    answer stated first and then checked with code (a trace has its box before its first block
    returns)."""
    messages = []
    for question, code, answer in WORKED:
        checked = f"```python\n{code}\n```\n```output\n{answer}\n```\n"
        box = f"The answer is \\boxed{{{answer}}}."
        reply = f"{box}\n{checked}" if box_first else checked + box
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return messages


SHOTS = shots()
QUESTIONS = {
    "mul": "What is 12 times 13? Use Python.",
    "pow": "What is 3 to the power 5? Use Python.",
}


def requests(samples=4, questions=QUESTIONS):
    return [
        tir.Request(
            f"{pid}:{s}",
            pid,
            s,
            tir.derive_seed(3, pid, s),
            SHOTS + [{"role": "user", "content": q}],
        )
        for pid, q in questions.items()
        for s in range(samples)
    ]


@pytest.fixture(scope="module")
def llm(tiny_model):
    eng = embedded.Embedded(
        embedded.load(tiny_model, dtype="auto", max_model_len=1024, seed=0, in_process=True)
    )
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2) as sb:
        yield sb


def run(
    llm, sandbox, reqs, max_rounds=3, max_model_len=1024, sampling=SAMPLING, deadline=None, **kw
):
    """scheduler.run with these options (scheduler.RunOptions' keywords in `kw`)."""
    stats = {}
    options = scheduler.RunOptions(sampling, max_rounds, max_model_len, **kw)
    rows = scheduler.run(llm, reqs, sandbox, options, stats, deadline=deadline)
    return rows, stats


def test_continuations_are_the_sampled_token_ids(llm, sandbox):
    rows, stats = run(llm, sandbox, requests())
    assert [r["trace_id"] for r in rows] == [r.trace_id for r in requests()]
    ran = [r for r in rows if r["n_code_calls"]]
    assert len(ran) >= 4 and stats["continuations"] >= len(ran)
    # the invariant decode(ids after the prompt) == text is checked after every round
    assert stats.get("tokens_rebuilt", 0) == 0
    assert stats["cached_tokens"] > 0  # continuations hit the prefix cache
    for r in ran:
        assert "```output\n" in r["text"] and r["code_blocks"][0]["status"] == "ok"
        assert sum(r["round_tokens"]) == r["completion_tokens"]
        assert len(r["round_tokens"]) == r["n_code_calls"] + 1
    assert {r["answer"] for r in ran} & {"156", "243"}


def test_a_mismatch_between_ids_and_text_is_seen(llm):
    tok = llm.tokenizer
    ids = tok.encode("x = 1\n", add_special_tokens=False)
    live = scheduler._Live(tir.Trace(requests()[0], "", text="x = 1\n"), list(ids), 0, None)
    assert scheduler.tokens_match(tok, live)
    live.trace.text = "x = 2\n"
    assert not scheduler.tokens_match(tok, live)


def test_admission_bounds_the_traces_in_flight(llm, sandbox):
    rows, stats = run(llm, sandbox, requests(), max_in_flight=2)
    assert stats["in_flight_max"] == 2
    assert len(rows) == 8 and all(r["finish_reason"] for r in rows)
    assert scheduler.default_max_in_flight(llm, SAMPLING, 1024) > 8


def test_early_stop_at_one_answer_cancels_the_rest(llm, sandbox):
    rows, stats = run(llm, sandbox, requests(samples=6), early_stop=1)
    for pid in QUESTIONS:
        mine = [r for r in rows if r["problem_id"] == pid]
        finished = [r for r in mine if r["finish_reason"] != "early_stop"]
        cancelled = [r for r in mine if r["finish_reason"] == "early_stop"]
        assert cancelled, f"{pid}: nothing was cancelled"
        assert any(r["answer_int"] is not None for r in finished)
        # a cancelled trace keeps what it wrote
        for r in cancelled:
            assert sum(r["round_tokens"]) == r["completion_tokens"]
    assert stats["cancelled_early_stop"] == sum(r["finish_reason"] == "early_stop" for r in rows)


def test_a_deadline_already_past_cancels_everything_at_once(llm, sandbox, tmp_path):
    started = time.monotonic()
    rows, stats = run(llm, sandbox, requests(), deadline=time.monotonic() - 1)
    assert time.monotonic() - started < 5
    assert [r["finish_reason"] for r in rows] == ["deadline"] * 8
    assert all(r["completion_tokens"] == 0 and r["text"] == "" for r in rows)
    # the rows are a table like any other
    from aimo.schemas import TRACES
    from aimo.tables import read_table, write_table

    write_table(rows, tmp_path / "t.parquet", TRACES)
    assert read_table(tmp_path / "t.parquet", TRACES).num_rows == 8


def test_a_deadline_per_problem_cancels_only_that_problem(llm, sandbox):
    rows, _ = run(llm, sandbox, requests(samples=2), deadline={"mul": time.monotonic() - 1})
    assert {r["finish_reason"] for r in rows if r["problem_id"] == "mul"} == {"deadline"}
    assert "deadline" not in {r["finish_reason"] for r in rows if r["problem_id"] == "pow"}


def test_a_prompt_longer_than_the_context_is_a_row(llm, sandbox):
    long = tir.Request("long:0", "long", 0, 1, prompts.tir_messages("word " * 1100))
    rows, _ = run(llm, sandbox, [long] + requests(samples=1))
    assert rows[0]["finish_reason"] == "prompt_too_long" and rows[0]["prompt_tokens"] > 1024
    assert rows[0]["completion_tokens"] == 0
    assert all(r["finish_reason"] != "prompt_too_long" for r in rows[1:])


def test_a_continuation_past_the_context_ends_as_length(llm, sandbox):
    reqs = requests(samples=2)
    tok = llm.tokenizer
    text = tok.apply_chat_template(reqs[0].messages, add_generation_prompt=True, tokenize=False)
    prompt_len = len(tok.encode(text, add_special_tokens=False))
    # room for the first round (the code block) but not for its output and a second round
    rows, _ = run(llm, sandbox, reqs, max_model_len=prompt_len + 24)
    ran = [r for r in rows if r["n_code_calls"]]
    assert ran and all(r["finish_reason"] == "length" for r in ran)


def test_same_seeds_same_traces_when_nothing_else_differs(llm, sandbox):
    first, _ = run(llm, sandbox, requests())
    again, _ = run(llm, sandbox, requests())
    assert [r["text"] for r in first] == [r["text"] for r in again]


def test_entropies_are_those_of_the_engines_top_k(llm, sandbox):
    """mean_entropy and tail_entropy, folded in as the tokens stream, equal the entropies
    recomputed from one plain llm.generate of the same round (same seed, same prompt)."""
    import math

    from vllm import SamplingParams, TokensPrompt

    sampling = dict(SAMPLING, max_tokens=40, top_logprobs=5, tail_tokens=8)
    sampling.update(conf_window=8, conf_stride=4)
    req = tir.Request("plain:0", "plain", 0, 11, prompts.tir_messages("What is 2 + 2?"))
    rows, _ = run(llm, sandbox, [req], max_rounds=0, sampling=sampling)
    r = rows[0]
    tok = llm.tokenizer
    text = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    params = SamplingParams(
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        max_tokens=40,
        seed=tir.derive_seed(req.seed, 0),
        stop=[prompts.OUTPUT_FENCE],
        logprobs=5,
    )
    out = llm.llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)[0].outputs[
        0
    ]
    assert out.text == r["text"][: len(out.text)] and len(out.token_ids) == r["completion_tokens"]
    per_token = [
        -sum(math.exp(lp.logprob) * lp.logprob for lp in pos.values() if lp.rank <= 5)
        for pos in out.logprobs
    ]
    assert 0 <= r["mean_entropy"] <= math.log(5) + 1e-9
    assert r["mean_entropy"] == pytest.approx(sum(per_token) / len(per_token), rel=1e-6)
    if "\\boxed" not in r["text"]:  # no answer: the tail is the trace's last 8 tokens
        assert r["tail_entropy"] == pytest.approx(sum(per_token[-8:]) / 8, rel=1e-6)
    # token confidence (DeepConf): minus the mean top-5 log-probability, its window means
    conf = [-sum(lp.logprob for lp in pos.values() if lp.rank <= 5) / 5 for pos in out.logprobs]
    ends = policies.positions(8, 4, len(conf))
    assert len(ends) >= 2 and len(r["window_conf"]) == len(ends)
    for got, end in zip(r["window_conf"], ends):
        assert got == pytest.approx(sum(conf[end - 8 : end]) / 8, rel=1e-5)
    assert r["min_conf"] == pytest.approx(min(r["window_conf"]), rel=1e-6)
    assert r["tail_conf"] == pytest.approx(sum(conf[-8:]) / 8, rel=1e-6)
    # asked for no top-k: no entropy, no confidence
    rows, _ = run(llm, sandbox, [req], max_rounds=0, sampling=dict(sampling, top_logprobs=0))
    assert rows[0]["mean_entropy"] is None and rows[0]["tail_entropy"] is None
    assert rows[0]["min_conf"] is None and rows[0]["window_conf"] is None
    assert rows[0]["mean_logprob"] is not None


class DelayedSandbox:
    """The real sandbox, whose block results come back after a random extra time (a test
    hook: the code runs as always, only later)."""

    def __init__(self, sandbox, seed, max_s=0.15):
        self.sandbox, self.rng, self.max_s = sandbox, random.Random(seed), max_s
        self.lock = threading.Lock()

    def session(self, **kw):
        outer, inner = self, self.sandbox.session(**kw)

        class Session:
            def run(self, code):
                result = inner.run(code)
                with outer.lock:
                    extra = outer.rng.uniform(0, outer.max_s)
                time.sleep(extra)
                return result

            def close(self):
                inner.close()

        return Session()


def test_random_block_times_give_the_same_rows(llm, sandbox):
    """The deterministic schedule: blocks that take different, random extra times in two
    runs give identical rows (text, tokens, log-probabilities, entropies, finish reasons)."""
    sampling = dict(SAMPLING, top_logprobs=5)
    reqs = requests(samples=4)
    # up to 0.6 s: longer than rejoin_steps (4) steps of the tiny model, even on a busy machine
    first, s1 = run(llm, DelayedSandbox(sandbox, 1, max_s=0.6), reqs, sampling=sampling)
    again, s2 = run(llm, DelayedSandbox(sandbox, 2, max_s=0.6), reqs, sampling=sampling)
    assert sum(r["n_code_calls"] for r in first) >= 4
    # the delays were felt: the loop held the engine for blocks not back when due
    late = s1.get("late_blocks", 0) + s2.get("late_blocks", 0)
    assert late > 0 and s1.get("wait_s", 0) + s2.get("wait_s", 0) > 0
    assert comparable(first) == comparable(again)


def test_the_deterministic_schedule_needs_an_in_process_engine(mp_llm, sandbox):
    with pytest.raises(ValueError, match="set scheduler.mode: free"):
        run(mp_llm, sandbox, requests(samples=1))
    with pytest.raises(ValueError, match="schedule 'lockstep'"):
        run(mp_llm, sandbox, requests(samples=1), schedule="lockstep")


@pytest.fixture(scope="module")
def mp_llm(tiny_model):
    """The same model with the engine core in a process of its own (the free schedule's)."""
    mp = embedded.Embedded(embedded.load(tiny_model, dtype="auto", max_model_len=1024, seed=0))
    yield mp
    mp.close()


def test_the_free_schedule_runs_on_either_engine(llm, mp_llm, sandbox):
    for e in (llm, mp_llm):
        rows, stats = run(e, DelayedSandbox(sandbox, 3), requests(), schedule="free")
        assert len(rows) == 8 and all(r["finish_reason"] for r in rows)
        assert stats.get("late_blocks", 0) == 0 and stats["continuations"] > 0


@pytest.mark.parametrize("schedule", ["deterministic", "free"])
def test_a_trace_ending_at_launch_may_cancel_blocks_due_beside_it(llm, sandbox, schedule):
    """Four identical traces (greedy) launch their blocks in the same step. The first to
    rejoin has no room left for its continuation (`length`) and, with its box, meets
    early_stop=1: its problem is cancelled, the other three blocks taken out of the loop
    while they are due beside it. The problem keeps every row."""
    greedy = dict(SAMPLING, temperature=0.0)
    reqs = [
        tir.Request(
            f"box:{s}", "box", s, s + 1, shots(box_first=True) + [{"role": "user", "content": q}]
        )
        for s, q in enumerate(["What is 12 times 13? Use Python."] * 4)
    ]
    probe, _ = run(llm, sandbox, reqs[:1], max_rounds=1, sampling=greedy)
    assert probe[0]["n_code_calls"] == 1 and probe[0]["answer_int"] is not None, probe[0]["text"]
    first_round = probe[0]["round_tokens"][0]
    rows, stats = run(
        llm,
        DelayedSandbox(sandbox, 4, max_s=0.05) if schedule == "free" else sandbox,
        reqs,
        sampling=greedy,
        max_model_len=probe[0]["prompt_tokens"] + first_round + 1,
        early_stop=1,
        schedule=schedule,
        rejoin_steps=20,
    )
    reasons = sorted(r["finish_reason"] for r in rows)
    assert len(rows) == 4 and "length" in reasons, reasons
    if schedule == "deterministic":  # all four were due at the same step
        assert reasons == ["early_stop"] * 3 + ["length"], reasons
        assert stats["cancelled_early_stop"] == 3


def test_stop_at_answer_ends_a_trace_at_its_first_box(llm, sandbox):
    greedy = dict(SAMPLING, temperature=0.0)
    q = "What is 12 times 13? Use Python."
    reqs = [tir.Request("b:0", "b", 0, 1, shots(box_first=True) + [{"role": "user", "content": q}])]
    full, _ = run(llm, sandbox, reqs, max_rounds=1, sampling=greedy)
    assert full[0]["n_code_calls"] == 1 and full[0]["answer_int"] is not None, full[0]["text"]
    cut, _ = run(llm, sandbox, reqs, max_rounds=1, sampling=greedy, stop_at_answer=True)
    r = cut[0]
    assert r["finish_reason"] == "stop" and r["n_code_calls"] == 0, r["text"]
    assert r["answer_int"] is not None and r["completion_tokens"] < full[0]["completion_tokens"]
    assert full[0]["text"].startswith(r["text"])  # the same tokens, up to the box
    assert sum(r["round_tokens"]) == r["completion_tokens"] and r["mean_logprob"] is not None


def test_answer_after_tools_tells_the_model_and_goes_on(llm, sandbox):
    greedy = dict(SAMPLING, temperature=0.0)
    reqs = [r for r in requests(samples=1) if r.problem_id == "mul"]
    ended, _ = run(llm, sandbox, reqs, max_rounds=0, sampling=greedy)
    assert ended[0]["finish_reason"] == "max_rounds", ended[0]["text"]
    told, _ = run(llm, sandbox, reqs, max_rounds=0, sampling=greedy, answer_after_tools=True)
    r = told[0]
    assert prompts.output_block(prompts.NO_MORE_CODE) in r["text"], r["text"]
    assert r["n_code_calls"] == 0 and len(r["round_tokens"]) >= 2  # no block ran; it went on
    assert r["completion_tokens"] > ended[0]["completion_tokens"]


class CountingSandbox(DelayedSandbox):
    """Blocks that take `block_s` each; `started` counts the blocks that began running."""

    def __init__(self, sandbox, block_s):
        super().__init__(sandbox, 0, max_s=0.0)
        self.block_s, self.started = block_s, 0

    def session(self, **kw):
        inner, outer = self.sandbox.session(**kw), self

        class Session:
            def run(self, code):
                with outer.lock:
                    outer.started += 1
                time.sleep(outer.block_s)
                return inner.run(code)

            def close(self):
                inner.close()

        return Session()


def test_blocks_queued_at_a_deadline_never_run(llm, sandbox):
    counting = CountingSandbox(sandbox, block_s=2.5)
    rows, _ = run(
        llm, counting, requests(), schedule="free", threads=1, deadline=time.monotonic() + 8
    )
    at_return = counting.started
    time.sleep(6)  # a queued block would have started by now
    assert counting.started == at_return <= 3
    written = [r for r in rows if "```python" in r["text"]]
    assert len(written) > at_return  # more blocks were written than ever ran


def test_waves_start_no_more_samples_once_the_rule_is_met(llm, sandbox):
    """Two samples of a problem in flight; a rule met by the first valid answer cancels the
    running one and the rest never start: rows with no tokens, their own finish reason."""
    policy = policies.Policy(wave=2, rule="beta", confidence=0.5)
    rows, stats = run(llm, sandbox, requests(samples=6), policy=policy)
    assert len(rows) == 12
    for pid in QUESTIONS:
        mine = [r for r in rows if r["problem_id"] == pid]
        reasons = [r["finish_reason"] for r in mine]
        answered = [r for r in mine if r["finish_reason"] not in CANCELLED and r["answer_int"]]
        if answered:  # the tiny model answered: at most 1 + 2 ran past the first answer
            assert reasons.count("not_started") >= 3, reasons
        for r in mine:
            if r["finish_reason"] == "not_started":
                assert r["completion_tokens"] == 0 and r["text"] == "" and not r["round_tokens"]
    assert stats["cancelled_not_started"] == sum(r["finish_reason"] == "not_started" for r in rows)
    assert stats["cancelled_not_started"] >= 3  # some problem was answered and stopped


def test_no_sample_starts_that_cannot_finish_by_the_deadline(llm, sandbox):
    """One sample at a time, each asked for a long list (its whole budget): once the first
    has finished, the time left (half a trace's) holds no second one, so the rest never start
    and the problem ends then, before its deadline. Without the rule the second starts."""
    ask = [{"role": "user", "content": "List every prime below 500, one per line."}]
    reqs = [tir.Request(f"long:{s}", "long", s, tir.derive_seed(5, s), ask) for s in range(4)]
    sampling = dict(SAMPLING, max_tokens=64)
    # the first sample alone (the same request and seed, so the same trace), once warm
    trace_s = min(run(llm, sandbox, reqs[:1], sampling=sampling)[1]["wall_s"] for _ in range(2))

    def ran(policy):
        started = time.monotonic()
        rows, stats = run(
            llm, sandbox, reqs, sampling=sampling, policy=policy, deadline=started + 1.5 * trace_s
        )
        seen = (trace_s, [(r["finish_reason"], r["completion_tokens"]) for r in rows])
        return [r["finish_reason"] for r in rows], stats, time.monotonic() - started, seen

    reasons, stats, took, seen = ran(policies.Policy(wave=1))
    assert reasons[0] == "length" and reasons[1:] == ["not_started"] * 3, seen
    assert stats["held_by_deadline"] == 3 and took < 1.5 * trace_s, seen  # before its deadline
    reasons, _, _, seen = ran(policies.Policy(wave=1, finish_by_deadline=False))
    assert reasons[0] == "length" and reasons[1] != "not_started", seen


def test_a_far_deadline_changes_no_row(llm, sandbox):
    """finish_by_deadline only holds back what could not finish: with time enough for all,
    a run with a deadline writes the rows of one without (the same schedule)."""
    wave = policies.Policy(wave=2)
    plain, _ = run(llm, sandbox, requests(samples=3), policy=wave)
    far, stats = run(
        llm, sandbox, requests(samples=3), policy=wave, deadline=time.monotonic() + 3600
    )
    assert comparable(far) == comparable(plain)
    assert not stats.get("held_by_deadline")


def test_pruning_ends_low_confidence_traces_and_keeps_one(llm, sandbox):
    """A threshold above every window prunes each trace at its first recorded window, except
    a problem's last one while none of its traces finished; a replay of the stored window
    means finds the same token counts."""
    sampling = dict(SAMPLING, top_logprobs=5, conf_window=16, conf_stride=4)
    policy = policies.Policy(prune=True, threshold=1e9)
    rows, stats = run(llm, sandbox, requests(), sampling=sampling, policy=policy)
    pruned = [r for r in rows if r["finish_reason"] == "pruned"]
    assert stats["cancelled_pruned"] == len(pruned) >= 4
    for r in pruned:
        assert r["completion_tokens"] == 16 and len(r["window_conf"]) == 1
        assert sum(r["round_tokens"]) == r["completion_tokens"]
    for pid in QUESTIONS:
        kept = [r for r in rows if r["problem_id"] == pid and r["finish_reason"] != "pruned"]
        assert kept, f"{pid}: every trace was pruned"
        for r in kept:  # it ran on: one window mean every 4 tokens from 16 on
            assert len(r["window_conf"]) == len(policies.positions(16, 4, r["completion_tokens"]))
    # a warmup threshold: the first 2 finished traces of a problem are never pruned
    policy = policies.Policy(prune=True, warmup=2, keep=0.5)
    rows, _ = run(llm, sandbox, requests(), sampling=sampling, policy=policy)
    for pid in QUESTIONS:
        mine = [r for r in rows if r["problem_id"] == pid]
        assert sum(r["finish_reason"] != "pruned" for r in mine) >= 2


class RaisingSandbox(DelayedSandbox):
    """The real sandbox, whose blocks raise once run: an error inside the loop, at a time
    when other traces are still in the engine."""

    def session(self, **kw):
        inner = self.sandbox.session(**kw)

        class Session:
            def run(self, code):
                raise RuntimeError("injected: a round failed")

            def close(self):
                inner.close()

        return Session()


@pytest.mark.parametrize("schedule", ["deterministic", "free"])
def test_an_error_in_the_loop_leaves_nothing_in_the_engine(llm, sandbox, schedule):
    with pytest.raises(RuntimeError, match="injected"):
        run(llm, RaisingSandbox(sandbox, 0), requests(), schedule=schedule)
    assert not llm.busy()
    rows, _ = run(llm, sandbox, requests(samples=1))  # the next run has the engine to itself
    assert len(rows) == 2 and all(r["finish_reason"] for r in rows)


def test_forced_answers_continue_each_traces_own_ids_within_the_deadline(llm, sandbox):
    from aimo.online import own_ids

    tok, ids = llm.tokenizer, {}
    options = scheduler.RunOptions(dict(SAMPLING, max_tokens=40), 1, 1024)
    rows = scheduler.run(llm, requests(samples=2), sandbox, options, ids=ids)
    asks = []
    for r in rows:  # the ids are the prompt's and what the trace wrote: they spell its text
        own = ids[r["trace_id"]]
        assert r["text"].startswith(scheduler.decode(tok, own[r["prompt_tokens"] :]))
        asks.append(own_ids(tok, own, r, prompts.force_answer(r["text"])))
        assert asks[-1][: len(own)] == own
    done = scheduler.force(llm, asks, 16, ["}"])
    assert all(d is not None and 0 < d[1] <= 16 for d in done)
    # a deadline already past: every request aborted, none left in the engine
    assert scheduler.force(llm, asks, 16, ["}"], deadline=time.monotonic()) == [None] * len(asks)
    assert not llm.busy()


def test_a_thinking_channel_ends_where_the_model_writes_its_tag(llm, sandbox):
    """tir.think_end set to the code fence the worked examples make the tiny model write: the
    answer is read after its first one, and reasoning_tokens counts the tokens up to it."""
    from aimo.answers import extract_answer

    tag = "```python"
    rows, _ = run(llm, sandbox, requests(samples=2), think_end=tag)
    left = [r for r in rows if tag in r["text"]]
    assert left, "the model wrote no code"
    for r in rows:
        if r in left:
            assert r["final_start"] == r["text"].find(tag) + len(tag)
            assert 0 < r["reasoning_tokens"] < r["completion_tokens"]
            assert r["answer"] == extract_answer(r["text"][r["final_start"] :])
        else:
            assert r["final_start"] is None and r["answer"] is None
            assert r["reasoning_tokens"] == r["completion_tokens"]
    plain, _ = run(llm, sandbox, requests(samples=2))  # SmolLM2's template: no channel
    assert all(r["final_start"] is None and r["reasoning_tokens"] is None for r in plain)


def tool_shots():
    """The worked examples as python tool calls (hermes) and tool messages."""
    messages = []
    for question, code, answer in WORKED:
        body = json.dumps({"name": "python", "arguments": {"code": code}})
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"<tool_call>\n{body}\n</tool_call>"},
            {"role": "tool", "content": answer},
            {"role": "assistant", "content": f"The answer is \\boxed{{{answer}}}."},
        ]
    return messages


def asking(pid, shots, n, seed=3):
    """`n` samples of QUESTIONS[pid], after the worked examples `shots`."""
    return [
        tir.Request(
            f"{pid}:{s}",
            pid,
            s,
            tir.derive_seed(seed, pid, s),
            [*shots, {"role": "user", "content": QUESTIONS[pid]}],
        )
        for s in range(n)
    ]


def test_the_tools_dialect_runs_calls_and_sends_results_through_the_template(llm, sandbox):
    """tir.dialect tools on the tiny model, prompted with two worked calls (it was not trained
    on the tool: the examples make it call): a call stops the round, its code runs in the
    sandbox, the result goes back as the template's tool turn, and the trace goes on."""
    from aimo import dialects

    tok = llm.tokenizer
    before, after = dialects.tool_turn(tok)
    assert before.startswith(tok.eos_token) or "<|im_end|>" in before  # the turn is closed
    assert after.endswith("<|im_start|>assistant\n")  # and the assistant's next one opened
    reqs = asking("mul", tool_shots(), 4)
    rows, stats = run(llm, sandbox, reqs, max_rounds=2, dialect="tools")
    called = [r for r in rows if r["n_code_calls"]]
    assert called, [r["text"] for r in rows]
    for r in called:
        block = r["code_blocks"][0]
        assert block["status"] == "ok" or "Error" in block["output"]
        # the tool turn is in the text as its tokens decode (special tokens dropped)
        assert (
            f"</tool_call>{tok.decode(tok.encode(before), skip_special_tokens=True)}" in r["text"]
            and block["output"].strip() in r["text"]
        )
    assert stats.get("tokens_rebuilt", 0) == 0


def harmony_shots():
    """The worked examples as gpt-oss writes them, in the developer's instructions: harmony
    renders a finished turn without its calls, and the tiny model has never seen the format."""
    from aimo import dialects

    harmony, examples = dialects.get("harmony"), []
    for question, code, answer in WORKED:
        examples.append(
            f"<|start|>user<|message|>{question}<|end|><|start|>assistant{harmony.opening}{code}"
            f"<|call|>{harmony.result(None, answer)}<|channel|>final<|message|>"
            f"The answer is \\boxed{{{answer}}}.<|end|>"
        )
    return [{"role": "system", "content": "Solve with python, as here:\n" + "\n".join(examples)}]


def test_the_harmony_dialect_runs_calls_and_reads_the_final_channel(llm, sandbox):
    """tir.dialect harmony on the tiny model (its tokenizer spells harmony's tokens as text;
    gpt-oss's has them as special tokens, which the text keeps): the forced first call runs in
    the sandbox, its result goes back as the python tool's message, and the answer is read
    from the final channel only."""
    from aimo import dialects

    harmony = dialects.get("harmony")
    reqs = asking("mul", harmony_shots(), 4)
    rows, stats = run(llm, sandbox, reqs, max_rounds=2, dialect="harmony", force_first_call=True)
    assert all(r["text"].startswith(harmony.opening) for r in rows)
    called = [r for r in rows if r["n_code_calls"]]
    assert called, [r["text"] for r in rows]
    for r in called:
        assert r["code_blocks"][0]["code"] in r["text"]
        assert f"<|call|>{harmony.result(None, r['code_blocks'][0]['output'])}" in r["text"]
    for r in rows:  # the thinking channel is the analysis: the answer is the final channel's
        start = r["text"].find(harmony.think_end)
        if start < 0:
            assert r["final_start"] is None and r["answer"] is None
        else:
            assert r["final_start"] == start + len(harmony.think_end)
    assert stats.get("tokens_rebuilt", 0) == 0


@pytest.mark.parametrize("dialect", ["fenced", "tools"])
def test_a_forced_first_call_opens_every_trace(llm, sandbox, dialect):
    """tir.force_first_call: each trace's text starts with the dialect's opening, and the
    first round's call (opened before the model wrote a token) runs."""
    from aimo import dialects

    shots = tool_shots() if dialect == "tools" else SHOTS
    reqs = asking("pow", shots, 3, seed=4)
    rows, stats = run(llm, sandbox, reqs, max_rounds=1, dialect=dialect, force_first_call=True)
    opening = dialects.get(dialect).opening
    assert all(r["text"].startswith(opening) for r in rows)
    assert any(r["n_code_calls"] for r in rows), [r["text"] for r in rows]
    assert stats.get("tokens_rebuilt", 0) == 0
