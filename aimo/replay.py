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
    """The first recorded position past `after` whose window mean is below the threshold."""
    if not t.window_conf:
        return None
    for pos, mean in zip(policies.positions(window, stride, t.tokens), t.window_conf):
        if pos > after and mean < threshold:
            return pos
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
    ticks (None: none)."""
    out = Outcome()
    now, lengths = 0, []  # ticks so far; finished traces' tokens
    waiting = list(range(len(traces)))
    running = {}  # index -> [progress, end, pruned?]
    answers, counts, warmup = [], Counter(), []
    threshold = policy.threshold if policy.prune else None
    settled = False

    def can_finish():
        if deadline is None or not policy.finish_by_deadline:
            return True
        return policies.can_finish(deadline - now, 1, lengths)

    def start():
        while waiting and not settled and (policy.wave is None or len(running) < policy.wave):
            if not can_finish():
                if not running:  # nothing left that can finish: the problem ends here
                    out.held += len(waiting)
                    waiting.clear()
                return
            i = waiting.pop(0)
            out.started += 1
            end, cut = traces[i].tokens, False
            if threshold is not None:
                at = _prune_at(traces[i], 0, threshold, window, stride)
                if at is not None and at < end:
                    end, cut = at, True
            running[i] = [0, end, cut]

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
            p, _, cut = running.pop(i)
            out.tokens += p
            t = traces[i]
            if cut and (answers or running or waiting):  # as the scheduler's _low
                out.pruned += 1
                continue
            if cut:  # the last trace of a problem with none finished is kept: it runs on
                running[i] = [p, t.tokens, False]
                out.tokens -= p
                continue
            answers.append(t.answer)
            lengths.append(t.tokens)
            if t.answer is not None:
                out.votes.append((t.answer, t))
                counts[t.answer] += 1
            if policy.prune and threshold is None:
                warmup.append(t.min_conf)
                threshold = policies.warmup_threshold(policy, warmup)
                if threshold is not None:
                    for j, state in running.items():
                        at = _prune_at(traces[j], state[0], threshold, window, stride)
                        if at is not None and at < state[1]:
                            state[1], state[2] = at, True
            if (early_stop and t.answer is not None and counts[t.answer] >= early_stop) or (
                policies.settled(policy, answers)
            ):
                settled = True
                out.tokens += sum(state[0] for state in running.values())
                running.clear()
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
