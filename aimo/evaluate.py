"""Evaluation against known answers: accuracy per strategy, maj@k curves, pass@k, tokens.

Reads the same inputs as the vote (problems, trace shards, execution shards) and writes, into
`out_dir`, atomically:

* `metrics.parquet`     (strategy, k, accuracy, curve, tokens, n_problems): the at-k curve of every
  strategy over random subsets of the generate samples (curve "subset"), pass@k with the
  unbiased estimator (curve "pass", strategy "pass@k"), and each strategy's accuracy with every
  candidate, reflexion and critique rows included (curve "full", k = N);
* `per_problem.parquet` (correct answer, answer distribution, voted answer per strategy, rank of
  the correct answer under the weighted vote, ...);
* `report.md`, `maj_at_k.png`, `accuracy_vs_tokens.png`.

The subset curves use only `generate` rows: reflexion and critique rows are follow-ups of
particular samples, so a random k-subset of them has no meaning. For k from 1 to N (every k when
N <= ALL_K_MAX, else a grid: see `k_grid`), `n_subsets` random subsets of size k are drawn per
problem, as nested prefixes of random permutations (each prefix is a uniformly random k-subset),
and each strategy votes in each subset; accuracy is the mean over subsets and problems. Numpy
does this for all problems and k at once (bincount over (answer, k-bucket) cells and a cumulative
sum over k), so 10 million rows take no Python loop over rows.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tables import atomic_path, write_table, write_text
from .vote import STRATEGIES, Candidates, _check_strategies, load_sql

__all__ = ["evaluate", "pass_at_k", "pass_at_k_mean", "k_grid", "subset_curves",
           "number_answers_and_classes", "METRICS",
           "PER_PROBLEM"]

ALL_K_MAX = 256  # every k from 1 to N up to this N; a grid above
GRID_POINTS = 32  # geometric points above the dense head of the grid
DENSE_HEAD = 16
_CELL_BUDGET = 1 << 22  # (answers x k-points) and (problems x samples) cells per numpy chunk

METRICS = pa.schema([
    pa.field("strategy", pa.string(), nullable=False),  # a vote strategy, or "pass@k"
    pa.field("k", pa.int64(), nullable=False),
    pa.field("accuracy", pa.float64()),
    pa.field("curve", pa.string(), nullable=False),  # subset | pass | full
    pa.field("tokens", pa.float64()),  # completion tokens spent (expected, for subsets)
    pa.field("n_problems", pa.int64()),
])


def _per_problem_schema(strategies):
    fields = [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("answer", pa.int64()),  # the correct answer (null when unknown)
        pa.field("n_traces", pa.int64()),
        pa.field("n_generate", pa.int64()),
        pa.field("n_valid", pa.int64()),  # candidates with an answer in [0, 99999]
        pa.field("n_correct", pa.int64()),  # candidates whose answer is the correct one
        pa.field("distribution", pa.string()),  # "answer:count, ..." by count, top 10
        pa.field("correct_rank", pa.int64()),  # 1 = the weighted vote's winner; null if absent
        pa.field("completion_tokens", pa.int64()),
    ]
    for s in strategies:
        fields.append(pa.field(f"voted_{s}", pa.int64()))
        fields.append(pa.field(f"correct_{s}", pa.bool_()))
    return pa.schema(fields)


PER_PROBLEM = _per_problem_schema(STRATEGIES)


# ---------------------------------------------------------------------------------------------
# estimators

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: 1 - C(n-c, k) / C(n, k) (k capped at n; 0 when n = 0)."""
    if n <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_mean(n, c, ks) -> np.ndarray:
    """Mean over problems of `pass_at_k(n[i], c[i], k)` for every k in `ks`, vectorised.

    C(n-c, k)/C(n, k) = prod_{i<k} (n-c-i)/(n-i), accumulated in logs over i; k is capped at
    each problem's n, and a problem with n = 0 scores 0.
    """
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    out = np.zeros(len(ks))
    if len(n) == 0:
        return out
    kmax = int(min(ks.max(initial=0), n.max(initial=0)))
    # chunk problems so the (problems x kmax) matrix stays small
    step = max(1, _CELL_BUDGET // max(kmax, 1))
    for lo in range(0, len(n), step):
        nn, cc = n[lo:lo + step], c[lo:lo + step]
        i = np.arange(kmax)
        num = (nn - cc)[:, None] - i[None, :]
        den = nn[:, None] - i[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(num > 0, np.log(np.maximum(num, 1)) - np.log(np.maximum(den, 1)),
                             -np.inf)
        logratio = np.cumsum(terms, axis=1) if kmax else np.zeros((len(nn), 0))
        for gi, k in enumerate(ks):
            kk = np.minimum(k, nn)  # capped per problem
            col = np.clip(kk - 1, 0, max(kmax - 1, 0))
            ratio = np.exp(logratio[np.arange(len(nn)), col]) if kmax else np.ones(len(nn))
            val = np.where(nn > 0, 1.0 - ratio, 0.0)
            val = np.where((nn > 0) & (nn - cc < kk), 1.0, val)
            out[gi] += val.sum()
    return out / len(n)


def k_grid(n_max: int, ks=None) -> np.ndarray:
    """The k values of the subset curves: every k in 1..n_max when n_max <= ALL_K_MAX, else
    1..DENSE_HEAD and GRID_POINTS geometric steps to n_max; always with `ks` (those <= n_max)
    and n_max."""
    if n_max <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_max <= ALL_K_MAX:
        grid = set(range(1, n_max + 1))
    else:
        grid = set(range(1, DENSE_HEAD + 1))
        grid |= {int(round(x)) for x in np.geomspace(DENSE_HEAD, n_max, GRID_POINTS)}
    grid |= {int(k) for k in (ks or []) if 1 <= int(k) <= n_max}
    grid.add(n_max)
    return np.array(sorted(grid), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# subset curves

def _segments_any(flags: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per segment (rows starts[i]..starts[i+1]-1 of `flags`, a 2-D bool array): any()."""
    if len(starts) == 0:
        return np.zeros((0, flags.shape[1]), dtype=bool)
    return np.add.reduceat(flags.astype(np.int32), starts, axis=0) > 0


def _winners_correct(score, votes, code_answer, seg_starts, correct_code):
    """For each problem (segment of codes) and k-point: does the correct answer win?

    `score`, `votes`: (codes x G) tallies; a problem's codes are one segment starting at
    `seg_starts[i]`; `correct_code[i]`: the row of the correct answer's code, or -1. The correct
    answer wins when its score is positive and no other answer beats it in the total order
    (higher score, then more votes, then the smaller answer).
    """
    n_seg = len(seg_starts)
    G = score.shape[1]
    has = correct_code >= 0
    if not has.any():
        return np.zeros((n_seg, G), dtype=bool)
    seg_of_code = np.repeat(np.arange(n_seg), np.diff(np.append(seg_starts, len(score))))
    cc = np.where(has, correct_code, 0)
    sc, vc = score[cc], votes[cc]
    s_c, v_c = sc[seg_of_code], vc[seg_of_code]
    a_c = code_answer[cc][seg_of_code][:, None]
    beats = (score > 0) & ((score > s_c) | ((score == s_c) & (
        (votes > v_c) | ((votes == v_c) & (code_answer[:, None] < a_c)))))
    return has[:, None] & (sc > 0) & ~_segments_any(beats, seg_starts)


def number_answers_and_classes(rows: dict):
    """Number the answers and the weight classes of the sample rows (eval_rows.sql), vectorised.

    Returns (code, cls, classes, code_problem, code_answer): `code` numbers each (pidx, answer)
    with a positive weight in some strategy, in (pidx, answer) order (-1 for a sample with no
    weight anywhere); `cls` numbers the distinct (w_majority, w_weighted, verified,
    w_logprob > 0) and `classes` holds those values per class. Hash-based (pandas.factorize),
    so 10 million rows take a fraction of a second.
    """
    import pandas as pd

    pidx = np.asarray(rows["pidx"], dtype=np.int64)
    answer = np.asarray(rows["answer_int"], dtype=np.int64)
    w_maj = np.asarray(rows["w_majority"], dtype=np.float64)
    w_wt = np.asarray(rows["w_weighted"], dtype=np.float64)
    w_lp = np.asarray(rows["w_logprob"], dtype=np.float64)
    ver = np.asarray(rows["verified"], dtype=bool)
    n = len(pidx)
    live = (w_maj > 0) | (w_wt > 0) | (w_lp > 0)
    code = np.full(n, -1, dtype=np.int64)
    code_problem = code_answer = np.zeros(0, dtype=np.int64)
    if live.any():
        lp_, la = pidx[live], answer[live]
        amin, amax = int(la.min()), int(la.max())
        span = amax - amin + 1
        if int(lp_.max()) + 1 <= (2 ** 62) // span:  # one int64 key per (problem, answer)
            key = lp_ * span + (la - amin)
            inv, uniq = pd.factorize(key, sort=True)
            code[live] = inv
            code_problem, code_answer = uniq // span, uniq % span + amin
        else:  # answers too far apart for one key: sort both columns
            order = np.lexsort((la, lp_))
            sp, sa = lp_[order], la[order]
            new = np.ones(len(order), dtype=bool)
            new[1:] = (sp[1:] != sp[:-1]) | (sa[1:] != sa[:-1])
            inv = np.empty(len(order), dtype=np.int64)
            inv[order] = np.cumsum(new) - 1
            code[live] = inv
            code_problem, code_answer = sp[new], sa[new]
    f_maj, u_maj = pd.factorize(w_maj)
    f_wt, u_wt = pd.factorize(w_wt)
    key = ((f_maj.astype(np.int64) * max(len(u_wt), 1) + f_wt) * 2 + ver) * 2 + (w_lp > 0)
    cls, _ = pd.factorize(key)
    cls = cls.astype(np.int64)
    n_cls = int(cls.max(initial=-1)) + 1
    first = np.zeros(n_cls, dtype=np.int64)
    first[cls[::-1]] = np.arange(n)[::-1]  # the first row of each class
    classes = {"w_majority": w_maj[first], "w_weighted": w_wt[first], "verified": ver[first],
               "lp_pos": w_lp[first] > 0}
    return code, cls, classes, np.asarray(code_problem), np.asarray(code_answer)


def subset_curves(pidx, code, cls, w_logprob, classes, code_problem, code_answer, correct,
                  ks, strategies, n_subsets=200, seed=0, cell_budget=_CELL_BUDGET) -> dict:
    """At-k accuracy of each strategy, the mean over `n_subsets` random k-subsets per problem.

    Rows are samples, sorted by problem: `pidx` (0..P-1), `code` (the number of the sample's
    (problem, answer) among `code_problem`/`code_answer`, sorted by problem then answer; -1 for
    a sample with no weight: it still takes a place in a subset), `cls` (its weight class, a row
    of `classes` = {"w_majority", "w_weighted", "verified", "lp_pos"} arrays) and `w_logprob`.
    `correct[p]` is problem p's answer. Returns {strategy: accuracy array over `ks`}.

    Each subset is a uniformly random permutation of a problem's samples; its first k samples
    are the k-subset for every k in `ks` at once: a sample's k-bucket (the first k whose subset
    holds it) is found from its place, one bincount counts every (answer, bucket, class) cell,
    and a cumulative sum over buckets gives the tallies at every k. The permutation is a stable
    sort of 16-bit random keys (a radix sort, several times faster than a shuffle); ties keep
    the order of a random shuffle drawn once per problem, so every subset is a uniformly random
    one.
    """
    pidx = np.asarray(pidx, dtype=np.int64)
    P = len(correct)
    ks = np.asarray(ks, dtype=np.int64)
    G = len(ks)
    out = {s: np.zeros(G) for s in strategies}
    if P == 0 or G == 0 or len(pidx) == 0:
        return out
    code = np.asarray(code, dtype=np.int64)
    cls = np.asarray(cls, dtype=np.int64)
    w_logprob = np.asarray(w_logprob, dtype=np.float64)
    w_maj = np.asarray(classes["w_majority"], dtype=np.float64)
    w_wt = np.asarray(classes["w_weighted"], dtype=np.float64)
    ver = np.asarray(classes["verified"], dtype=bool)
    lp_pos = np.asarray(classes["lp_pos"], dtype=bool)
    C = len(w_maj)
    class_w = {  # per class: (score weight, counts as a vote)
        "majority": (w_maj, (w_maj > 0).astype(float)),
        "weighted": (w_wt, (w_wt > 0).astype(float)),
        "verified": (w_wt * ver, ((w_wt > 0) & ver).astype(float)),
    }
    code_problem = np.asarray(code_problem, dtype=np.int64)
    code_answer = np.asarray(code_answer, dtype=np.int64)
    correct = np.asarray(correct, dtype=np.int64)

    n_p = np.bincount(pidx, minlength=P)
    offsets = np.concatenate([[0], np.cumsum(n_p)[:-1]])
    j = np.arange(len(pidx)) - offsets[pidx]
    n_codes_p = np.bincount(code_problem, minlength=P)
    code_start = np.concatenate([[0], np.cumsum(n_codes_p)])
    n_max = int(n_p.max())
    bucket_of_place = np.searchsorted(ks, np.arange(n_max), side="right")
    btype = np.uint8 if G < 255 else np.uint16
    rng = np.random.default_rng(seed)
    correct_count = {s: np.zeros(G) for s in strategies}

    # chunks of consecutive problems that keep the (answers x G x classes) and the
    # (problems x samples) matrices within the budget
    chunks, lo = [], 0
    while lo < P:
        hi, width = lo + 1, int(n_p[lo])
        while hi < P:
            w2 = max(width, int(n_p[hi]))
            cells = (int(code_start[hi + 1] - code_start[lo]) + 1) * G * C
            if cells > cell_budget or (hi + 1 - lo) * w2 > cell_budget:
                break
            width, hi = w2, hi + 1
        chunks.append((lo, hi))
        lo = hi

    for lo, hi in chunks:
        Pc = hi - lo
        width = int(n_p[lo:hi].max(initial=0))
        if width == 0:
            continue
        r0, r1 = offsets[lo], offsets[lo] + int(n_p[lo:hi].sum())
        c0, c1 = int(code_start[lo]), int(code_start[hi])
        Mc = c1 - c0
        seg_starts = code_start[lo:hi] - c0
        seg_idx = np.flatnonzero(n_codes_p[lo:hi] > 0)
        starts = seg_starts[seg_idx]
        ca = code_answer[c0:c1]
        cp = code_problem[c0:c1]
        hit = np.flatnonzero(ca == correct[cp])
        correct_code = np.full(Pc, -1, dtype=np.int64)
        correct_code[cp[hit] - lo] = hit
        correct_code = correct_code[seg_idx]
        # lay the samples out in a (problems x width) matrix, each problem's row shuffled once
        rows_r = pidx[r0:r1] - lo
        sigma = rng.permuted(np.broadcast_to(np.arange(width), (Pc, width)), axis=1)
        cols = sigma[rows_r, j[r0:r1]]
        code_mat = np.full((Pc, width), Mc, dtype=np.int64)  # Mc: no answer / padding
        local = code[r0:r1]
        code_mat[rows_r, cols] = np.where(local >= 0, local - c0, Mc)
        cls_mat = np.zeros((Pc, width), dtype=np.int64)
        cls_mat[rows_r, cols] = cls[r0:r1]
        pad = np.ones((Pc, width), dtype=bool)
        pad[rows_r, cols] = False
        lp_mat = None
        if "logprob" in strategies:
            lp_mat = np.zeros((Pc, width))
            lp_mat[rows_r, cols] = np.where(local >= 0, w_logprob[r0:r1], 0.0)
        base_cell = code_mat * (G * C) + cls_mat  # + bucket * C per subset
        lbase = code_mat * G if lp_mat is not None else None
        del code_mat, cls_mat
        place_bucket = np.broadcast_to(bucket_of_place[:width].astype(btype), (Pc, width))
        n_bins = (Mc + 1) * G * C
        padded = bool(pad.any())
        seg_of_code = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, Mc)))
        bucket = np.empty((Pc, width), dtype=btype)
        for _ in range(n_subsets):
            keys = rng.integers(0, 65535, (Pc, width), dtype=np.uint16)  # 0..65534
            if padded:
                keys[pad] = 65535  # padding sorts last
            order = np.argsort(keys, axis=1, kind="stable")
            np.put_along_axis(bucket, order, place_bucket, axis=1)
            cell = bucket.astype(np.int64)
            cell *= C
            cell += base_cell
            counts = np.bincount(cell.ravel(), minlength=n_bins)[:Mc * G * C]
            counts = counts.reshape(Mc, G, C).astype(np.float64)
            tallies = {}  # project the per-class counts on each strategy, then sum over k
            for s in ("majority", "weighted", "verified"):
                if s in strategies or (s == "weighted" and "verified" in strategies):
                    sw, vw = class_w[s]
                    tallies[s] = ((counts @ sw).cumsum(axis=1), (counts @ vw).cumsum(axis=1))
            if "verified" in strategies:
                sv, vv = tallies["verified"]
                has = _segments_any(vv > 0, starts)
                use = has[seg_of_code]
                tallies["verified"] = (np.where(use, sv, tallies["weighted"][0]),
                                       np.where(use, vv, tallies["weighted"][1]))
            if "logprob" in strategies:
                lcell = (lbase + bucket).ravel()
                lps = np.bincount(lcell, weights=lp_mat.ravel(), minlength=(Mc + 1) * G)
                lps = lps[:Mc * G].reshape(Mc, G).cumsum(axis=1)
                tallies["logprob"] = (lps, (counts @ lp_pos.astype(float)).cumsum(axis=1))
            for s in strategies:
                score, votes = tallies[s]
                wins = _winners_correct(score, votes, ca, starts, correct_code)
                correct_count[s] += wins.sum(axis=0)
    return {s: correct_count[s] / (n_subsets * P) for s in strategies}


# ---------------------------------------------------------------------------------------------
# the evaluation

def _save_png(fig, path: Path):
    tmp = atomic_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def evaluate(problems_path, trace_paths, execution_paths, out_dir, ks=None, n_subsets=200, seed=0,
             weights=None, critique_weight=1.0, strategies=None, critique_replaces=False,
             count_cancelled=False) -> dict:
    """Evaluate every strategy against the known answers and write the outputs to `out_dir`.

    Returns {"metrics": table, "per_problem": table, "report": markdown text}. Problems with an
    unknown answer (PROBLEMS.answer null) are left out of every accuracy; when no answer is known
    the files are still written, with a note instead of numbers.
    """
    strategies = _check_strategies(STRATEGIES if strategies is None else strategies)
    try:
        n_subsets = int(n_subsets)
    except (TypeError, ValueError):
        n_subsets = 0
    if n_subsets < 1:
        raise ValueError(f"n_subsets: expected a positive integer, got {n_subsets!r}")
    ks = sorted({int(k) for k in (ks or [])})
    if any(k < 1 for k in ks):
        raise ValueError(f"ks={ks}: every k must be a positive integer")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with Candidates(problems_path, trace_paths, execution_paths, weights, critique_weight,
                    extra_trace_columns=("sample", "completion_tokens"), strategies=strategies,
                    materialise=True, critique_replaces=critique_replaces,
                    count_cancelled=count_cancelled) as cands:
        con = cands.con
        params = cands.params
        problems = cands.problems
        votes = {s: cands.votes(s) for s in strategies}
        tallies = cands.tallies("weighted") if "weighted" in strategies else None
        stats = con.sql(load_sql("eval_problems")).to_arrow_table()
        dist = con.sql("SELECT problem_id, answer_int, count(*) AS n FROM candidates "
                       "WHERE valid GROUP BY ALL").to_arrow_table()
        by_source = con.sql("SELECT source, count(*), coalesce(sum(completion_tokens), 0) "
                            "FROM candidates GROUP BY source").fetchall()
        known_ids = problems.filter(pc.is_valid(problems.column("answer")))
        known_ids = known_ids.sort_by("problem_id")
        index = pa.table({"problem_id": known_ids.column("problem_id"),
                          "pidx": pa.array(np.arange(known_ids.num_rows), pa.int64())})
        con.register("problem_index", index)
        rows = con.sql(load_sql("eval_rows")).fetchnumpy()

    pids = problems.column("problem_id")
    P = len(pids)
    known = pc.is_valid(problems.column("answer")).to_numpy(zero_copy_only=False)
    correct_int = pc.fill_null(problems.column("answer"), -1).to_numpy(
        zero_copy_only=False).astype(np.int64)
    n_known = int(known.sum())

    def by_problem(table, column, fill=0):
        """`column` of a per-problem table, in the problems file's order."""
        where = pc.index_in(pids, value_set=table.column("problem_id")).to_numpy(
            zero_copy_only=False)
        vals = table.column(column).to_pylist()
        return [vals[int(w)] if w == w and w is not None else fill for w in where]

    st = {c: by_problem(stats, c) for c in stats.column_names if c != "problem_id"}
    n_gen = np.array(st["n_generate"], dtype=np.int64)
    c_gen = np.array(st["n_correct_generate"], dtype=np.int64)
    gen_tokens = np.array(st["generate_tokens"], dtype=np.float64)
    all_tokens = np.array(st["completion_tokens"], dtype=np.float64)
    voted = {s: by_problem(votes[s], "answer", None) for s in strategies}
    hit = {s: np.array([k and v is not None and v == int(c)
                        for v, c, k in zip(voted[s], correct_int, known)], dtype=bool)
           for s in strategies}  # a loop over problems, not rows

    known_idx = np.flatnonzero(known)
    kid = pc.index_in(known_ids.column("problem_id"), value_set=pids).to_numpy(
        zero_copy_only=False).astype(np.int64)  # pidx -> row of the problems table
    N = int(n_gen[known_idx].max(initial=0)) if n_known else int(n_gen.max(initial=0))
    grid = k_grid(N, ks)
    curves, metrics_rows = {}, []
    tok_k = np.zeros(len(grid))
    full_tokens = float(all_tokens[known_idx].sum())
    if n_known and len(grid):
        code, cls, classes, code_problem, code_answer = number_answers_and_classes(rows)
        curves = subset_curves(
            rows["pidx"], code, cls, rows["w_logprob"], classes, code_problem, code_answer,
            correct_int[kid], grid, strategies, n_subsets=n_subsets, seed=seed)
        curves["pass@k"] = pass_at_k_mean(n_gen[kid], c_gen[kid], grid)
        # expected completion tokens of k-subsets: a problem spends min(k, n)/n of its total
        n_k = n_gen[kid][:, None]
        tok_k = (np.minimum(grid[None, :], n_k) / np.maximum(n_k, 1)
                 * gen_tokens[kid][:, None]).sum(axis=0)
        for s, acc in curves.items():
            for k, a, t in zip(grid, acc, tok_k):
                metrics_rows.append({"strategy": s, "k": int(k), "accuracy": float(a),
                                     "curve": "pass" if s == "pass@k" else "subset",
                                     "tokens": float(t), "n_problems": n_known})
    if n_known:
        for s in strategies:
            metrics_rows.append({"strategy": s, "k": N, "accuracy": float(hit[s].sum() / n_known),
                                 "curve": "full", "tokens": full_tokens, "n_problems": n_known})
    note = "" if n_known else "no problem has a known answer: nothing to score"
    metrics = write_table(metrics_rows, out_dir / "metrics.parquet", METRICS, metadata={
        "n_subsets": n_subsets, "seed": seed, "weights": params, "ks": ks, "note": note,
        "strategies": strategies})

    rank = _correct_rank(tallies, pids, correct_int, known) if tallies is not None \
        else np.full(P, -1)
    schema = _per_problem_schema(strategies)
    pp = {"problem_id": pids.to_pylist(), "answer": problems.column("answer").to_pylist(),
          "n_traces": st["n_traces"], "n_generate": st["n_generate"], "n_valid": st["n_valid"],
          "n_correct": st["n_correct"], "distribution": _distribution(dist, pids),
          "correct_rank": [int(r) if r > 0 else None for r in rank],
          "completion_tokens": st["completion_tokens"]}
    for s in strategies:
        pp[f"voted_{s}"] = voted[s]
        pp[f"correct_{s}"] = [bool(h) if k else None for h, k in zip(hit[s], known)]
    per_problem = write_table(pa.table(pp, schema=schema), out_dir / "per_problem.parquet",
                              schema, metadata={"note": note})

    report = _report(strategies, curves, grid, ks, N, hit, P, n_known, by_source, n_subsets,
                     params)
    write_text(report, out_dir / "report.md")
    _plots(out_dir, strategies, curves, grid, tok_k, hit, n_known, full_tokens, n_subsets)
    return {"metrics": metrics, "per_problem": per_problem, "report": report}


def _plots(out_dir, strategies, curves, grid, tok_k, hit, n_known, full_tokens, n_subsets):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if n_known and len(grid):
        for s, acc in curves.items():
            ax.plot(grid, acc, label=s if s == "pass@k" else f"{s}@k",
                    linestyle="--" if s == "pass@k" else "-",
                    marker="." if len(grid) < 40 else None)
        if grid[-1] > 1:
            ax.set_xscale("log")
        ax.set_xlabel("k (generate samples per problem)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"accuracy at k ({n_known} problems, {n_subsets} random subsets per k)")
    else:
        ax.text(0.5, 0.5, "no known answers: nothing to evaluate", ha="center", va="center")
        ax.set_axis_off()
    _save_png(fig, Path(out_dir) / "maj_at_k.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if n_known and len(grid):
        for s in strategies:
            line, = ax.plot(tok_k, curves[s], label=f"{s}@k (generate samples)")
            ax.scatter([full_tokens], [hit[s].sum() / n_known], color=line.get_color(),
                       marker="*", s=90, zorder=3)
        if tok_k.max(initial=0) > 0 and tok_k.min(initial=0) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("completion tokens spent (all problems with a known answer)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title("accuracy vs tokens (stars: every candidate, reflexion and critique too)",
                     fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no known answers: nothing to evaluate", ha="center", va="center")
        ax.set_axis_off()
    _save_png(fig, Path(out_dir) / "accuracy_vs_tokens.png")
    plt.close(fig)


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
        parts = [f"{x}:{c}" for x, c in zip(da[a:min(b, a + top)], dn[a:min(b, a + top)])]
        if b - a > top:
            parts.append(f"... (+{b - a - top} more)")
        out[p] = ", ".join(parts)
    return out


def _correct_rank(tallies, pids, correct_int, known) -> np.ndarray:
    """Rank (1 = winner) of the correct answer in the weighted vote's order; -1 if absent."""
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


def _report(strategies, curves, grid, ks, N, hit, P, n_known, by_source, n_subsets,
            params) -> str:
    counts = {s: (n, t) for s, n, t in by_source}
    lines = ["# Evaluation", ""]
    lines.append(f"{P} problems, {n_known} with a known answer; up to N = {N} generate samples "
                 "per problem; candidates by source: "
                 + ", ".join(f"{s} {counts.get(s, (0, 0))[0]}"
                             for s in ("generate", "reflexion", "critique")) + ".")
    lines.append(f"Vote weights: {params}.")
    lines.append("")
    if not n_known:
        lines += ["**Note: no problem has a known answer, so there is nothing to score.** The "
                  "votes are in per_problem.parquet; metrics.parquet has no rows.", ""]
    else:
        if n_known < P:
            lines += [f"Accuracy is over the {n_known} problems with a known answer; the other "
                      f"{P - n_known} are left out.", ""]
        lines += ["## Accuracy per strategy with every candidate (N samples, reflexion, "
                  "critique)", ""]
        lines.append(_md_table(["strategy", "accuracy", "correct"],
                               [[s, _pct(hit[s].sum() / n_known),
                                 f"{int(hit[s].sum())}/{n_known}"] for s in strategies]))
        lines += ["", f"## Accuracy at k (generate samples only; the mean over {n_subsets} "
                  "random k-subsets per problem; pass@k unbiased)", ""]
        cols = list(strategies) + ["pass@k"]
        at = {int(k): i for i, k in enumerate(grid)}
        table_ks = sorted({1, N} | {k for k in ks if 1 <= k <= N}) if N else []
        lines.append(_md_table(
            ["k"] + [c if c == "pass@k" else f"{c}@k" for c in cols],
            [[str(k)] + [_pct(curves[c][at[k]]) if c in curves else "n/a" for c in cols]
             for k in table_ks]))
        skipped = [k for k in ks if k > N]
        if skipped:
            lines.append(f"\n(k = {skipped} exceed N = {N} and are left out.)")
        lines.append("")
    lines += ["## Tokens spent", ""]
    rows, tot_n, tot_t = [], 0, 0
    for s in ("generate", "reflexion", "critique"):
        n, t = counts.get(s, (0, 0))
        tot_n, tot_t = tot_n + n, tot_t + t
        rows.append([s, n, t, f"{t / n:.0f}" if n else "n/a"])
    rows.append(["all", tot_n, tot_t, f"{tot_t / tot_n:.0f}" if tot_n else "n/a"])
    lines.append(_md_table(["source", "traces", "completion tokens", "mean per trace"], rows))
    lines += ["", "Plots: maj_at_k.png (accuracy vs k for every strategy, and pass@k), "
              "accuracy_vs_tokens.png (accuracy vs completion tokens spent).", ""]
    return "\n".join(lines)
