"""The replay of sampling policies over a stored pool (aimo.replay): what starts, what stops,
what is pruned, and what it costs, on small made-up pools."""

import pytest

from aimo.policies import Policy, can_finish
from aimo.replay import PoolTrace, confidence_vote, majority, replay, wall_s

pytestmark = pytest.mark.needs("unit")


def pool():
    return [PoolTrace(1, 10), PoolTrace(1, 20), PoolTrace(2, 30)]


def test_every_sample_at_once_writes_every_token():
    o = replay(pool(), Policy())
    assert o.tokens == 60 and o.started == 3 and majority(o.votes) == 1
    assert o.segments == [(10, 3), (10, 2), (10, 1)]


def test_early_stop_cancels_the_running_at_the_kth_agreeing_answer():
    o = replay(pool(), Policy(), early_stop=2)
    assert o.tokens == 10 + 20 + 20 and len(o.votes) == 2


def test_a_wave_of_one_stops_once_the_rule_is_met():
    o = replay(pool(), Policy(wave=1, rule="beta", confidence=0.75))  # 1 answer: P = 3/4
    assert o.started == 1 and o.tokens == 10
    o = replay(pool(), Policy(wave=1, rule="esc", window=2))
    assert o.started == 2 and o.tokens == 30


def test_pruning_at_the_first_low_window_and_the_last_trace_kept():
    traces = [PoolTrace(1, 20, [5.0, 1.0, 5.0]), PoolTrace(2, 20, [1.0, 5.0, 5.0])]
    # window 8, stride 4: means recorded at 8, 12, 16, 20 tokens (the list holds the first 3)
    o = replay(traces, Policy(prune=True, threshold=2.0), window=8, stride=4)
    # the second pruned at 8; the first's low window at 12 comes when it is the problem's
    # last trace and none finished: it runs on
    assert o.pruned == 1 and o.tokens == 8 + 20
    assert [a for a, _ in o.votes] == [1]
    one = replay(traces[1:], Policy(prune=True, threshold=2.0), window=8, stride=4)
    assert one.pruned == 0 and one.tokens == 20  # a problem's only trace runs on


def test_a_deadline_cuts_what_runs_and_nothing_votes_from_it():
    o = replay(pool(), Policy(), deadline=15)
    assert [a for a, _ in o.votes] == [1] and o.at_deadline == 2 and o.ticks == 15
    assert o.tokens == 10 + 15 + 15
    # ending exactly at the deadline is finishing
    assert len(replay(pool(), Policy(), deadline=30).votes) == 3


def test_a_stream_starts_only_samples_that_can_finish_by_the_deadline():
    traces = [PoolTrace(1, 10), PoolTrace(2, 10), PoolTrace(3, 10), PoolTrace(4, 10)]
    # one at a time: at 10 the median finished length (10) fits the 15 left, at 20 not (5 left)
    o = replay(traces, Policy(wave=1), deadline=25)
    assert o.started == 2 and o.held == 2 and o.ticks == 20 and o.tokens == 20
    # without the rule the third starts, and the deadline cuts it
    o = replay(traces, Policy(wave=1, finish_by_deadline=False), deadline=25)
    assert o.started == 3 and o.at_deadline == 1 and o.tokens == 25 and o.ticks == 25


def test_can_finish_needs_a_finished_sample_and_a_rate():
    assert can_finish(0.0, 1.0, []) and can_finish(0.0, None, [10])
    assert can_finish(10.0, 0.5, [10, 20, 30]) and not can_finish(9.9, 0.5, [10, 20, 30])


def test_the_confidence_vote_filters_then_weighs():
    votes = [(1, PoolTrace(1, 5, min_conf=1.0)) for _ in range(3)]
    votes += [(2, PoolTrace(2, 5, min_conf=2.5)), (3, PoolTrace(3, 5))]  # 3: no confidence
    assert confidence_vote(votes, "min_conf", 1.0) == 1  # 3.0 for 1, 2.5 for 2, 1.0 (median) for 3
    assert confidence_vote(votes, "min_conf", 0.25) == 2  # keeps the top 1 known (and 3)
    assert confidence_vote([], "min_conf") is None


def test_wall_time_on_a_decode_curve():
    assert wall_s([(10, 1), (10, 2)], peak=10, half=0) == pytest.approx(1 + 2)
