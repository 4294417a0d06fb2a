"""The evaluation's at-k curves are the submission's vote: at k = N every strategy's curve equals
its full vote's accuracy exactly, cancelled, pruned and not-started rows included (issue 23)."""

import numpy as np
import pytest
import yaml

from aimo.evaluate import evaluate
from aimo.strategies import NAMES
from aimo.vote import vote_table
from tests.test_evaluate import metric, trace, write

pytestmark = pytest.mark.needs("unit")

FINISHES = ["stop", "stop", "stop", "early_stop", "deadline", "pruned", "not_started"]


def pool(seed=11):
    """Generate rows only (the full vote then votes the same rows as the curve at k = N), with
    every cancelled finish reason, confidences and entropies, some unknown, and executions."""
    rng = np.random.default_rng(seed)
    problems, traces, execs = [], [], []
    for i in range(14):
        pid = f"p{i:02d}"
        answer = int(rng.integers(0, 6))
        problems.append((pid, answer))
        for j in range(int(rng.integers(4, 11))):  # problems of different sizes
            x = answer if rng.random() < 0.4 else int(rng.integers(0, 6))
            finish = str(rng.choice(FINISHES))
            t = dict(
                trace(
                    pid,
                    j,
                    None if finish == "not_started" or rng.random() < 0.08 else x,
                    lp=float(-rng.random()),
                    entropy=None if rng.random() < 0.1 else float(rng.random()),
                    tail=None if rng.random() < 0.1 else float(rng.random()),
                ),
                finish_reason=finish,
                min_conf=None if rng.random() < 0.15 else float(rng.random() * 5),
                tail_conf=None if rng.random() < 0.15 else float(rng.random() * 5),
            )
            traces.append(t)
            execs.append(
                {
                    "trace_id": t["trace_id"],
                    "problem_id": pid,
                    "exec_status": str(rng.choice(["ok", "error"])),
                    "agrees": bool(rng.random() < 0.5),
                }
            )
    problems.append(("unknown", None))  # left out of every accuracy
    return problems, traces, execs


@pytest.mark.parametrize("count_cancelled", [False, True])
def test_every_curve_at_n_is_the_full_vote(tmp_path, count_cancelled):
    problems, traces, execs = pool()
    paths = write(tmp_path, problems, traces, execs)
    settings = {"count_cancelled": count_cancelled, "cancelled_weight": 0.5, "filter_keep": 0.4}
    res = evaluate(*paths, tmp_path / "out", n_subsets=7, settings=settings)
    truth = dict(problems)
    votes = vote_table(*paths, settings, strategies=NAMES).to_pylist()
    # the row rule: a cancelled row votes only with count_cancelled, a pruned one never
    can_vote = set(FINISHES) - {"pruned"} if count_cancelled else {"stop"}
    n = max(
        sum(t["problem_id"] == p and t["finish_reason"] in can_vote for t in traces)
        for p, _ in problems[:-1]
    )
    assert n == max(r["k"] for r in res["metrics"].to_pylist())  # N: the most that can vote
    for s in NAMES:
        want = np.mean(
            [v["answer"] == truth[v["problem_id"]] for v in votes if v["strategy"] == s][:-1]
        )
        assert metric(res["metrics"], s, n) == want, s  # exactly: the same query
        assert metric(res["metrics"], s, n, "full") == want, s
    # pass@k at N and the oracle: some row that can vote is right
    right = {
        t["problem_id"]
        for t in traces
        if t["finish_reason"] in can_vote and t["answer_int"] == truth[t["problem_id"]]
    }
    oracle = len(right) / (len(problems) - 1)
    assert metric(res["metrics"], "pass@k", n, "pass") == pytest.approx(oracle)
    assert metric(res["metrics"], "pass@k", n, "full") == pytest.approx(oracle)


def test_the_schema_enum_is_the_declared_strategies():
    with open("schemas/config.schema.yaml") as f:
        schema = yaml.safe_load(f)
    vote = schema["properties"]["vote"]["properties"]["strategy"]
    assert tuple(vote["enum"]) == NAMES
