"""Tool-integrated reasoning traces: what one trace is, how its code blocks are found, and the
row it becomes. The loop that produces traces is `aimo.scheduler`; this module knows nothing
of engines, files or Snakemake.
"""

import hashlib
import math
import re
from collections import deque
from dataclasses import dataclass, field

from aimo import prompts
from aimo.answers import answer_int64, extract_answer
from aimo.prompts import CODE_FENCE, FENCE_END
from aimo.schemas import NOT_RUN, OK, TIMEOUT

CODE_RE = re.compile(
    re.escape(CODE_FENCE) + r"[ \t]*\n(.*?)(?:" + re.escape(FENCE_END) + r"|\Z)", re.DOTALL
)


# the thinking channel's end where tir.think_end is auto and the chat template writes it
THINK_END = "</think>"


def resolve_think_end(think_end: str, chat_template, own: str | None = None) -> str | None:
    """tir.think_end as a tag, or None for no thinking channel: `auto` is the dialect's `own`
    end where it has one (harmony's final channel), else THINK_END where the model's chat
    template (its Jinja text) holds it; `none` none, anything else itself."""
    if think_end == "auto":
        if own is not None:
            return own
        return THINK_END if THINK_END in str(chat_template or "") else None
    return None if think_end == "none" else think_end


def final_start(text: str, think_end: str | None) -> int | None:
    """Where the final text starts in `text`: right after the first `think_end` (None when the
    trace never wrote it), or 0 without a thinking channel."""
    if think_end is None:
        return 0
    at = text.find(think_end)
    return None if at < 0 else at + len(think_end)


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts, e.g. (global seed, problem id, sample index)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def sandbox_seed(trace_seed: int) -> int:
    """The seed of a trace's sandbox session (random, numpy.random), from the trace's own seed:
    the TIR run and execute's re-run draw the same numbers whatever order sessions open in."""
    return derive_seed(trace_seed, "sandbox") % 2**31


def last_code_block(text: str) -> str | None:
    """The last ```python block of `text` (a block cut off by the output fence counts too)."""
    blocks = CODE_RE.findall(text)
    return blocks[-1].strip() if blocks and blocks[-1].strip() else None


@dataclass
class Request:
    """One trace to produce: who it is and the chat messages that start it."""

    trace_id: str
    problem_id: str
    sample: int
    seed: int
    messages: list
    source: str = "generate"
    parent_id: str | None = None
    attempt: int = 0


def requests(problems, samples, seed: int) -> list[Request]:
    """The TIR requests of every problem (rows with problem_id and problem) x every sample
    index in `samples`, problem by problem: the one builder of the batch stages and the online
    run. A request's seed comes from (global `seed`, problem id, sample index) alone, so a
    sample is the same whichever shard, chunk or run asks for it."""
    return [
        Request(
            trace_id=f"{row['problem_id']}:{sample}",
            problem_id=row["problem_id"],
            sample=sample,
            seed=derive_seed(seed, row["problem_id"], sample),
            messages=prompts.tir_messages(row["problem"]),
        )
        for row in problems
        for sample in samples
    ]


@dataclass
class Entropy:
    """A trace's token entropies as they arrive, without keeping them: the running mean, and
    the mean over the last `tail` tokens before the final answer (taken when the last answer
    marker, `\\boxed`, starts; the trace's last `tail` tokens when it has none). Entropy is
    in nats, of the engine's top-k log-probabilities as given (not renormalised); a position
    whose log-probabilities are not finite is left out."""

    tail: int = 256
    total: float = 0.0
    n: int = 0
    window: deque = field(default_factory=deque)
    before_answer: float | None = None

    def add(self, logprobs):
        """One sampled position: its top-k log-probabilities."""
        h = 0.0
        for lp in logprobs:
            if not math.isfinite(lp):
                if lp == -math.inf:
                    continue  # probability 0: no entropy
                return
            h -= math.exp(lp) * lp
        self.total += h
        self.n += 1
        self.window.append(h)
        if len(self.window) > self.tail:
            self.window.popleft()

    def answer_starts(self):
        self.before_answer = sum(self.window) / len(self.window) if self.window else None

    def means(self) -> tuple[float | None, float | None]:
        """(mean entropy, tail entropy); None where no position was seen."""
        if not self.n:
            return None, None
        tail = self.before_answer
        if tail is None:
            tail = sum(self.window) / len(self.window)
        mean = self.total / self.n
        return (mean if math.isfinite(mean) else None), (tail if math.isfinite(tail) else None)


# A top-k log-probability below this (or not finite) counts as this: the confidence stays finite
LOGPROB_FLOOR = -20.0


@dataclass
class Confidence:
    """A trace's token confidence as it arrives (DeepConf): at each sampled token, minus the
    mean of its top-k log-probabilities (high: the distribution is peaked). Every `stride`
    tokens once `window` tokens are in, the mean over the last `window` is recorded (the
    window means, `window_conf`); a trace shorter than its window gets one mean, over all of
    it, at its end. The lowest window, the mean of the lowest 10% of windows and the mean over
    the last `tail` tokens are the trace's summaries; pruning (aimo.policies) reads the
    latest window as it is recorded, so a replay of the stored means decides as the run did."""

    window: int = 64
    stride: int = 8
    tail: int = 256
    n: int = 0
    recent: deque = field(default_factory=deque)
    means: list = field(default_factory=list)

    def add(self, logprobs) -> bool:
        """One sampled position: its top-k log-probabilities. True when a window mean was
        recorded at this token."""
        if not logprobs:
            return False
        c = -sum(lp if lp >= LOGPROB_FLOOR else LOGPROB_FLOOR for lp in logprobs) / len(logprobs)
        self.n += 1
        self.recent.append(c)
        if len(self.recent) > max(self.window, self.tail):
            self.recent.popleft()
        if self.n >= self.window and (self.n - self.window) % self.stride == 0:
            self.means.append(self.latest())
            return True
        return False

    def latest(self) -> float:
        """The mean over the last `window` tokens (all of them when fewer)."""
        w = min(self.window, len(self.recent))
        return sum(self.recent[i] for i in range(len(self.recent) - w, len(self.recent))) / w

    def summary(self) -> dict:
        """The TRACES confidence columns; null where no position was seen."""
        if not self.n:
            return {"min_conf": None, "bottom_conf": None, "tail_conf": None, "window_conf": None}
        means = self.means or [self.latest()]
        low = sorted(means)[: max(1, len(means) // 10)]
        t = min(self.tail, len(self.recent))
        tail = sum(self.recent[i] for i in range(len(self.recent) - t, len(self.recent))) / t
        return {
            "min_conf": low[0],
            "bottom_conf": sum(low) / len(low),
            "tail_conf": tail,
            "window_conf": means,
        }


@dataclass
class Trace:
    """A trace while it is made: its text so far, and what the row reports of it."""

    request: Request
    prompt: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprob_sum: float = 0.0
    logprobs_known: bool = True  # every round reported a cumulative log-probability
    blocks: list = field(default_factory=list)
    round_tokens: list = field(default_factory=list)  # completion tokens of each engine round
    finish_reason: str | None = None
    think_end: str | None = None  # the thinking channel's end tag (None: no channel)
    reasoning_tokens: int | None = None  # completion tokens up to the end tag, once written
    entropy: Entropy = field(default_factory=Entropy)
    confidence: Confidence = field(default_factory=Confidence)


def row(t: Trace) -> dict:
    """The TRACES row (a dict of its columns) of a finished or cancelled trace. With a thinking
    channel the answer is read from the final text only: none for a trace still thinking."""
    start = final_start(t.text, t.think_end)
    answer = None if start is None else extract_answer(t.text[start:])
    reasoning = None
    if t.think_end is not None:
        reasoning = t.completion_tokens if start is None else t.reasoning_tokens
    statuses = [b["status"] for b in t.blocks]
    req = t.request
    known = t.logprobs_known and t.completion_tokens > 0
    mean_entropy, tail_entropy = t.entropy.means()
    return {
        "trace_id": req.trace_id,
        "problem_id": req.problem_id,
        "sample": req.sample,
        "seed": req.seed,
        "source": req.source,
        "parent_id": req.parent_id,
        "attempt": req.attempt,
        "prompt": t.prompt,
        "text": t.text,
        "final_start": start if t.think_end is not None else None,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "reasoning_tokens": reasoning,
        "code_blocks": t.blocks,
        "n_code_calls": len(t.blocks),
        "n_code_errors": sum(s not in (OK, NOT_RUN) for s in statuses),
        "n_code_timeouts": statuses.count(TIMEOUT),
        "exec_s": sum(b["wall_s"] for b in t.blocks),
        "finish_reason": t.finish_reason,
        "answer": answer,
        "answer_int": answer_int64(answer),
        "mean_logprob": t.logprob_sum / t.completion_tokens if known else None,
        "mean_entropy": mean_entropy,
        "tail_entropy": tail_entropy,
        "changed": None,
        "round_tokens": list(t.round_tokens),
        **t.confidence.summary(),
    }
