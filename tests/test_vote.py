"""The DuckDB votes (aimo.vote) on tiny synthetic shards."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aimo.schemas import EXECUTIONS, PROBLEMS, TRACES, VOTES
from aimo.strategies import DECLARED
from aimo.tables import read_metadata, read_table, write_table
from aimo.vote import STRATEGIES, VoteSettings, load_sql, vote, vote_table

pytestmark = pytest.mark.needs("unit")


def trace(pid, sample, answer, source="generate", lp=-0.5, suffix=None, ent=None, tail=None):
    tid = f"{pid}:{sample}" + (f":{suffix}" if suffix else "")
    return {
        "trace_id": tid,
        "problem_id": pid,
        "sample": sample,
        "seed": sample,
        "source": source,
        "attempt": 0 if source == "generate" else 1,
        "answer": None if answer is None else str(answer),
        "answer_int": answer,
        "mean_logprob": lp,
        "completion_tokens": 100,
        "mean_entropy": ent,
        "tail_entropy": tail,
    }


def execution(t, status="ok", agrees=None):
    return {
        "trace_id": t["trace_id"],
        "problem_id": t["problem_id"],
        "exec_status": status,
        "agrees": agrees,
    }


@pytest.fixture
def shards(tmp_path):
    """Write problems, traces and executions; return a function that does it."""

    def make(traces, execs=(), problems=None, name="t"):
        pids = problems or sorted({t["problem_id"] for t in traces})
        write_table(
            [{"problem_id": p, "problem": "?", "answer": None} for p in pids],
            tmp_path / "problems.parquet",
            PROBLEMS,
        )
        write_table(traces, tmp_path / f"{name}_traces.parquet", TRACES)
        write_table(list(execs), tmp_path / f"{name}_execs.parquet", EXECUTIONS)
        return (
            tmp_path / "problems.parquet",
            [tmp_path / f"{name}_traces.parquet"],
            [tmp_path / f"{name}_execs.parquet"],
        )

    return make


def rows(table, strategy=None):
    out = {}
    for r in table.to_pylist():
        if strategy is None or r["strategy"] == strategy:
            out[r["problem_id"]] = r
    return out


def test_weighted_clean_code_counts_double(shards):
    ts = [trace("a", 0, 7), trace("a", 1, 7), trace("a", 2, 9), trace("a", 3, 9)]
    ex = [
        execution(ts[0], "ok"),
        execution(ts[1], "error"),
        execution(ts[2], "ok"),
        execution(ts[3], "ok"),
    ]
    p, t, e = shards(ts, ex)
    w = rows(vote_table(p, t, e, strategies=["weighted"]))["a"]
    assert (w["answer"], w["score"], w["votes"]) == (9, 4.0, 2)
    assert (w["runner_up"], w["runner_up_score"], w["margin"]) == (7, 3.0, 1.0)
    # custom weights: clean code no better than the rest -> a 2-2 tie, broken by the smaller
    w = rows(vote_table(p, t, e, VoteSettings(weights={"clean_code": 1}), strategies=["weighted"]))[
        "a"
    ]
    assert (w["answer"], w["score"], w["runner_up"], w["margin"]) == (7, 2.0, 9, 0.0)


def test_no_code_and_missing_execution_count_as_other(shards):
    ts = [trace("a", 0, 7), trace("a", 1, 9)]
    p, t, e = shards(ts, [execution(ts[0], "no_code")])  # no execution row for sample 1
    w = rows(vote_table(p, t, e, strategies=["weighted"]))["a"]
    assert (w["answer"], w["score"], w["runner_up_score"]) == (7, 1.0, 1.0)  # tie -> smaller


def test_tie_breaking_order(shards):
    # b: equal score (2 = 2) -> more votes wins (9 has two "other" votes, 7 one clean vote)
    ts = [trace("b", 0, 7), trace("b", 1, 9), trace("b", 2, 9)]
    ex = [execution(ts[0], "ok"), execution(ts[1], "error"), execution(ts[2], "error")]
    # c: equal score and votes -> the smaller answer
    tc = [trace("c", 0, 300), trace("c", 1, 20)]
    p, t, e = shards(ts + tc, ex)
    got = rows(vote_table(p, t, e, strategies=["weighted"]))
    assert (got["b"]["answer"], got["b"]["votes"], got["b"]["runner_up"]) == (9, 2, 7)
    assert (got["c"]["answer"], got["c"]["runner_up"], got["c"]["margin"]) == (20, 300, 0.0)
    # the runner-up's votes tell which rule broke the tie (the inspector reads them)
    assert (got["b"]["runner_up_votes"], got["c"]["runner_up_votes"]) == (1, 1)
    maj = rows(vote_table(p, t, e, strategies=["majority"]))
    assert maj["b"]["answer"] == 9 and maj["c"]["answer"] == 20


def test_zero_weight_answers_and_empty_problems(shards):
    ts = [
        trace("a", 0, None),
        trace("a", 1, -5),
        trace("a", 2, 100000),
        trace("a", 3, 3),
        trace("b", 0, None),
        trace("b", 1, 123456),
    ]
    p, t, e = shards(ts, [execution(x, "ok", True) for x in ts], problems=["a", "b", "c"])
    table = vote_table(p, t, e, strategies=STRATEGIES)
    assert table.schema.equals(VOTES)
    assert table.num_rows == 3 * len(STRATEGIES)
    for s in STRATEGIES:
        got = rows(table, s)
        assert (got["a"]["answer"], got["a"]["votes"], got["a"]["runner_up"]) == (3, 1, None)
        assert got["a"]["margin"] == got["a"]["score"]
        for pid in ("b", "c"):  # only invalid answers / no trace at all
            assert got[pid]["answer"] is None and got[pid]["votes"] == 0
            assert got[pid]["score"] == 0.0 and got[pid]["margin"] is None
            assert got[pid]["runner_up"] is None and got[pid]["runner_up_score"] is None


def test_invalid_weight_lets_out_of_range_integers_vote(shards):
    ts = [trace("a", 0, 100000), trace("a", 1, 100000), trace("a", 2, 5), trace("a", 3, None)]
    p, t, e = shards(ts)
    assert rows(vote_table(p, t, e, strategies=["weighted"]))["a"]["answer"] == 5
    got = rows(vote_table(p, t, e, VoteSettings(weights={"invalid": 1}), strategies=["weighted"]))[
        "a"
    ]
    assert (got["answer"], got["score"], got["runner_up"]) == (100000, 2.0, 5)


def test_critique_weight(shards):
    ts = [trace("a", 0, 7), trace("a", 1, 7), trace("a", 0, 9, "critique", suffix="c")]
    p, t, e = shards(ts)
    assert rows(vote_table(p, t, e, strategies=["weighted"]))["a"]["answer"] == 7  # 2 vs 1
    got = rows(vote_table(p, t, e, VoteSettings(critique_weight=3.0), strategies=["weighted"]))["a"]
    assert (got["answer"], got["score"], got["runner_up_score"]) == (9, 3.0, 2.0)
    got = rows(vote_table(p, t, e, VoteSettings(critique_weight=0.0), strategies=["weighted"]))["a"]
    assert (got["answer"], got["runner_up"]) == (7, None)  # a zero weight is no vote
    assert (
        rows(vote_table(p, t, e, VoteSettings(critique_weight=3.0), strategies=["majority"]))["a"][
            "answer"
        ]
        == 9
    )
    # reflexion rows count like generate rows
    ts2 = ts[:2] + [
        trace("a", 2, 9, "reflexion", suffix="r1"),
        trace("a", 3, 9, "reflexion", suffix="r1"),
    ]
    p, t, e = shards(ts2, name="r")
    got = rows(vote_table(p, t, e, strategies=["weighted"]))["a"]
    assert (got["answer"], got["score"], got["runner_up_score"]) == (7, 2.0, 2.0)


def test_a_critique_can_replace_its_parents_vote(shards):
    # a 2-2 tie between 7 and 9; one 7 is critiqued and stays 7, one 9 is critiqued to 5
    ts = [
        trace("a", 0, 7),
        trace("a", 1, 7),
        trace("a", 2, 9),
        trace("a", 3, 9),
        trace("b", 0, 4),
        trace("b", 1, 4),
    ]
    crit = [
        dict(trace("a", 0, 7, "critique", suffix="c"), parent_id="a:0"),
        dict(trace("a", 2, 5, "critique", suffix="c"), parent_id="a:2"),
        dict(trace("b", 0, None, "critique", suffix="c"), parent_id="b:0"),  # no answer
        dict(trace("b", 1, 123456, "critique", suffix="c"), parent_id="b:1"),
    ]  # invalid
    p, t, e = shards(ts + crit)
    added = rows(vote_table(p, t, e, strategies=["majority"]))
    assert (added["a"]["answer"], added["a"]["score"], added["a"]["runner_up_score"]) == (7, 3, 2)
    for strategy in ("majority", "weighted", "logprob", "verified"):
        got = rows(vote_table(p, t, e, VoteSettings(critique_replace=True), strategies=[strategy]))
        # 7, 7 (critique of a:0 instead of a:0), 9 (a:3), 5 (instead of a:2)
        assert (got["a"]["answer"], got["a"]["votes"], got["a"]["runner_up"]) == (7, 2, 5), strategy
        # a critique with no answer or an invalid one leaves its parent's vote alone
        assert (got["b"]["answer"], got["b"]["votes"]) == (4, 2), strategy
    with pytest.raises(ValueError, match="critique_replace"):
        vote_table(p, t, e, VoteSettings(critique_replace="yes"), strategies=["majority"])


def test_logprob_weights(shards):
    ts = [
        trace("a", 0, 7, lp=-0.1),
        trace("a", 1, 9, lp=-2.0),
        trace("a", 2, 9, lp=-2.0),
        trace("a", 3, 11, lp=float("nan")),
        trace("a", 4, 11, lp=None),
        trace("a", 5, 11, lp=float("-inf")),
    ]
    p, t, e = shards(ts)
    got = rows(vote_table(p, t, e, strategies=["logprob"]))["a"]
    assert got["answer"] == 7
    assert math.isclose(got["score"], math.exp(-0.1))
    assert math.isclose(got["runner_up_score"], 2 * math.exp(-2.0))
    assert got["votes"] == 1
    assert rows(vote_table(p, t, e, strategies=["majority"]))["a"]["answer"] == 11  # 3 votes
    # a positive mean_logprob (impossible for a real model) is clamped to a weight of 1
    p, t, e = shards([trace("b", 0, 1, lp=3.0)], name="pos")
    assert rows(vote_table(p, t, e, strategies=["logprob"]))["b"]["score"] == 1.0


def test_entropy_weights_and_the_neutral_value(shards):
    # 7: two unsure traces (entropy 1.0 each: weight 2); 9: one sure trace (0.25: weight 4)
    ts = [
        trace("a", 0, 7, ent=1.0, tail=0.1),
        trace("a", 1, 7, ent=1.0, tail=0.1),
        trace("a", 2, 9, ent=0.25, tail=2.0),
    ]
    p, t, e = shards(ts)
    got = rows(vote_table(p, t, e, strategies=["entropy"]))["a"]
    assert (got["answer"], got["score"], got["votes"], got["runner_up_score"]) == (9, 4.0, 1, 2.0)
    got = rows(vote_table(p, t, e, strategies=["tail_entropy"]))["a"]  # 7: 2 x 10; 9: 0.5
    assert (got["answer"], got["score"], got["runner_up_score"]) == (7, 20.0, 0.5)
    assert rows(vote_table(p, t, e, strategies=["majority"]))["a"]["answer"] == 7
    # unknown entropies (NULL, NaN, infinite, negative) take the median of the known ones
    # (0, 0.25, 0.5, 1: 0.375), not the best or the worst weight; a zero entropy is floored
    ts = [
        trace("b", 0, 1, ent=0.25),
        trace("b", 1, 2, ent=0.5),
        trace("b", 2, 3, ent=1.0),
        trace("b", 3, 4, ent=None),
        trace("b", 4, 5, ent=float("nan")),
        trace("b", 5, 6, ent=float("inf")),
        trace("b", 6, 8, ent=-1.0),
        trace("b", 7, 9, ent=0.0),
    ]
    p, t, e = shards(ts, name="b")
    tallies = {
        r["answer"]: r["score"] for r in vote_table(p, t, e, strategies=["entropy"]).to_pylist()
    }
    assert tallies[9] == pytest.approx(1 / 1e-3)
    table = load_tallies(p, t, e, "entropy")
    neutral = 1 / 0.375
    assert {a: table[a] for a in (1, 2, 3, 4, 5, 6, 8)} == pytest.approx(
        {1: 4.0, 2: 2.0, 3: 1.0, 4: neutral, 5: neutral, 6: neutral, 8: neutral}
    )
    # no trace with an entropy: every weight is equal, the vote is the majority vote
    ts = [trace("c", 0, 3), trace("c", 1, 4), trace("c", 2, 4)]
    p, t, e = shards(ts, name="c")
    for strategy in ("entropy", "tail_entropy", "share_confidence"):
        got = rows(vote_table(p, t, e, strategies=[strategy]))["c"]
        assert (got["answer"], got["votes"]) == (4, 2), strategy


def load_tallies(p, t, e, strategy):
    from aimo.vote import Candidates

    with Candidates(p, t, e, strategies=[strategy]) as cands:
        return {r["answer"]: r["score"] for r in cands.tallies(strategy).to_pylist()}


def test_share_confidence_mixes_share_confidence_and_consensus(shards):
    # 7: 3 of 4 valid votes, unsure (tail 2.0), none verified; 9: 1 vote, sure, verified
    ts = [trace("a", i, 7, tail=2.0) for i in range(3)] + [
        trace("a", 3, 9, tail=0.0),
        trace("a", 4, None),
    ]
    ex = [execution(x, "ok", False) for x in ts[:3]] + [execution(ts[3], "ok", True)]
    p, t, e = shards(ts, ex)
    got = load_tallies(p, t, e, "share_confidence")
    assert got[7] == pytest.approx(2.0 * 0.75 + 0.3 * math.exp(-2.0) + 0.5 * 0.0)
    assert got[9] == pytest.approx(2.0 * 0.25 + 0.3 * 1.0 + 0.5 * 1.0)
    assert rows(vote_table(p, t, e, strategies=["share_confidence"]))["a"]["answer"] == 7
    # consensus weighed up: the verified answer wins
    mix = VoteSettings(mix={"consensus": 2.0})
    assert rows(vote_table(p, t, e, mix, strategies=["share_confidence"]))["a"]["answer"] == 9
    with pytest.raises(ValueError, match="share_confidence"):
        VoteSettings(mix={"share": 1.0, "votes": 2.0})


def test_verified_and_its_fallback(shards):
    a = [trace("a", i, 7) for i in range(3)] + [trace("a", 3, 9)]
    b = [trace("b", 0, 4), trace("b", 1, 4), trace("b", 2, 8)]
    ex = [execution(x, "ok", False) for x in a[:3]] + [execution(a[3], "error", True)]
    ex += [execution(x, "ok", None) for x in b]  # nothing printed: no verified candidate
    p, t, e = shards(a + b, ex)
    got = rows(vote_table(p, t, e, strategies=["verified"]))
    assert (got["a"]["answer"], got["a"]["score"], got["a"]["runner_up"]) == (9, 1.0, None)
    assert (got["b"]["answer"], got["b"]["score"]) == (4, 4.0)  # the weighted fallback
    assert rows(vote_table(p, t, e, strategies=["weighted"]))["a"]["answer"] == 7


def test_duplicated_execution_rows_do_not_double_a_vote(shards, tmp_path):
    ts = [trace("a", 0, 7), trace("a", 1, 9), trace("a", 2, 9)]
    ex = [execution(ts[0], "ok")]
    p, t, e = shards(ts, ex)
    write_table(ex, tmp_path / "again.parquet", EXECUTIONS)
    got = rows(vote_table(p, t, e + [tmp_path / "again.parquet"], strategies=["weighted"]))["a"]
    # 7 scores 2 (one clean trace, not 4); 9 scores 2 with two votes and wins the tie
    assert (got["answer"], got["score"], got["runner_up"], got["runner_up_score"]) == (
        9,
        2.0,
        7,
        2.0,
    )


def test_every_strategy_alone_equals_all_together(shards):
    ts = [
        trace(pid, i, (i * 7 + len(pid)) % 4, lp=-0.1 * i)
        for pid in ("a", "bb", "ccc")
        for i in range(9)
    ]
    ex = [execution(x, ["ok", "error", "no_code"][i % 3], i % 2 == 0) for i, x in enumerate(ts)]
    p, t, e = shards(ts, ex)
    together = vote_table(p, t, e, strategies=STRATEGIES)
    for s in STRATEGIES:
        alone = vote_table(p, t, e, strategies=[s])
        assert alone.to_pylist() == [r for r in together.to_pylist() if r["strategy"] == s]


def test_vote_writes_the_table_atomically(shards, tmp_path):
    ts = [trace("a", 0, 7), trace("a", 1, 7)]
    p, t, e = shards(ts)
    out = tmp_path / "out" / "votes.parquet"
    table = vote(p, t, e, out, VoteSettings(strategy="majority", weights={"clean_code": 3}))
    assert out.is_file()
    assert read_table(out, VOTES).to_pylist() == table.to_pylist()
    meta = read_metadata(out)
    assert meta["strategy"] == "majority" and meta["settings"]["weights"]["clean_code"] == 3.0
    assert not [x for x in out.parent.iterdir() if x.name.startswith(".")]  # no temp left


def test_sql_files_have_header_comments():
    for name in (
        "candidates",
        "rank",
        *{s.sql for s in DECLARED},
        "subset_pool",
        "subset_hits",
        "eval_problems",
    ):
        sql = load_sql(name)
        assert sql.startswith(f"-- {name}.sql: "), name


# ---------------------------------------------------------------------------------------------
# bad input


def test_unknown_strategy_lists_the_valid_ones(shards, tmp_path):
    p, t, e = shards([trace("a", 0, 1)])
    with pytest.raises(ValueError, match="weighted, majority, logprob, verified"):
        vote_table(p, t, e, strategies=["best"])
    with pytest.raises(ValueError, match="valid strategies"):
        vote(p, t, e, tmp_path / "v.parquet", {"strategy": "plurality"})


@pytest.mark.parametrize(
    "weights, critique, match",
    [
        ({"clean": 2}, 1.0, "unknown weight"),
        ({"other": -1}, 1.0, "other"),
        ({"other": float("nan")}, 1.0, "other"),
        ({"other": "x"}, 1.0, "not a number"),
        (None, -0.5, "critique_weight"),
    ],
)
def test_bad_weights(shards, weights, critique, match):
    p, t, e = shards([trace("a", 0, 1)])
    with pytest.raises(ValueError, match=match):
        vote_table(p, t, e, settings={"weights": weights, "critique_weight": critique})


def test_missing_column_names_file_and_column(shards, tmp_path):
    p, t, e = shards([trace("a", 0, 1)])
    bad = tmp_path / "old_traces.parquet"
    table = pq.read_table(t[0]).drop_columns(["answer_int"])
    pq.write_table(table, bad)
    with pytest.raises(ValueError, match=r"old_traces\.parquet.*'answer_int'"):
        vote_table(p, [bad], e)
    bad_e = tmp_path / "old_execs.parquet"
    pq.write_table(pq.read_table(e[0]).drop_columns(["exec_status"]), bad_e)
    with pytest.raises(ValueError, match=r"old_execs\.parquet.*'exec_status'"):
        vote_table(p, t, [bad_e])
    # shards from before the entropy columns: an error naming the file and the column
    pq.write_table(pq.read_table(t[0]).drop_columns(["mean_entropy"]), bad)
    with pytest.raises(ValueError, match=r"old_traces\.parquet.*'mean_entropy'"):
        vote_table(p, [bad], e)


@pytest.mark.parametrize(
    "column, array",
    [
        ("answer_int", pa.array(["7"])),  # non-numeric
        ("answer_int", pa.array([7.0])),  # a float from another schema
        ("source", pa.array([1])),
    ],
)
def test_wrong_column_type_names_file_and_column(shards, tmp_path, column, array):
    p, t, e = shards([trace("a", 0, 7)])
    table = pq.read_table(t[0])
    table = table.set_column(table.schema.get_field_index(column), column, array)
    bad = tmp_path / "typed.parquet"
    pq.write_table(table, bad)
    with pytest.raises(ValueError, match=rf"typed\.parquet: column '{column}' has type"):
        vote_table(p, [bad], e)


def test_unreadable_and_missing_files(shards, tmp_path):
    p, t, e = shards([trace("a", 0, 7)])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable Parquet file"):
        vote_table(p, [junk], e)
    with pytest.raises(ValueError, match=r"nope\.parquet: trace shard not found"):
        vote_table(p, [tmp_path / "nope.parquet"], e)
    with pytest.raises(ValueError, match="given twice"):
        vote_table(p, t + t, e)


def test_unknown_source_names_the_file(shards, tmp_path):
    p, t, e = shards([trace("a", 0, 7)])
    rows_ = [trace("a", 1, 7, source="generated")]
    write_table(rows_, tmp_path / "odd.parquet", TRACES)
    with pytest.raises(
        ValueError,
        match=r"odd\.parquet: column 'source' has the value "
        r"'generated'",
    ):
        vote_table(p, t + [tmp_path / "odd.parquet"], e)


def test_overlapping_shards_are_refused(shards, tmp_path):
    ts = [trace("a", i, 7) for i in range(4)]
    p, t, e = shards(ts)
    write_table(ts[1:2], tmp_path / "overlap.parquet", TRACES)
    with pytest.raises(ValueError, match=r"column 'trace_id': the trace 'a:1' appears 2 times"):
        vote_table(p, t + [tmp_path / "overlap.parquet"], e)


def test_traces_of_unknown_problems_are_refused(shards):
    p, t, e = shards([trace("a", 0, 7), trace("zz", 0, 7)], problems=["a"])
    with pytest.raises(ValueError, match=r"column 'problem_id'.*not in .*problems\.parquet"):
        vote_table(p, t, e)


def test_empty_and_schemaless_shards_are_fine(shards, tmp_path):
    ts = [trace("a", 0, 7)]
    p, t, e = shards(ts, [execution(ts[0], "ok")])
    write_table([], tmp_path / "empty.parquet", TRACES)
    # an empty shard written without a schema (every column of type null)
    pq.write_table(pa.table({c: pa.nulls(0) for c in TRACES.names}), tmp_path / "nulls.parquet")
    pq.write_table(
        pa.table({c: pa.nulls(0) for c in EXECUTIONS.names}), tmp_path / "nulls_e.parquet"
    )
    got = rows(
        vote_table(
            p,
            t + [tmp_path / "empty.parquet", tmp_path / "nulls.parquet"],
            e + [tmp_path / "nulls_e.parquet"],
            strategies=["weighted"],
        )
    )
    assert got["a"]["answer"] == 7 and got["a"]["score"] == 2.0
    # no shard at all: every problem gets a row without an answer
    got = rows(vote_table(p, [], [], strategies=["weighted", "verified"]))
    assert got["a"]["answer"] is None


def test_columns_in_another_order_and_extra_columns(shards, tmp_path):
    p, t, e = shards([trace("a", 0, 7), trace("a", 1, 9)])
    table = pq.read_table(t[0])
    table = table.select(list(reversed(table.column_names))).append_column(
        "extra", pa.array([1, 2])
    )
    pq.write_table(table, tmp_path / "reordered.parquet")
    got = rows(vote_table(p, [tmp_path / "reordered.parquet"], e, strategies=["weighted"]))
    assert got["a"]["answer"] == 7


def test_huge_answers_are_null_and_weigh_nothing(shards):
    # the trace writer stores answer_int NULL for an integer beyond int64
    big = trace("a", 0, None)
    big["answer"] = "9" * 40
    p, t, e = shards([big, trace("a", 1, 12)])
    got = rows(vote_table(p, t, e, strategies=STRATEGIES))
    assert all(r["answer"] == 12 and r["votes"] == 1 for r in got.values())


def test_cancelled_traces_vote_only_when_counted_and_with_their_weight(shards):
    cut = [dict(trace("p", i, 7), finish_reason="deadline") for i in range(3)]
    done = [dict(trace("p", 3, 5), finish_reason="stop")]
    p, t, e = shards(cut + done)
    batch = rows(vote_table(p, t, e, {"strategy": "majority"}, strategies=["majority"]))["p"]
    assert batch["answer"] == 5 and batch["votes"] == 1  # the default: cancelled rows do not vote
    online = {"strategy": "majority", "count_cancelled": True, "cancelled_weight": 0.5}
    counted = rows(vote_table(p, t, e, online, strategies=["majority"]))["p"]
    assert counted["answer"] == 7 and counted["score"] == pytest.approx(1.5)
    low = dict(online, cancelled_weight=0.3)  # 3 x 0.3 < 1: the finished trace wins
    assert rows(vote_table(p, t, e, low, strategies=["majority"]))["p"]["answer"] == 5


def test_pruned_traces_never_vote(shards):
    pruned = [dict(trace("p", i, 7), finish_reason="pruned") for i in range(3)]
    done = [dict(trace("p", 3, 5), finish_reason="stop")]
    p, t, e = shards(pruned + done)
    online = {"strategy": "majority", "count_cancelled": True}
    assert rows(vote_table(p, t, e, online, strategies=["majority"]))["p"]["answer"] == 5


@pytest.mark.parametrize(
    "strategy, column", [("filter_min_conf", "min_conf"), ("filter_tail_conf", "tail_conf")]
)
def test_the_confidence_filter_keeps_the_most_confident_share(shards, strategy, column):
    """Three unsure traces say 1, one sure trace says 2, one without a confidence says 3:
    kept all, 1 wins by weight; kept the top quarter of those known, the sure one and the
    unknown one (at the median weight) are left, and 2 wins."""
    ts = [dict(trace("p", i, 1), **{column: 1.0}) for i in range(3)]
    ts += [dict(trace("p", 3, 2), **{column: 2.5}), trace("p", 4, 3)]
    p, t, e = shards(ts)
    every = rows(
        vote_table(p, t, e, {"strategy": strategy, "filter_keep": 1.0}, strategies=[strategy])
    )
    assert every["p"]["answer"] == 1 and every["p"]["score"] == pytest.approx(3.0)
    top = rows(
        vote_table(p, t, e, {"strategy": strategy, "filter_keep": 0.25}, strategies=[strategy])
    )
    assert top["p"]["answer"] == 2 and top["p"]["votes"] == 1
    assert top["p"]["runner_up"] == 3 and top["p"]["runner_up_score"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="filter_keep=0"):
        VoteSettings.of({"filter_keep": 0})
