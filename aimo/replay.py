"""Replaying a sampling policy over a stored pool of finished traces, without the engine.

A problem's pool is its traces (answer, completion tokens, window confidences), taken in a
given order. Time is decode tokens: every running trace writes one token per tick, all
running traces together (code runs left out). A policy (aimo.policies: waves, stopping rule,
pruning; plus early stop at k agreeing answers) decides, with the same functions the scheduler
uses, which traces start, when the running ones are cancelled and where a trace is pruned; the
replay returns what the run would have: the answers that vote, the tokens written and the
batch size over time, from which a decode-rate curve gives the wall time. A deadline, in ticks,
cancels what runs at it and, with the policy's finish_by_deadline, starts only samples that can
finish by it (the scheduler's rule, at one tick a token).
"""

from collections import Counter
from dataclasses import dataclass, field

from aimo import policies


@dataclass
class PoolTrace:
    answer: int | None  # a valid answer, or None
    tokens: int  # completion tokens of the finished trace
    window_conf: list | None = None  # the window means, one per policies.positions point
    min_conf: float | None = None
    tail_conf: float | None = None


@dataclass
class Outcome:
    votes: list = field(default_factory=list)  # (answer, trace) of the traces that vote
    tokens: int = 0
    started: int = 0
    pruned: int = 0
    at_deadline: int = 0  # running when the deadline came (cancelled; they do not vote)
    held: int = 0  # never started: they could not finish by the deadline
    ticks: int = 0  # when the problem ended
    segments: list = field(default_factory=list)  # (ticks, traces running) in order


def _prune_at(t: PoolTrace, after: int, threshold: float, window: int, stride: int):
    """The first recorded position past `after` whose window mean is below the threshold, with
    that mean; None if there is none."""
    if not t.window_conf:
        return None
    for pos, mean in zip(policies.positions(window, stride, t.tokens), t.window_conf):
        if pos > after and mean < threshold:
            return pos, mean
    return None


def replay(
    traces: list,
    policy: policies.Policy,
    early_stop: int | None = None,
    window: int = 64,
    stride: int = 8,
    deadline: int | None = None,
) -> Outcome:
    """Run `policy` over one problem's `traces`, started in list order, up to `deadline`
    ticks (None: none). The decisions are policies.Problem's, as in the scheduler."""
    out = Outcome()
    problem = policies.Problem(policy, early_stop, deadline, open=len(traces))
    now = 0  # ticks so far: a tick is a token, so the time per token is 1
    waiting = list(range(len(traces)))
    running = {}  # index -> [progress, end, window mean where it is pruned (None: not)]

    def prune(i, state):
        """Where trace i, now at state[0], falls below the threshold before its end."""
        if problem.threshold is None:
            return
        at = _prune_at(traces[i], state[0], problem.threshold, window, stride)
        if at is not None and at[0] < state[1]:
            state[1], state[2] = at

    def close(i):
        problem.open -= 1
        problem.running -= 1
        return running.pop(i)

    def start():
        while waiting and problem.may_start(now, 1):
            i = waiting.pop(0)
            out.started += 1
            problem.running += 1
            running[i] = [0, traces[i].tokens, None]
            prune(i, running[i])
        if waiting and problem.ends(now, 1) is not None:  # the deadline, or none can finish
            out.held += len(waiting) if now < deadline else 0  # as the scheduler counts them
            problem.open -= len(waiting)
            waiting.clear()

    start()
    while running:
        dt = min(end - p for p, end, _ in running.values())
        if deadline is not None and now + dt > deadline:  # what runs is cut at the deadline
            dt = deadline - now
            out.segments.append((dt, len(running)))
            out.tokens += sum(state[0] + dt for state in running.values())
            out.at_deadline += len(running)
            now += dt
            running.clear()
            break
        out.segments.append((dt, len(running)))
        now += dt
        for state in running.values():
            state[0] += dt
        for i in [i for i, (p, end, _) in running.items() if p >= end]:
            p, _, low = running[i]
            t = traces[i]
            if low is not None and problem.may_prune(low):
                out.pruned += 1
                out.tokens += close(i)[0]
                continue
            if low is not None:  # the last trace of a problem with none finished runs on
                running[i] = [p, t.tokens, None]
                continue
            out.tokens += close(i)[0]
            if t.answer is not None:
                out.votes.append((t.answer, t))
            had = problem.threshold
            action = problem.finished(t.answer, t.tokens, t.min_conf)
            if had is None and problem.threshold is not None:  # the warmup set it
                for j, state in running.items():
                    prune(j, state)
            if action is not None:  # settled: the running ones are cancelled
                out.tokens += sum(state[0] for state in running.values())
                running.clear()
                waiting.clear()
                break
        start()
    out.ticks = now
    return out


def majority(votes: list):
    """The most voted answer (ties: the one that reached its count first); None if none."""
    counts, best, best_n = Counter(), None, 0
    for answer, _ in votes:
        counts[answer] += 1
        if counts[answer] > best_n:
            best, best_n = answer, counts[answer]
    return best


def confidence_vote(votes: list, key: str = "min_conf", keep: float = 1.0):
    """DeepConf's offline filter: the `keep` share of traces with the highest `key`
    confidence (traces without one are kept), then a vote weighted by that confidence
    (unknown: the median of the known; none known: every weight 1)."""
    known = sorted((getattr(t, key) for _, t in votes if getattr(t, key) is not None), reverse=True)
    if not votes:
        return None
    cut = known[max(1, round(keep * len(known))) - 1] if known else None
    neutral = known[len(known) // 2] if known else 1.0
    scores = Counter()
    for answer, t in votes:
        c = getattr(t, key)
        if c is not None and cut is not None and c < cut:
            continue
        scores[answer] += neutral if c is None else c
    return max(scores, key=lambda a: (scores[a], -a)) if scores else None


def wall_s(segments: list, peak: float, half: float) -> float:
    """Seconds the segments take when `b` sequences decode at peak * b / (b + half) tokens/s
    in all (each at peak / (b + half))."""
    return sum(ticks * (b + half) / peak for ticks, b in segments if b)
