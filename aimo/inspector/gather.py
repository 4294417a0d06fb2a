"""One run, read for the inspector: its problems, traces, executions and every strategy's vote
(the vote's own SQL), gathered into plain per-problem views that the pages show. Reads files
and runs queries; writes nothing and renders nothing.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aimo.answers import in_range
from aimo.inspector import flags as fl
from aimo.inspector import stats
from aimo.schemas import EXECUTIONS, PROBLEMS, TRACES
from aimo.strategies import NAMES, load_sql
from aimo.tables import read_metadata, read_table
from aimo.vote import SOURCES, Candidates, VoteSettings

__all__ = ["Run", "locate", "gather", "read_submission", "WEIGHTS"]

# the weight columns of candidates.sql a trace card shows (w_<name>; inspect_traces.sql)
WEIGHTS = (
    "majority",
    "weighted",
    "logprob",
    "entropy",
    "tail_entropy",
    "conf",
    "min_conf",
    "tail_conf",
)

# a trace the vote's query did not return (none should be): it does not vote
_NO_WEIGHTS = {
    "counted": False,
    "can_vote": False,
    "valid": False,
    **{f"w_{w}": None for w in WEIGHTS},
}


@dataclass(frozen=True)
class Run:
    """One run's files: `problems` (PROBLEMS), trace and execution shards, the vote's settings,
    the submission's answers when there is a submission file ({problem_id: answer}; else the
    vote's pick, or `fallback` where it has none) and a `name` for the pages."""

    name: str
    problems: str
    traces: list
    executions: list
    settings: VoteSettings = field(default_factory=VoteSettings)
    submitted: dict | None = None
    fallback: int = 0


def read_submission(path) -> dict | None:
    """{id: answer} of a submission file (id,answer); None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return {r["id"]: int(r["answer"]) for r in csv.DictReader(f)}


def locate(folder, name=None, settings=None, fallback=0) -> Run:
    """The Run in `folder`: the workflow's results folder (problems.parquet, <stage>/shard-*,
    execute/<stage>/shard-*, vote/votes.parquet, submission.csv) or an online run folder
    (problems.parquet, traces/*, executions/*, evaluate/votes.parquet once evaluated). The
    vote's settings: `settings`, else those recorded in the votes file, else the defaults."""
    folder = Path(folder)
    if not (folder / "problems.parquet").is_file():
        raise ValueError(f"{folder}: no problems.parquet; not a results or online run folder")
    if (folder / "traces").is_dir():
        traces = sorted(map(str, (folder / "traces").glob("*.parquet")))
        execs = sorted(map(str, (folder / "executions").glob("*.parquet")))
        votes = folder / "evaluate" / "votes.parquet"
    else:
        traces = [str(p) for s in SOURCES for p in sorted((folder / s).glob("shard-*.parquet"))]
        execs = [
            str(p)
            for s in SOURCES
            for p in sorted((folder / "execute" / s).glob("shard-*.parquet"))
        ]
        votes = folder / "vote" / "votes.parquet"
    if not traces:
        raise ValueError(f"{folder}: no trace shards found")
    if settings is None and votes.is_file():
        settings = read_metadata(votes).get("settings")
    return Run(
        name=name or str(folder),
        problems=str(folder / "problems.parquet"),
        traces=traces,
        executions=execs,
        settings=VoteSettings.of(settings),
        submitted=read_submission(folder / "submission.csv"),
        fallback=int(fallback),
    )


def _rows(paths, schema) -> list:
    return [r for p in paths for r in read_table(p, schema).to_pylist()]


def gather(run: Run) -> dict:
    """Everything the pages of `run` show: {"name", "settings", "strategies", "problems"
    (one view per problem, in the problems file's order), "stats"}."""
    problems = read_table(run.problems, PROBLEMS).to_pylist()
    traces = _rows(run.traces, TRACES)
    execs = {r["trace_id"]: r for r in _rows(run.executions, EXECUTIONS)}
    with Candidates(run.problems, run.traces, run.executions, run.settings, strategies=NAMES) as c:
        weights = {r["trace_id"]: r for r in c.arrow(load_sql("inspect_traces")).to_pylist()}
        votes = {s: {r["problem_id"]: r for r in c.votes(s).to_pylist()} for s in NAMES}
    by_problem = defaultdict(list)
    for t in traces:
        by_problem[t["problem_id"]].append(t)
    views = [_problem(run, p, by_problem[p["problem_id"]], execs, weights, votes) for p in problems]
    return {
        "name": run.name,
        "settings": run.settings,
        "strategies": NAMES,
        "problems": views,
        "stats": _stats(views, votes),
    }


def _order(t):
    return (t["sample"], SOURCES.index(t["source"]) if t["source"] in SOURCES else 9, t["trace_id"])


def _cards(traces, execs, weights, correct) -> list:
    """The problem's traces as its page shows them, in sample order (a repair or critique after
    the trace it follows), each with its execution, weights, flags and links."""
    traces = sorted(traces, key=_order)
    anchors = {t["trace_id"]: f"t{i}" for i, t in enumerate(traces, 1)}
    children = defaultdict(list)
    for t in traces:
        if t["parent_id"]:
            children[t["parent_id"]].append(t["trace_id"])
    cards = []
    for t in traces:
        ex = execs.get(t["trace_id"])
        cards.append(
            {
                **t,
                "anchor": anchors[t["trace_id"]],
                "execution": ex,
                "weights": weights.get(t["trace_id"]) or _NO_WEIGHTS,
                "flags": fl.trace_flags(t, ex, correct),
                "right": None if correct is None else t["answer_int"] == correct,
                "parent": (t["parent_id"], anchors.get(t["parent_id"])) if t["parent_id"] else None,
                "children": [(c, anchors[c]) for c in children[t["trace_id"]]],
            }
        )
    return cards


def _problem(run, p, traces, execs, weights, votes) -> dict:
    pid, correct = p["problem_id"], p["answer"]
    cards = _cards(traces, execs, weights, correct)
    counted = [t for t in cards if t["weights"].get("counted")]
    strategy = run.settings.strategy
    pick = votes[strategy][pid]["answer"]
    if run.submitted is not None and pid in run.submitted:
        submitted = run.submitted[pid]
    else:
        submitted = pick if in_range(pick) else run.fallback
    dist = Counter(t["answer_int"] for t in counted if t["weights"].get("valid"))
    by_source = Counter(
        (t["answer_int"], t["source"]) for t in counted if t["weights"].get("valid")
    )
    picks = defaultdict(list)
    for s in NAMES:
        picks[votes[s][pid]["answer"]].append(s)
    problem_flags = fl.problem_flags(pick, [t["answer_int"] for t in counted])
    tags = {f"{t['source']}:{name}" for t in cards for name in t["flags"]}
    tags |= {f"problem:{name}" for name in problem_flags}
    pool = [t for t in cards if t["source"] == "generate" and t["weights"].get("can_vote")]
    return {
        "id": pid,
        "problem": p["problem"],
        "answer": correct,
        "strategy": strategy,
        "pick": pick,
        "submitted": submitted,
        "fallback": not in_range(pick),
        "right": None if correct is None else submitted == correct,
        "votes": [
            {
                **votes[s][pid],
                **stats.tie(votes[s][pid]),
                "strategy": s,
                "right": None if correct is None else votes[s][pid]["answer"] == correct,
            }
            for s in NAMES
        ],
        "distribution": [
            {
                "answer": a,
                "n": n,
                "by_source": {s: by_source[(a, s)] for s in SOURCES if by_source[(a, s)]},
                "picks": picks.get(a, []),
                "right": None if correct is None else a == correct,
            }
            for a, n in sorted(dist.items(), key=lambda x: (-x[1], x[0]))
        ],
        "traces": cards,
        "sources": dict(Counter(t["source"] for t in cards)),
        "tokens": sum(t["completion_tokens"] or 0 for t in cards),
        "flags": problem_flags,
        "flag_counts": Counter([name for t in cards for name in t["flags"]] + list(problem_flags)),
        "tags": sorted(tags),
        "pool": (len(pool), sum(t["right"] is True for t in pool)),
    }


def _stats(views, votes) -> dict:
    known = [v for v in views if v["answer"] is not None]
    cards = [t for v in views for t in v["traces"]]
    flag_counts = Counter()
    for v in views:
        flag_counts.update({name: 1 for name in v["flag_counts"]})
    return {
        "problems": len(views),
        "known": len(known),
        "traces": len(cards),
        "by_source": dict(Counter(t["source"] for t in cards)),
        "accuracy": stats.rate(sum(v["right"] is True for v in known), len(known)),
        "fallbacks": sum(v["fallback"] for v in views),
        "pass_at_1": stats.pass_at_1([v["pool"] for v in known]),
        "no_answer": stats.rate(sum("no_answer" in t["flags"] for t in cards), len(cards)),
        "no_valid": stats.rate(sum(not t["weights"].get("valid") for t in cards), len(cards)),
        "ties": {s: stats.tie_counts(rows.values()) for s, rows in votes.items()},
        "flag_traces": Counter(name for t in cards for name in t["flags"]),
        "flag_problems": flag_counts,
        "tokens": sum(v["tokens"] for v in views),
    }
