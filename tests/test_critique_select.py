"""The critique's choice of traces (aimo.critique.select): the most confident representative
of each top answer."""

import pytest

from aimo.critique import select

pytestmark = pytest.mark.needs("unit")


def t(tid, answer, lp):
    return {"trace_id": tid, "problem_id": "a", "answer_int": answer, "mean_logprob": lp}


def test_a_certain_trace_is_the_most_confident_representative():
    traces = [t("a:0", 7, -0.5), t("a:1", 7, 0.0), t("a:2", 7, None), t("a:3", 7, float("nan"))]
    execs = {x["trace_id"]: {"exec_status": "ok"} for x in traces}
    assert [x["trace_id"] for x in select(traces, execs, "top", 1)] == ["a:1"]


def test_an_unknown_confidence_ranks_after_a_known_one():
    traces = [t("a:0", 7, None), t("a:1", 7, -3.0), t("a:2", 7, float("nan"))]
    execs = {x["trace_id"]: {"exec_status": "ok"} for x in traces}
    assert [x["trace_id"] for x in select(traces, execs, "top", 1)] == ["a:1"]


def test_a_trace_without_an_execution_row_names_the_files(tmp_path):
    import pytest

    from aimo.schemas import EXECUTIONS, PROBLEMS, TRACES
    from aimo.solver import stage_inputs
    from aimo.tables import write_table

    write_table(
        [{"problem_id": "a", "problem": "?", "answer": 1}], tmp_path / "p.parquet", PROBLEMS
    )
    write_table(
        [dict(t("a:0", 1, -0.1), sample=0, seed=0, source="generate")],
        tmp_path / "t.parquet",
        TRACES,
    )
    write_table([], tmp_path / "e.parquet", EXECUTIONS)
    with pytest.raises(
        ValueError,
        match=r"e\.parquet: no execution rows for traces \['a:0'\]"
        r".*t\.parquet; rerun the execute stage",
    ):
        stage_inputs(tmp_path / "p.parquet", [tmp_path / "t.parquet"], [tmp_path / "e.parquet"])
