"""Where a problem's samples go: stopping rules (start no more samples once the answer is
settled) and confidence pruning (end a trace whose token confidence falls below the problem's
threshold). Pure functions of answers and confidences: the scheduler applies them live and
aimo.replay replays them over a stored pool, so a replay decides as a run would. `Problem` holds
one problem's decisions (start a sample, end the problem, prune a trace, stop once settled): the
loops keep time and traces, ask it, and apply what it answers (a reason from
aimo.schemas.Finish, given to the traces it ends).

- waves: at most `wave` samples of a problem in flight; after each finished sample the rule is
  asked, and once it is met the problem's running samples are cancelled (early_stop) and the
  rest never start (not_started). Rules (../shared/notes/adaptive-compute.md):
  beta (Adaptive-Consistency): the top answer's share beats the runner-up's with posterior
  probability >= `confidence` under a uniform prior (Beta(v1 + 1, v2 + 1) > 1/2);
  esc (Early-stopping self-consistency): a window of `window` finished samples, counted in
  finish order, all give the same valid answer.
- finish by the deadline: where a problem has a deadline, a sample starts only if one as long
  as the median of the problem's finished samples would finish before it, at the engine's
  current time per token (a running sequence gets one token per engine step); the first
  samples, with none finished, always start. A problem whose waiting samples cannot finish and
  that has nothing running ends at once (they are not_started), leaving its time to the next.
- prune (DeepConf online): the threshold is the (1 - keep) quantile of the lowest window
  confidence of the problem's first `warmup` finished traces (or `threshold`, from a
  calibration); a trace whose window mean then falls below it ends (pruned). A trace without
  confidences is never pruned, and a problem's last trace is not pruned while none of its
  traces finished.
"""

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from aimo.schemas import Finish

RULES = ("none", "beta", "esc")


@dataclass(frozen=True)
class Policy:
    wave: int | None = None  # samples of a problem in flight at once; None: all
    rule: str = "none"
    confidence: float = 0.95  # beta
    window: int = 4  # esc
    finish_by_deadline: bool = True
    prune: bool = False
    warmup: int = 4
    keep: float = 0.9
    threshold: float | None = None

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"scheduler waves rule {self.rule!r}: expected one of {RULES}")
        if self.wave is not None and self.wave < 1:
            raise ValueError(f"scheduler waves size {self.wave!r}: expected null or >= 1")
        if not 0 < self.keep <= 1:
            raise ValueError(f"scheduler prune keep {self.keep!r}: expected a share in (0, 1]")

    @classmethod
    def from_config(cls, sched: dict) -> "Policy":
        """From the config's scheduler section, complete (its `waves` and `prune` objects;
        aimo.config.defaults("scheduler") gives Policy())."""
        waves, prune = sched["waves"], sched["prune"]
        return cls(
            wave=waves["size"],
            rule=waves["rule"],
            confidence=waves["confidence"],
            window=waves["window"],
            finish_by_deadline=waves["finish_by_deadline"],
            prune=prune["enabled"],
            warmup=prune["warmup"],
            keep=prune["keep"],
            threshold=prune["threshold"],
        )


def beta_settled(counts: Counter, confidence: float) -> bool:
    """P(top share > runner-up share) >= confidence, with p ~ Beta(v1 + 1, v2 + 1); for
    integer counts that is P(Binomial(v1 + v2 + 1, 1/2) <= v1)."""
    top = counts.most_common(2)
    if not top:
        return False
    v1, v2 = top[0][1], (top[1][1] if len(top) > 1 else 0)
    n = v1 + v2 + 1
    return sum(math.comb(n, i) for i in range(v1 + 1)) / 2**n >= confidence


def esc_settled(answers: list, window: int) -> bool:
    """The last full window of finished answers (None: no valid answer) is unanimous."""
    if not answers or len(answers) % window:
        return False
    last = answers[-window:]
    return last[0] is not None and all(a == last[0] for a in last)


def settled(policy: Policy, answers: list) -> bool:
    """Is the problem's answer settled, given its finished samples' answers in finish order
    (an int in range, or None)?"""
    if policy.rule == "beta":
        return beta_settled(Counter(a for a in answers if a is not None), policy.confidence)
    if policy.rule == "esc":
        return esc_settled(answers, policy.window)
    return False


def can_finish(left: float, per_token: float | None, lengths: list) -> bool:
    """Would a new sample as long as the median of `lengths` (the problem's finished samples'
    completion tokens) finish within `left`, at `per_token` (seconds a token, or a replay's
    tick)? Yes while nothing has finished or the time per token is not yet known."""
    if not lengths or per_token is None:
        return True
    return statistics.median(lengths) * per_token <= left


def quantile(values: list, q: float) -> float:
    """The q quantile of `values`, linearly interpolated (numpy's default)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def warmup_threshold(policy: Policy, min_confs: list) -> float | None:
    """The pruning threshold from the warmup traces' lowest window confidences (the unknown
    ones left out); None while there are fewer than `warmup` known, or none."""
    known = [c for c in min_confs if c is not None and math.isfinite(c)]
    if len(known) < policy.warmup or not known:
        return None
    return quantile(known, 1 - policy.keep)


def positions(window: int, stride: int, n: int) -> list:
    """The token counts at which `Confidence` records the window means of an n-token trace
    (a trace shorter than its window: none, its one mean is at its end)."""
    return list(range(window, n + 1, stride)) if n >= window else []


@dataclass
class Problem:
    """One problem's state and decisions, the same live (aimo.scheduler, time in seconds) and
    in a replay (aimo.replay, time in ticks). The loop counts its traces in `open` (not ended)
    and `running` (started, not ended), tells it of each finished sample, and applies what it
    decides."""

    policy: Policy
    early_stop: int | None = None  # stop once this many valid answers agree
    deadline: float | None = None
    open: int = 0
    running: int = 0
    order: list = field(default_factory=list)  # finished samples' answers (or None), in order
    warmup: list = field(default_factory=list)  # finished samples' lowest window confidences
    lengths: list = field(default_factory=list)  # finished samples' completion tokens
    threshold: float | None = None  # pruning: below this window confidence a trace ends

    def __post_init__(self):
        if self.policy.prune and self.threshold is None:
            self.threshold = self.policy.threshold

    @property
    def needs_answers(self) -> bool:
        """Do its decisions read the finished samples' answers (else pass None)?"""
        return bool(self.early_stop) or self.policy.rule != "none"

    @property
    def needs_warmup(self) -> bool:
        """Does the next finished sample's lowest window confidence set the threshold?"""
        return self.policy.prune and self.threshold is None

    def can_finish(self, now: float, per_token: float | None) -> bool:
        """finish_by_deadline: would a new sample, as long as the median finished one, end by
        the deadline at `per_token`? Always yes without a deadline (the batch run: its
        schedule stays deterministic)."""
        if self.deadline is None or not self.policy.finish_by_deadline:
            return True
        return can_finish(self.deadline - now, per_token, self.lengths)

    def may_start(self, now: float, per_token: float | None) -> bool:
        """Room in its wave, and time for a sample to finish."""
        wave = self.policy.wave
        return (wave is None or self.running < wave) and self.can_finish(now, per_token)

    def ends(self, now: float, per_token: float | None) -> Finish | None:
        """DEADLINE where the problem ends now, with traces open: its deadline has come, or
        nothing runs and no waiting sample can finish by it (its time goes back to the bank).
        None: it goes on."""
        if self.deadline is None or not self.open:
            return None
        if now >= self.deadline or (not self.running and not self.can_finish(now, per_token)):
            return Finish.DEADLINE
        return None

    def may_prune(self, window_mean: float) -> bool:
        """A trace whose window mean just came in ends (PRUNED) if it is below the threshold
        and the problem keeps a trace: one finished, or another still open."""
        if self.threshold is None or window_mean >= self.threshold:
            return False
        return bool(self.order) or self.open > 1

    def finished(self, answer, tokens: int | None, min_conf=None) -> Finish | None:
        """A sample finished on its own with `answer` (a valid int or None), `tokens`
        completion tokens (None: it wrote nothing) and `min_conf` (read if needs_warmup).
        EARLY_STOP where the answer is now settled: the loop cancels the problem's running
        traces and the waiting ones become NOT_STARTED."""
        if tokens is not None:
            self.lengths.append(tokens)
        if self.needs_warmup:
            self.warmup.append(min_conf)
            self.threshold = warmup_threshold(self.policy, self.warmup)
        self.order.append(answer)
        if answer is not None and self.early_stop and self.order.count(answer) >= self.early_stop:
            return Finish.EARLY_STOP
        return Finish.EARLY_STOP if settled(self.policy, self.order) else None
