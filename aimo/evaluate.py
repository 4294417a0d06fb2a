"""Evaluation against known answers: accuracy per strategy, selection loss, maj@k curves,
pass@k, tokens.

Reads the same inputs as the vote (problems, trace shards, execution shards) and writes, to the
rule's output paths (by default the usual names in `out_dir`), atomically:

* `metrics.parquet` (schemas.METRICS): the at-k curve of every strategy over random subsets of
  the generate samples that can vote (curve "subset", aimo.subsets: the strategy's own query, so
  at k = N it is the full vote), pass@k with the unbiased estimator over the same rows (curve
  "pass", strategy "pass@k"), and each strategy's accuracy with every candidate, reflexion and
  critique rows included (curve "full", k = N, with its bootstrap interval; strategy "pass@k"
  there: some candidate that can vote is right, the best any vote could do);
* `per_problem.parquet` (correct answer, answer distribution, voted answer per strategy, rank of
  the correct answer under the submission's strategy, vote.strategy, ...);
* `report.md`, `maj_at_k.png`, `accuracy_vs_tokens.png`, `selection.png` (aimo.report).

Every strategy is voted side by side, with the same total tie order (rank.sql). "Can vote" is
the vote's own row rule (candidates.sql's `counted`: no cancelled row unless
vote.count_cancelled, never a pruned one). pass@k and the bootstrap are in aimo.curves (numpy
only); this module gathers the numbers with DuckDB and writes them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aimo import curves as est
from aimo.report import Results, plots, report
from aimo.schemas import METRICS, per_problem_schema
from aimo.strategies import NAMES, check, load_sql
from aimo.subsets import subset_curves
from aimo.tables import write_table, write_text
from aimo.vote import Candidates, VoteSettings

__all__ = ["evaluate", "OUTPUTS", "PER_PROBLEM", "VOTE_KEYS"]

PER_PROBLEM = per_problem_schema(NAMES)
# the files written, by the evaluate rule's output names
OUTPUTS = {
    "metrics": "metrics.parquet",
    "per_problem": "per_problem.parquet",
    "report": "report.md",
    "maj_at_k": "maj_at_k.png",
    "tokens": "accuracy_vs_tokens.png",
    "selection": "selection.png",
}
# the config's vote keys the evaluation reads (the evaluate rule's params): every setting, since
# every strategy's vote depends on them, strategy included (correct_rank ranks by it)
VOTE_KEYS = tuple(f.name for f in dataclasses.fields(VoteSettings))
BASELINE = "majority"  # what the paired moves and differences are against
RESAMPLES = 2000


def evaluate(
    problems_path,
    trace_paths,
    execution_paths,
    out_dir=None,
    ks=None,
    n_subsets=200,
    seed=0,
    settings=None,
    strategies=None,
    outputs=None,
) -> dict:
    """Evaluate every strategy against the known answers and write the outputs.

    `settings`: a VoteSettings or a config's `vote` section; `outputs`: {name: path} for the
    OUTPUTS names (the rule's), else they go into `out_dir`. Returns {"metrics": table,
    "per_problem": table, "report": markdown text}. Problems with an unknown answer
    (PROBLEMS.answer null) are left out of every accuracy; when no answer is known the files
    are still written, with a note instead of numbers.
    """
    strategies = check(NAMES if strategies is None else strategies)
    settings = VoteSettings.of(settings)
    try:
        n_subsets = int(n_subsets)
    except (TypeError, ValueError):
        n_subsets = 0
    if n_subsets < 1:
        raise ValueError(f"n_subsets: expected a positive integer, got {n_subsets!r}")
    ks = sorted({int(k) for k in (ks or [])})
    if any(k < 1 for k in ks):
        raise ValueError(f"ks={ks}: every k must be a positive integer")
    if outputs is None:
        if out_dir is None:
            raise ValueError("evaluate: give out_dir or outputs")
        outputs = {name: Path(out_dir) / file for name, file in OUTPUTS.items()}
    paths = {name: Path(outputs[name]) for name in OUTPUTS}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)

    g = _gather(
        problems_path, trace_paths, execution_paths, settings, strategies, ks, n_subsets, seed
    )
    s = _score(g, strategies, seed)
    note = "" if s["n_known"] else "no problem has a known answer: nothing to score"
    metrics = write_table(
        s["metrics"],
        paths["metrics"],
        METRICS,
        metadata={
            "n_subsets": n_subsets,
            "seed": seed,
            "weights": g["params"],
            "ks": ks,
            "note": note,
            "strategies": strategies,
            "settings": settings.as_dict(),
        },
    )
    schema = per_problem_schema(strategies)
    per_problem = write_table(
        pa.table(_per_problem(g, s, strategies), schema=schema),
        paths["per_problem"],
        schema,
        metadata={"note": note},
    )
    shown = Results(
        strategies=strategies,
        curves=s["curves"],
        grid=s["grid"],
        ks=ks,
        N=s["N"],
        hit=s["hit"],
        n_problems=len(g["pids"]),
        n_known=s["n_known"],
        by_source=g["by_source"],
        n_subsets=n_subsets,
        params=g["params"],
        tok_k=s["tok_k"],
        full_tokens=s["full_tokens"],
        selection=s["selection"],
    )
    text = report(shown)
    write_text(text, paths["report"])
    plots(paths, shown)
    return {"metrics": metrics, "per_problem": per_problem, "report": text}


def _gather(problems_path, trace_paths, execution_paths, settings, strategies, ks, n_subsets, seed):
    """Everything the evaluation reads, from one DuckDB pass over the candidates, the at-k
    curves included (they run the strategies' queries)."""
    voted = list(dict.fromkeys([*strategies, settings.strategy]))  # correct_rank's too
    with Candidates(
        problems_path,
        trace_paths,
        execution_paths,
        settings,
        extra_trace_columns=("sample", "completion_tokens"),
        strategies=voted,
        materialise=True,
    ) as cands:
        con = cands.con
        problems = cands.problems
        g = {
            "params": cands.params,
            "problems": problems,
            "pids": problems.column("problem_id"),
            "votes": {s: cands.votes(s) for s in strategies},
            "tallies": cands.tallies(settings.strategy),
            "stats": con.sql(load_sql("eval_problems")).to_arrow_table(),
            "dist": con.sql(
                "SELECT problem_id, answer_int, count(*) AS n FROM candidates "
                "WHERE valid GROUP BY ALL"
            ).to_arrow_table(),
            "by_source": con.sql(
                "SELECT source, count(*), coalesce(sum(completion_tokens), 0) "
                "FROM candidates GROUP BY source"
            ).fetchall(),
        }
        known = pc.is_valid(problems.column("answer")).to_numpy(zero_copy_only=False)
        n_pool = np.array(_by_problem(g["stats"], g["pids"], "n_pool"), dtype=np.int64)
        # N: the most generate rows that can vote in a problem with a known answer
        g["N"] = int(n_pool[known].max(initial=0)) if known.any() else int(n_pool.max(initial=0))
        g["grid"] = est.k_grid(g["N"], ks)
        g["curves"] = {}
        if known.any() and len(g["grid"]):
            g["curves"] = subset_curves(
                cands, strategies, g["grid"], int(known.sum()), n_subsets, seed
            )
    return g


def _score(g, strategies, seed) -> dict:
    """Accuracy per strategy (full and at k), pass@k, the selection loss and its spread."""
    pids, problems = g["pids"], g["problems"]
    known = pc.is_valid(problems.column("answer")).to_numpy(zero_copy_only=False)
    correct_int = (
        pc.fill_null(problems.column("answer"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    )
    n_known = int(known.sum())
    st = {c: _by_problem(g["stats"], pids, c) for c in g["stats"].column_names if c != "problem_id"}
    n_pool = np.array(st["n_pool"], dtype=np.int64)
    c_pool = np.array(st["n_correct_pool"], dtype=np.int64)
    gen_tokens = np.array(st["generate_tokens"], dtype=np.float64)
    all_tokens = np.array(st["completion_tokens"], dtype=np.float64)
    voted = {s: _by_problem(g["votes"][s], pids, "answer", None) for s in strategies}
    hit = {
        s: np.array(
            [k and v is not None and v == int(c) for v, c, k in zip(voted[s], correct_int, known)],
            dtype=bool,
        )
        for s in strategies
    }  # a loop over problems, not rows

    known_idx = np.flatnonzero(known)
    N, grid = g["N"], g["grid"]
    curves, rows = dict(g["curves"]), []
    tok_k = np.zeros(len(grid))
    full_tokens = float(all_tokens[known_idx].sum())
    if n_known and len(grid):
        curves["pass@k"] = est.pass_at_k_mean(n_pool[known_idx], c_pool[known_idx], grid)
        # expected completion tokens of k-subsets: a problem spends min(k, n)/n of its total
        n_k = n_pool[known_idx][:, None]
        tok_k = (
            np.minimum(grid[None, :], n_k) / np.maximum(n_k, 1) * gen_tokens[known_idx][:, None]
        ).sum(axis=0)
        for s, acc in curves.items():
            for k, a, t in zip(grid, acc, tok_k):
                rows.append(
                    {
                        "strategy": s,
                        "k": int(k),
                        "accuracy": float(a),
                        "curve": "pass" if s == "pass@k" else "subset",
                        "tokens": float(t),
                        "n_problems": n_known,
                    }
                )
    selection = None
    if n_known:
        # the oracle: some row that can vote is right (the vote's row rule, as pass@k's)
        some_right = np.array([(c or 0) > 0 for c in st["n_correct_counted"]], dtype=bool) & known
        kh = {s: hit[s][known_idx] for s in strategies}
        base = BASELINE if BASELINE in hit else strategies[0]
        spread = est.bootstrap(
            {**kh, "pass@k": some_right[known_idx]}, base, n=RESAMPLES, seed=seed
        )
        selection = {
            "oracle": float(some_right.sum() / n_known),
            "n_oracle": int(some_right.sum()),
            "spread": spread,
            "baseline": base,
            "resamples": RESAMPLES,
            "paired": {
                s: (int((hit[s] & ~hit[base]).sum()), int((~hit[s] & hit[base] & known).sum()))
                for s in strategies
            },
        }
        for s in list(strategies) + ["pass@k"]:
            acc = selection["oracle"] if s == "pass@k" else float(hit[s].sum() / n_known)
            rows.append(
                {
                    "strategy": s,
                    "k": N,
                    "accuracy": acc,
                    "curve": "full",
                    "tokens": full_tokens,
                    "n_problems": n_known,
                    "lo": spread[s]["lo"],
                    "hi": spread[s]["hi"],
                }
            )
    return {
        "curves": curves,
        "grid": grid,
        "tok_k": tok_k,
        "full_tokens": full_tokens,
        "metrics": rows,
        "hit": hit,
        "voted": voted,
        "known": known,
        "n_known": n_known,
        "N": N,
        "st": st,
        "correct_int": correct_int,
        "selection": selection,
    }


def _per_problem(g, s, strategies) -> dict:
    pids, known = g["pids"], s["known"]
    rank = _correct_rank(g["tallies"], pids, s["correct_int"], known)
    st = s["st"]
    pp = {
        "problem_id": pids.to_pylist(),
        "answer": g["problems"].column("answer").to_pylist(),
        "n_traces": st["n_traces"],
        "n_generate": st["n_generate"],
        "n_valid": st["n_valid"],
        "n_correct": st["n_correct"],
        "distribution": _distribution(g["dist"], pids),
        "correct_rank": [int(r) if r > 0 else None for r in rank],
        "completion_tokens": st["completion_tokens"],
    }
    for name in strategies:
        pp[f"voted_{name}"] = s["voted"][name]
        pp[f"correct_{name}"] = [bool(h) if k else None for h, k in zip(s["hit"][name], known)]
    return pp


def _by_problem(table, pids, column, fill=0):
    """`column` of a per-problem table, in the problems file's order."""
    where = pc.index_in(pids, value_set=table.column("problem_id")).to_numpy(zero_copy_only=False)
    vals = table.column(column).to_pylist()
    return [vals[int(w)] if w == w and w is not None else fill for w in where]


def _distribution(dist: pa.Table, pids, top=10) -> list:
    """Per problem: "answer:count, ..." of its valid answers (every source), most frequent
    first (then the smaller answer), the top 10 and a count of the rest."""
    P = len(pids)
    out = [""] * P
    if dist.num_rows == 0:
        return out
    dp = pc.index_in(dist.column("problem_id"), value_set=pids).to_numpy(zero_copy_only=False)
    da = dist.column("answer_int").to_numpy(zero_copy_only=False)
    dn = dist.column("n").to_numpy(zero_copy_only=False)
    o = np.lexsort((da, -dn, dp))
    dp, da, dn = dp[o], da[o], dn[o]
    bounds = np.searchsorted(dp, np.arange(P + 1))
    for p in range(P):  # a loop over problems (the tallies are aggregated), not rows
        a, b = bounds[p], bounds[p + 1]
        if a == b:
            continue
        parts = [f"{x}:{c}" for x, c in zip(da[a : min(b, a + top)], dn[a : min(b, a + top)])]
        if b - a > top:
            parts.append(f"... (+{b - a - top} more)")
        out[p] = ", ".join(parts)
    return out


def _correct_rank(tallies, pids, correct_int, known) -> np.ndarray:
    """Rank (1 = winner) of the correct answer in the order of `tallies` (the submission's
    strategy, rank.sql's order); -1 if absent."""
    P = len(pids)
    out = np.full(P, -1, dtype=np.int64)
    if tallies.num_rows == 0:
        return out
    score = pc.fill_null(tallies.column("score"), 0).to_numpy(zero_copy_only=False)
    keep = pc.is_valid(tallies.column("answer")).to_numpy(zero_copy_only=False) & (score > 0)
    t = tallies.filter(pa.array(keep))
    if t.num_rows == 0:
        return out
    tp = pc.index_in(t.column("problem_id"), value_set=pids).to_numpy(zero_copy_only=False)
    ta = t.column("answer").to_numpy(zero_copy_only=False)
    ts = t.column("score").to_numpy(zero_copy_only=False)
    tv = t.column("votes").to_numpy(zero_copy_only=False)
    o = np.lexsort((ta, -tv, -ts, tp))
    tp, ta = tp[o].astype(np.int64), ta[o]
    starts = np.searchsorted(tp, np.arange(P))
    place = np.arange(len(tp)) - starts[tp] + 1
    hit = known[tp] & (ta == correct_int[tp])
    out[tp[hit]] = place[hit]
    return out
