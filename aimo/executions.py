"""Execution rows: the EXECUTIONS row of a trace from the results of its code blocks, whether
the execute stage re-ran them or the TIR run already did. The one policy of what a trace's
execution reports (its first failing block), for the execute stage, reflexion, the online run
and the benches; it runs nothing and knows nothing of sandboxes, engines or files.
"""

from dataclasses import dataclass

from aimo.answers import INT64_MAX, INT64_MIN, printed_integer
from aimo.schemas import NO_CODE, OK, TIMEOUT


def execution_row(trace: dict, res) -> dict:
    """The EXECUTIONS row of `trace` from the results of its blocks, in order (objects with
    status, stdout, error and wall_s: ExecResults, or `BlockResult`s of blocks already run).

    A trace's failure is its FIRST failing block, here and in reflexion (which judges a repair
    attempt by this row of its own blocks): one policy, the one that names the root cause. The
    blocks run in order in one session, so a block that fails leaves the session without what
    it was to define, and what fails after it (a NameError, a wrong value) follows from it.
    Reporting the last failure would send the repair after a symptom.

    What the code printed is read from the last block only where it ran to its end (a block
    that failed printed at most part of its work, and the online run keeps its stdout and
    traceback as one text). `agrees` compares the exact integer; `printed_int` holds it only
    where int64 can (a trace may print 2**64 or comb(100, 50))."""
    bad = [r for r in res if r.status != OK]
    last = res[-1] if res else None
    printed = printed_integer(last.stdout) if last and last.status == OK else None
    answer = trace["answer_int"]
    return {
        "trace_id": trace["trace_id"],
        "problem_id": trace["problem_id"],
        "exec_status": bad[0].status if bad else (OK if res else NO_CODE),
        "exec_output": last.stdout if last else None,
        "exec_error": bad[0].error if bad else None,
        "printed_int": printed
        if printed is not None and INT64_MIN <= printed <= INT64_MAX
        else None,
        "agrees": None if printed is None or answer is None else printed == answer,
        "n_code_calls": len(res),
        "n_code_errors": len(bad),
        "n_code_timeouts": sum(r.status == TIMEOUT for r in res),
        "exec_s": sum(r.wall_s for r in res),
    }


@dataclass
class BlockResult:
    """A code block's result as the TIR run recorded it: its output is stdout and traceback
    in one text, which counts as stdout only where the block ran OK."""

    status: str
    stdout: str
    error: str | None
    wall_s: float


def executions_from_blocks(traces) -> list[dict]:
    """EXECUTIONS rows from the blocks the TIR run already ran (no re-run): what the online
    run votes with, where there is no time for the execute stage."""
    rows = []
    for t in traces:
        res = [
            BlockResult(
                b["status"], b["output"], b["output"] if b["status"] != OK else None, b["wall_s"]
            )
            for b in (t["code_blocks"] or [])
        ]
        rows.append(execution_row(t, res))
    return rows
