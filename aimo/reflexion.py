"""The reflexion stage: traces whose code failed, or that gave no valid answer, are prompted again
with what went wrong, through the same TIR loop, for a bounded number of attempts.

Every new row names the trace it repairs (`parent_id`) and its attempt number; attempt k+1
repairs only the attempts k that failed again.
"""

import logging

from aimo import prompts, tir
from aimo.answers import in_range
from aimo.executions import executions_from_blocks
from aimo.prompts import clean_error
from aimo.schemas import OK, SANDBOX_STATUSES, TRACES
from aimo.solver import Solver, stage_inputs
from aimo.tables import write_table

log = logging.getLogger("aimo.reflexion")

FAILED = frozenset(SANDBOX_STATUSES) - {OK}  # the code failed: what a repair is for


def failure(trace: dict, exec_status: str | None, exec_error: str | None, limit: int) -> str | None:
    """What went wrong with `trace`, for the repair prompt; None when it needs no repair."""
    status = exec_status
    if status is None:  # a repair attempt: judged by its own code blocks, as execute judges
        row = executions_from_blocks([trace])[0]  # (its first failing block: the root cause)
        status, exec_error = row["exec_status"], row["exec_error"]
    if status in FAILED:
        return clean_error(
            f"The code ended with status {status}:\n{exec_error or '(no error text)'}", limit
        )
    if trace["answer_int"] is None or not in_range(trace["answer_int"]):
        tail = clean_error(trace["text"] or "", limit // 2)
        found = (
            "no final answer in \\boxed{}"
            if trace["answer"] is None
            else f"the final answer {trace['answer']!r} is not an integer in [0, 99999]"
        )
        return f"The solution gave {found}. It ended with:\n{tail}"
    return None


def repair_requests(parents, problems, errors, attempt):
    """Requests that repair each parent trace with its error."""
    return [
        tir.Request(
            trace_id=f"{p['trace_id']}:r{attempt}",
            problem_id=p["problem_id"],
            sample=p["sample"],
            seed=tir.derive_seed(p["seed"], "reflexion", attempt),
            messages=prompts.reflexion_messages(problems[p["problem_id"]], errors[p["trace_id"]]),
            source="reflexion",
            parent_id=p["trace_id"],
            attempt=attempt,
        )
        for p in parents
    ]


def reflexion_shard(problems_path, traces_path, executions_path, model_dir, out, params, threads=2):
    """Write the reflexion traces of one shard to `out` (an empty table when nothing failed)."""
    cfg = params["reflexion"]
    problems, traces, execs = stage_inputs(problems_path, [traces_path], [executions_path])
    errors, parents = {}, []
    for t in traces:
        e = execs[t["trace_id"]]
        why = failure(t, e["exec_status"], e["exec_error"], cfg["error_chars"])
        if why:
            errors[t["trace_id"]], parents = why, parents + [t]
    log.info("%d of %d traces need repair", len(parents), len(traces))
    rows, meta = [], {}
    if parents:
        with Solver(model_dir, params, threads) as solver:
            for attempt in range(1, cfg["max_attempts"] + 1):
                new = solver.run(repair_requests(parents, problems, errors, attempt))
                rows += new
                errors, parents = {}, []
                for t in new:
                    why = failure(t, None, None, cfg["error_chars"])
                    if why:
                        errors[t["trace_id"]], parents = why, parents + [t]
                log.info(
                    "attempt %d: %d repaired, %d still failing", attempt, len(new), len(parents)
                )
                if not parents:
                    break
            meta = solver.metadata()
    meta.update(stage="reflexion", parents=str(traces_path), max_attempts=cfg["max_attempts"])
    write_table(rows, out, TRACES, metadata=meta)
    return rows
