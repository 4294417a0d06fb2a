"""The evaluation's at-k curves: each strategy's own query (aimo/strategies.py) run over random
k-subsets of every problem's samples, so that strategy@k is the submission's vote on k samples
and, at k = N, exactly the full vote. No strategy is written a second time here.

The subsets are drawn from the rows that can vote (subset_pool.sql): counted generate rows of
the problems with a known answer. Per problem, `n_subsets` random permutations of its rows are
drawn; the first k rows of a permutation are its k-subset for every k at once (each a uniformly
random k-subset; a problem with fewer than k rows votes with all of them). Each (subset, k,
problem) becomes one group: a "problem" of its own, whose problem_id is a number, so the
strategy's SQL and rank.sql run unchanged over the groups, in a DuckDB connection of their own
where `candidates` is the groups' rows and `problems` the groups. Subsets go in chunks that keep
the group rows within a budget. This module must not vote any other way.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from aimo.strategies import load_sql, strategy_sql

__all__ = ["subset_curves"]

ROW_BUDGET = 1 << 22  # group rows (a subset's row once per k that holds it) per chunk


def subset_curves(cands, strategies, ks, n_problems, n_subsets=200, seed=0, budget=ROW_BUDGET):
    """At-k accuracy of each strategy: the mean over `n_subsets` random k-subsets per problem and
    over the `n_problems` problems with a known answer (a problem with no row that can vote
    counts as wrong). `cands`: an open, materialised aimo.vote.Candidates (its settings are the
    strategies' parameters); `ks`: the k-points, ascending. Returns {strategy: array over ks}.
    """
    ks = np.asarray(ks, dtype=np.int64)
    hits = {s: np.zeros(len(ks)) for s in strategies}
    pool = cands.con.sql(load_sql("subset_pool")).to_arrow_table()
    if pool.num_rows == 0 or len(ks) == 0 or n_problems == 0:
        return hits
    pidx = pool.column("pidx").to_numpy().astype(np.int64)
    truth = pool.column("truth").to_numpy().astype(np.int64)
    n_p = np.bincount(pidx)
    first = np.concatenate([[0], np.cumsum(n_p)[:-1]])  # each problem's first pool row
    # a subset's group rows: each problem's k rows at every k < n
    per_subset = int(np.where(ks[None, :] < n_p[:, None], ks[None, :], 0).sum())
    chunk = max(1, budget // max(per_subset, 1))
    rng = np.random.default_rng(seed)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        con.register("pool", pool)
        queries = {s: _query(s) for s in strategies}
        for lo in range(0, n_subsets, chunk):
            size = min(chunk, n_subsets - lo)
            members, groups = _groups(rng, lo, size, n_subsets, pidx, first, truth, ks)
            con.register("members", members)
            con.register("problems", groups)
            con.execute(
                "CREATE OR REPLACE TEMP VIEW candidates AS SELECT m.problem_id, "
                "p.* EXCLUDE (pool_row, pidx, truth) FROM members AS m "
                "JOIN pool AS p ON p.pool_row = m.pool_row"
            )
            for s, sql in queries.items():
                params = {**cands.sql_params(sql), "strategy": s}
                for gi, n in con.execute(sql, params).fetchall():
                    hits[s][gi] += n
    finally:
        con.close()
    return {s: h / (n_subsets * n_problems) for s, h in hits.items()}


def _query(strategy: str) -> str:
    """The strategy's query, ranked (rank.sql) and scored per k-point (subset_hits.sql)."""
    return (
        f"WITH tallies AS (\n{strategy_sql(strategy)}\n),\nvotes AS (\n{load_sql('rank')}\n)\n"
        + load_sql("subset_hits")
    )


def _groups(rng, lo, size, n_subsets, pidx, first, truth, ks):
    """Subsets lo..lo+size-1 per problem: the members (problem_id = the group's number,
    pool_row) and the groups (problem_id, gi, answer, weight). Group (s, gi, p) is number
    (s * G + gi) * P + p. At k >= n every subset is all n rows: subset 0 alone holds that
    group, with the weight of all `n_subsets` (the others, weight 0, have no rows)."""
    n, G, P = len(pidx), len(ks), int(pidx.max()) + 1
    # a random permutation of each problem's rows: sort random keys within the problem
    order = np.argsort(rng.random((size, n)) + pidx[None, :], axis=1)
    place = np.empty((size, n), dtype=np.int64)
    place[np.arange(size)[:, None], order] = np.arange(n)[None, :] - first[pidx[order]]
    # a row at place j is in the k-subsets with k > j: k-points bucket..G-1
    bucket = np.searchsorted(ks, place, side="right").ravel()
    n_p = np.bincount(pidx, minlength=P)
    whole = np.searchsorted(ks, n_p, side="left")  # a problem's first k-point with k >= n
    last = np.tile(whole[pidx], size)  # the k-points from here on are its whole-pool groups
    if lo == 0:
        last[:n] = G  # subset 0 holds them
    reps = np.maximum(last - bucket, 0)
    sub = np.repeat(np.repeat(np.arange(size), n), reps)
    row = np.repeat(np.tile(np.arange(n), size), reps)
    gi = np.repeat(bucket, reps) + np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    members = pa.table({"problem_id": (sub * G + gi) * P + pidx[row], "pool_row": row})
    answer = np.zeros(P, dtype=np.int64)
    answer[pidx] = truth
    number = np.arange(size * G * P)
    g_gi, g_p = (number // P) % G, number % P
    weight = np.where(ks[g_gi] < n_p[g_p], 1, np.where((number < G * P) & (lo == 0), n_subsets, 0))
    groups = pa.table({"problem_id": number, "gi": g_gi, "answer": answer[g_p], "weight": weight})
    return members, groups
