"""The critique stage: draft, review, refine. Selected traces go back to the model with a
checklist (calculation errors, edge cases, logic gaps); its corrected answer becomes a new trace
that enters the vote with its own weight.

A critique whose reply has no answer keeps `answer` null (zero weight in every vote) and
`changed` null; the critique text is always kept, so the reason for a change can be read.
"""

import logging
import math
from collections import defaultdict

from aimo import prompts, tir
from aimo.answers import in_range
from aimo.prompts import clean_error
from aimo.schemas import OK, TRACES
from aimo.solver import Solver, stage_inputs
from aimo.tables import write_table

log = logging.getLogger("aimo.critique")


def select(traces, execs, how: str, top_k: int):
    """The traces to critique: all of them, or per problem one representative (the most
    confident) of each of the `top_k` answers a first vote ranks highest: most traces whose code
    ran cleanly, then most traces, then the smaller answer. (Its own fixed order, not the vote's
    weights, so that tuning the vote never reruns the critique.)"""
    if how == "all":
        return list(traces)
    if how != "top":
        raise ValueError(f"critique.select={how!r}: expected 'all' or 'top'")
    by_answer = defaultdict(lambda: defaultdict(list))
    for t in traces:
        a = t["answer_int"]
        if a is None or not in_range(a):
            continue
        by_answer[t["problem_id"]][a].append(t)
    chosen = []
    for pid, answers in by_answer.items():

        def score(item):
            a, ts = item
            clean = sum(execs[t["trace_id"]]["exec_status"] == OK for t in ts)
            return (-clean, -len(ts), a)

        for a, ts in sorted(answers.items(), key=score)[:top_k]:
            chosen.append(max(ts, key=lambda t: (_confidence(t), t["trace_id"])))
    return chosen


def _confidence(trace) -> float:
    """A trace's mean log-probability, for choosing a representative: 0.0 (certain) is the
    best; an unknown one (NULL, NaN) ranks after every known one."""
    lp = trace["mean_logprob"]
    return lp if lp is not None and not math.isnan(lp) else -math.inf


def critique_shard(problems_path, trace_paths, execution_paths, model_dir, out, params, threads=2):
    """Write the critique traces of one shard (its generate and reflexion traces) to `out`."""
    cfg = params["critique"]
    problems, traces, execs = stage_inputs(problems_path, trace_paths, execution_paths)
    chosen = select(traces, execs, cfg["select"], cfg["top_k"])
    log.info("critiquing %d of %d traces (select=%s)", len(chosen), len(traces), cfg["select"])
    requests = [
        tir.Request(
            trace_id=f"{t['trace_id']}:c",
            problem_id=t["problem_id"],
            sample=t["sample"],
            seed=tir.derive_seed(t["seed"], "critique"),
            messages=prompts.critique_messages(
                problems[t["problem_id"]], clean_error(t["text"], cfg["solution_chars"])
            ),
            source="critique",
            parent_id=t["trace_id"],
            attempt=1,
        )
        for t in chosen
    ]
    rows, meta = [], {}
    if requests:
        with Solver(model_dir, params, threads) as solver:
            rows = solver.run(requests)
            meta = solver.metadata()
    parents = {t["trace_id"]: t for t in chosen}
    for r in rows:
        before = parents[r["parent_id"]]["answer_int"]
        r["changed"] = None if r["answer_int"] is None else r["answer_int"] != before
    meta.update(stage="critique", select=cfg["select"], top_k=cfg["top_k"])
    write_table(rows, out, TRACES, metadata=meta)
    log.info(
        "%d critiques: %d changed the answer, %d gave none",
        len(rows),
        sum(bool(r["changed"]) for r in rows),
        sum(r["answer_int"] is None for r in rows),
    )
    return rows
