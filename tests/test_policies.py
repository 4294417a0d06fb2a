"""The sampling policies' pure parts: stopping rules, the pruning threshold, and the token
confidence they read (aimo.policies, aimo.tir.Confidence)."""

import math
from collections import Counter

import pytest

from aimo import config, policies, schemas, tir

pytestmark = pytest.mark.needs("unit")


def test_the_beta_rule_is_adaptive_consistencys():
    # P(Binomial(v1 + v2 + 1, 1/2) <= v1): 4 agreeing of 4 -> 31/32; 3 of 3 -> 15/16
    assert policies.beta_settled(Counter({7: 4}), 0.95)
    assert not policies.beta_settled(Counter({7: 3}), 0.95)
    assert not policies.beta_settled(Counter({7: 5, 8: 1}), 0.95)  # 1 - 8/128 = 0.9375
    assert policies.beta_settled(Counter({7: 6, 8: 1}), 0.95)  # 1 - 9/256
    assert not policies.beta_settled(Counter(), 0.5)
    assert policies.beta_settled(Counter({7: 1}), 0.75)


def test_esc_needs_a_full_unanimous_window():
    p = policies.Policy(rule="esc", window=2)
    assert not policies.settled(p, [5])
    assert policies.settled(p, [5, 5])
    assert not policies.settled(p, [5, 6, 6])  # windows [5, 6] and [6 ...]: not full
    assert policies.settled(p, [5, 6, 6, 6])
    assert not policies.settled(p, [None, None])  # no valid answer settles nothing


def test_the_warmup_threshold_is_a_quantile_of_known_confidences():
    p = policies.Policy(prune=True, warmup=3, keep=0.5)
    assert policies.warmup_threshold(p, [1.0, None, 3.0]) is None  # two known of three
    assert policies.warmup_threshold(p, [1.0, 2.0, 3.0, float("nan")]) == 2.0
    assert policies.quantile([1.0, 2.0, 3.0, 4.0], 0.1) == pytest.approx(1.3)


def test_a_bad_policy_names_the_key():
    with pytest.raises(ValueError, match="rule 'vote'"):
        policies.Policy(rule="vote")
    with pytest.raises(ValueError, match="keep 0"):
        policies.Policy(keep=0)
    # the config's defaults are no policy: every sample runs, nothing is pruned
    assert policies.Policy.from_config(config.defaults("scheduler")) == policies.Policy()
    sched = config.defaults("scheduler")
    sched["waves"].update(size=2, rule="esc")
    assert policies.Policy.from_config(sched) == policies.Policy(wave=2, rule="esc")


def test_confidence_windows_and_summaries():
    c = tir.Confidence(window=4, stride=2, tail=3)
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    recorded = [c.add([-v, -v]) for v in values]  # minus the mean log-probability: v
    assert recorded == [False, False, False, True, False, True, False]
    assert c.means == [2.5, 4.5] and policies.positions(4, 2, 7) == [4, 6]
    s = c.summary()
    assert s["min_conf"] == 2.5 and s["bottom_conf"] == 2.5 and s["tail_conf"] == 6.0
    # -inf or NaN log-probabilities count as the floor: the confidence stays finite
    c.add([-math.inf, float("nan")])
    assert c.recent[-1] == -tir.LOGPROB_FLOOR


def test_a_window_longer_than_the_trace_uses_the_whole_trace():
    c = tir.Confidence(window=64, stride=8, tail=256)
    for v in (1.0, 3.0):
        c.add([-v])
    s = c.summary()
    assert s["window_conf"] == [2.0] and s["min_conf"] == 2.0 and s["tail_conf"] == 2.0
    assert policies.positions(64, 8, 2) == []  # never prunable: no window filled
    assert tir.Confidence().summary()["min_conf"] is None


def test_a_problems_decisions_are_finish_reasons():
    """policies.Problem decides for the scheduler and the replay alike: what it answers is the
    reason the loop gives the traces it ends."""
    p = policies.Problem(policies.Policy(wave=2), early_stop=2, deadline=100.0, open=5)
    assert p.may_start(0, None)  # nothing finished: a sample starts
    p.running = 2
    assert not p.may_start(0, None)  # the wave is full
    p.running, p.open = 1, 4
    assert p.finished(7, 40) is None and p.lengths == [40]
    assert p.may_start(50, 1.0)  # 40 tokens at 1 s a token fit in the 50 s left
    assert not p.may_start(70, 1.0)  # 30 s left: none can finish ...
    assert p.ends(70, 1.0) is None  # ... but one still runs
    p.running = 0
    assert p.ends(70, 1.0) == schemas.Finish.DEADLINE  # nothing runs, nothing can finish
    assert p.ends(100, None) == schemas.Finish.DEADLINE  # the deadline itself
    assert p.finished(None, None) is None and p.lengths == [40]  # wrote nothing: no length
    assert p.finished(7, 10) == schemas.Finish.EARLY_STOP == "early_stop"  # 2 agree
    assert policies.Problem(policies.Policy(), deadline=None, open=3).ends(1e9, 1.0) is None


def test_a_problem_prunes_only_with_pruning_on_and_a_trace_kept():
    fixed = dict(threshold=0.5, warmup=2, keep=0.5)
    # a calibrated threshold is used only with pruning on (it was applied live regardless)
    assert policies.Problem(policies.Policy(**fixed)).threshold is None
    p = policies.Problem(policies.Policy(prune=True, **fixed), open=1)
    assert not p.may_prune(0.4)  # the problem's last open trace, none finished: it runs on
    p.open = 2
    assert p.may_prune(0.4) and not p.may_prune(0.6)
    warm = policies.Problem(policies.Policy(prune=True, warmup=2, keep=0.5), open=3)
    assert warm.needs_warmup and warm.finished(1, 10, 0.2) is None and warm.threshold is None
    warm.finished(1, 10, 0.6)
    assert warm.threshold == pytest.approx(0.4) and not warm.needs_warmup
