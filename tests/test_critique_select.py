"""The critique's choice of traces (aimo.critique.select): the most confident representative
of each top answer."""
from aimo.critique import select


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
