"""The evaluation (aimo.evaluate): estimators, maj@k on constructed cases, the files written."""

import itertools
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from aimo.curves import k_grid, pass_at_k, pass_at_k_mean
from aimo.evaluate import evaluate
from aimo.schemas import EXECUTIONS, METRICS, PROBLEMS, TRACES
from aimo.tables import read_metadata, write_table
from aimo.vote import STRATEGIES, vote_table

pytestmark = pytest.mark.needs("unit")

OUTPUTS = (
    "metrics.parquet",
    "per_problem.parquet",
    "report.md",
    "maj_at_k.png",
    "accuracy_vs_tokens.png",
    "selection.png",
)


def trace(
    pid,
    sample,
    answer,
    source="generate",
    tokens=100,
    suffix=None,
    lp=-0.5,
    entropy=None,
    tail=None,
):
    tid = f"{pid}:{sample}" + (f":{suffix}" if suffix else "")
    return {
        "trace_id": tid,
        "problem_id": pid,
        "sample": sample,
        "seed": sample,
        "source": source,
        "answer": None if answer is None else str(answer),
        "answer_int": answer,
        "mean_logprob": lp,
        "completion_tokens": tokens,
        "mean_entropy": entropy,
        "tail_entropy": tail,
    }


def write(tmp_path, problems, traces, execs=()):
    write_table(
        [{"problem_id": p, "problem": "?", "answer": a} for p, a in problems],
        tmp_path / "problems.parquet",
        PROBLEMS,
    )
    write_table(traces, tmp_path / "traces.parquet", TRACES)
    write_table(list(execs), tmp_path / "execs.parquet", EXECUTIONS)
    return (
        tmp_path / "problems.parquet",
        [tmp_path / "traces.parquet"],
        [tmp_path / "execs.parquet"],
    )


def metric(metrics, strategy, k, curve="subset"):
    got = [
        r["accuracy"]
        for r in metrics.to_pylist()
        if r["strategy"] == strategy and r["k"] == k and r["curve"] == curve
    ]
    assert len(got) == 1, (strategy, k, curve)
    return got[0]


# ---------------------------------------------------------------------------------------------
# pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 1, 0.25),
        (10, 3, 1, 0.3),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (6, 3, 4, 1.0),  # n - c < k: every 4-subset holds a correct sample
        (3, 1, 8, 1.0),  # k capped at n
        (0, 0, 1, 0.0),  # no sample
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert math.isclose(pass_at_k(n, c, k), expected)


def test_pass_at_k_mean_matches_the_scalar_estimator():
    rng = np.random.default_rng(3)
    n = rng.integers(0, 40, 200)
    c = np.array([rng.integers(0, x + 1) for x in n])
    ks = [1, 2, 3, 7, 16, 39, 50]
    got = pass_at_k_mean(n, c, ks)
    want = [np.mean([pass_at_k(int(a), int(b), k) for a, b in zip(n, c)]) for k in ks]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_k_grid():
    assert list(k_grid(5)) == [1, 2, 3, 4, 5]
    assert list(k_grid(5, [3, 9])) == [1, 2, 3, 4, 5]
    assert list(k_grid(0)) == []
    g = k_grid(10000, [100, 777])
    assert g[0] == 1 and g[-1] == 10000 and 777 in g and 100 in g
    assert list(g) == sorted(set(g)) and len(g) < 60


# ---------------------------------------------------------------------------------------------
# maj@k on constructed cases


def brute_force_maj_at_k(answers, correct, k):
    """Exact expected maj@k: every k-subset, ties to more votes then the smaller answer."""
    subsets = list(itertools.combinations(answers, k))
    right = 0
    for sub in subsets:
        valid = [a for a in sub if a is not None]
        if not valid:
            continue
        counts = {a: valid.count(a) for a in valid}
        best = min(counts, key=lambda a: (-counts[a], a))
        right += best == correct
    return right / len(subsets)


def test_maj_at_k_constructed(tmp_path):
    answers = {"a": [5, 5, 5, 7], "b": [1, 2, 2], "c": [3, None, 4, 4, 3, 3]}
    correct = {"a": 5, "b": 1, "c": 4}
    traces = [trace(p, i, x) for p, xs in answers.items() for i, x in enumerate(xs)]
    paths = write(tmp_path, sorted(correct.items()), traces)
    res = evaluate(*paths, tmp_path / "out", ks=[2], n_subsets=4000, seed=1)
    m = res["metrics"]
    N = 6
    for k in range(1, N + 1):
        want = np.mean(
            [brute_force_maj_at_k(xs, correct[p], min(k, len(xs))) for p, xs in answers.items()]
        )
        got = metric(m, "majority", k)
        assert abs(got - want) < 0.025, (k, got, want)
    # deterministic values: at k = 2 "a" always wins (a 5-7 tie goes to the smaller 5), "b"
    # wins 2 of 3 subsets; at the full N the vote is the plain vote
    assert metric(m, "majority", N) == pytest.approx(1 / 3)  # a right, b and c wrong
    # pass@k rows are the unbiased estimator
    n, c = np.array([4, 3, 6]), np.array([3, 1, 2])
    for k in range(1, N + 1):
        assert metric(m, "pass@k", k, "pass") == pytest.approx(pass_at_k_mean(n, c, [k])[0])


@pytest.mark.parametrize("replaces", [False, True])
def test_subset_curve_at_full_n_equals_the_generate_vote(tmp_path, replaces):
    # the sample curves vote the generate rows alone, whether or not a critique replaces one
    rng = np.random.default_rng(5)
    problems, traces, execs = [], [], []
    for i in range(12):
        pid = f"p{i:02d}"
        answer = int(rng.integers(0, 50))
        problems.append((pid, answer))
        for j in range(10):
            x = answer if rng.random() < 0.35 else int(rng.integers(0, 4))
            # entropies: random, a few unknown (they take the median of the known ones)
            ent = [None if rng.random() < 0.1 else float(rng.random()) for _ in range(2)]
            t = trace(
                pid,
                j,
                None if rng.random() < 0.1 else x,
                lp=float(-rng.random()),
                entropy=ent[0],
                tail=ent[1],
            )
            traces.append(t)
            execs.append(
                {
                    "trace_id": t["trace_id"],
                    "problem_id": pid,
                    "exec_status": str(rng.choice(["ok", "error", "no_code"])),
                    "agrees": bool(rng.random() < 0.5),
                }
            )
        # only in the full vote
        traces.append(dict(trace(pid, 0, answer, "critique", suffix="c"), parent_id=f"{pid}:0"))
    paths = write(tmp_path, problems, traces, execs)
    res = evaluate(*paths, tmp_path / "out", n_subsets=3, settings={"critique_replace": replaces})
    gen_only = [t for t in traces if t["source"] == "generate"]
    write_table(gen_only, tmp_path / "gen.parquet", TRACES)
    votes = vote_table(
        paths[0], [tmp_path / "gen.parquet"], paths[2], strategies=STRATEGIES
    ).to_pylist()
    truth = dict(problems)
    for s in STRATEGIES:
        want = np.mean([v["answer"] == truth[v["problem_id"]] for v in votes if v["strategy"] == s])
        assert metric(res["metrics"], s, 10) == pytest.approx(want), s
        full = [
            v
            for v in vote_table(
                *paths, {"critique_replace": replaces}, strategies=STRATEGIES
            ).to_pylist()
            if v["strategy"] == s
        ]
        want_full = np.mean([v["answer"] == truth[v["problem_id"]] for v in full])
        assert metric(res["metrics"], s, 10, "full") == pytest.approx(want_full), s


def test_seed_makes_it_reproducible(tmp_path):
    traces = [trace("a", i, i % 3) for i in range(9)] + [trace("b", i, i % 2) for i in range(7)]
    paths = write(tmp_path, [("a", 0), ("b", 1)], traces)
    one = evaluate(*paths, tmp_path / "one", n_subsets=20, seed=7)["metrics"].to_pylist()
    two = evaluate(*paths, tmp_path / "two", n_subsets=20, seed=7)["metrics"].to_pylist()
    assert one == two


# ---------------------------------------------------------------------------------------------
# files


def test_files_written(tmp_path):
    traces = [trace("a", i, [5, 5, 7][i % 3], tokens=10 * (i + 1)) for i in range(6)]
    traces += [trace("b", i, 9) for i in range(4)]
    traces += [
        trace("a", 0, 5, "reflexion", tokens=40, suffix="r1"),
        trace("a", 1, 7, "critique", tokens=50, suffix="c"),
    ]
    paths = write(tmp_path, [("a", 5), ("b", 8), ("c", 1)], traces)
    out = tmp_path / "eval"
    res = evaluate(*paths, out, ks=[2, 4], n_subsets=10)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for name in ("maj_at_k.png", "accuracy_vs_tokens.png", "selection.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    metrics = pq.read_table(out / "metrics.parquet")
    assert metrics.schema.remove_metadata().equals(METRICS)
    assert {"subset", "pass", "full"} == set(metrics.column("curve").to_pylist())
    assert read_metadata(out / "metrics.parquet")["n_subsets"] == 10
    pp = {r["problem_id"]: r for r in pq.read_table(out / "per_problem.parquet").to_pylist()}
    assert pp["a"]["answer"] == 5 and pp["a"]["n_traces"] == 8 and pp["a"]["n_generate"] == 6
    assert pp["a"]["distribution"] == "5:5, 7:3"
    assert pp["a"]["voted_weighted"] == 5 and pp["a"]["correct_weighted"] is True
    assert pp["a"]["correct_rank"] == 1
    assert pp["b"]["correct_rank"] is None and pp["b"]["correct_majority"] is False
    assert pp["c"]["n_traces"] == 0 and pp["c"]["voted_majority"] is None
    assert pp["a"]["completion_tokens"] == 10 + 20 + 30 + 40 + 50 + 60 + 40 + 50
    report = (out / "report.md").read_text()
    assert report == res["report"]
    assert "| weighted | 33.3% | 1/3 |" in report  # a right; b, c wrong
    assert (
        "| k | weighted@k | majority@k | logprob@k | verified@k | entropy@k | tail_entropy@k "
        "| share_confidence@k | filter_min_conf@k | filter_tail_conf@k | pass@k |"
    ) in report
    for k in (1, 2, 4, 6):  # k = 1, the configured ks and N
        assert f"\n| {k} | " in report
    assert "| critique | 1 | 50 | 50 |" in report


def test_no_known_answer_writes_a_note(tmp_path):
    paths = write(
        tmp_path, [("a", None), ("b", None)], [trace("a", 0, 5), trace("a", 1, 5), trace("b", 0, 2)]
    )
    out = tmp_path / "eval"
    res = evaluate(*paths, out, n_subsets=5)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert res["metrics"].num_rows == 0
    assert "no problem has a known answer" in (out / "report.md").read_text()
    assert "no problem has a known answer" in read_metadata(out / "metrics.parquet")["note"]
    pp = {r["problem_id"]: r for r in res["per_problem"].to_pylist()}
    assert pp["a"]["voted_majority"] == 5 and pp["a"]["correct_majority"] is None


def test_some_unknown_answers_are_left_out(tmp_path):
    paths = write(tmp_path, [("a", 5), ("b", None)], [trace("a", 0, 5), trace("b", 0, 2)])
    res = evaluate(*paths, tmp_path / "eval", n_subsets=2)
    assert metric(res["metrics"], "weighted", 1, "full") == 1.0
    assert "other 1 are left out" in res["report"]


def test_bad_arguments(tmp_path):
    paths = write(tmp_path, [("a", 5)], [trace("a", 0, 5)])
    with pytest.raises(ValueError, match="n_subsets"):
        evaluate(*paths, tmp_path / "x", n_subsets=0)
    with pytest.raises(ValueError, match="ks"):
        evaluate(*paths, tmp_path / "x", ks=[0])
    with pytest.raises(ValueError, match="valid strategies"):
        evaluate(*paths, tmp_path / "x", strategies=["best"])
