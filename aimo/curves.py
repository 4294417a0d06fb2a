"""The evaluation's estimators, numpy only: pass@k, the k grid, the at-k curves of every vote
strategy over random subsets of the samples, and a paired bootstrap over problems.

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

import numpy as np

__all__ = [
    "pass_at_k",
    "pass_at_k_mean",
    "k_grid",
    "number_answers_and_classes",
    "subset_curves",
    "bootstrap",
    "ROW_WEIGHTS",
]

ALL_K_MAX = 256  # every k from 1 to N up to this N; a grid above
GRID_POINTS = 32  # geometric points above the dense head of the grid
DENSE_HEAD = 16
_CELL_BUDGET = 1 << 22  # (answers x k-points) and (problems x samples) cells per numpy chunk
# strategies whose weight is a real number per sample (candidates.sql), not one of a few classes;
# their votes count the samples with a positive weight: w_logprob's own, else the valid ones
# (an entropy weight is positive exactly when the majority weight is)
ROW_WEIGHTS = {
    "logprob": "w_logprob",
    "entropy": "w_entropy",
    "tail_entropy": "w_tail_entropy",
    "share_confidence": "w_conf",
}

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
        nn, cc = n[lo : lo + step], c[lo : lo + step]
        i = np.arange(kmax)
        num = (nn - cc)[:, None] - i[None, :]
        den = nn[:, None] - i[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(
                num > 0, np.log(np.maximum(num, 1)) - np.log(np.maximum(den, 1)), -np.inf
            )
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
    beats = (score > 0) & (
        (score > s_c)
        | ((score == s_c) & ((votes > v_c) | ((votes == v_c) & (code_answer[:, None] < a_c))))
    )
    return has[:, None] & (sc > 0) & ~_segments_any(beats, seg_starts)


def _mix_score(v, conf, ver, starts, mix):
    """share_confidence's score per (answer, k) from the sums over its samples of the
    majority weight `v`, of w_conf and of the verified majority weight (share_confidence.sql)."""
    total = np.add.reduceat(v, starts, axis=0) if len(starts) else np.zeros((0, v.shape[1]))
    seg_of_code = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(v))))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (
            mix["share"] * v / total[seg_of_code]
            + mix["confidence"] * conf / v
            + mix["consensus"] * ver / v
        )
    return np.where(v > 0, score, 0.0)


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
        if int(lp_.max()) + 1 <= (2**62) // span:  # one int64 key per (problem, answer)
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
    classes = {
        "w_majority": w_maj[first],
        "w_weighted": w_wt[first],
        "verified": ver[first],
        "lp_pos": w_lp[first] > 0,
    }
    return code, cls, classes, np.asarray(code_problem), np.asarray(code_answer)


def subset_curves(
    pidx,
    code,
    cls,
    row_weights,
    classes,
    code_problem,
    code_answer,
    correct,
    ks,
    strategies,
    n_subsets=200,
    seed=0,
    cell_budget=_CELL_BUDGET,
    mix=None,
) -> dict:
    """At-k accuracy of each strategy, the mean over `n_subsets` random k-subsets per problem.

    Rows are samples, sorted by problem: `pidx` (0..P-1), `code` (the number of the sample's
    (problem, answer) among `code_problem`/`code_answer`, sorted by problem then answer; -1 for
    a sample with no weight: it still takes a place in a subset), `cls` (its weight class, a row
    of `classes` = {"w_majority", "w_weighted", "verified", "lp_pos"} arrays) and `row_weights`
    (the ROW_WEIGHTS columns the strategies need, per sample). `correct[p]` is problem p's
    answer; `mix`: share_confidence's {share, confidence, consensus} weights. Returns
    {strategy: accuracy array over `ks`}.

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
    needed = {ROW_WEIGHTS[s] for s in strategies if s in ROW_WEIGHTS}
    row_weights = {c: np.asarray(row_weights[c], dtype=np.float64) for c in needed}
    w_maj = np.asarray(classes["w_majority"], dtype=np.float64)
    w_wt = np.asarray(classes["w_weighted"], dtype=np.float64)
    ver = np.asarray(classes["verified"], dtype=bool)
    lp_pos = np.asarray(classes["lp_pos"], dtype=bool)
    C = len(w_maj)
    class_w = {  # per class: (score weight, counts as a vote)
        "majority": (w_maj, (w_maj > 0).astype(float)),
        "weighted": (w_wt, (w_wt > 0).astype(float)),
        "verified": (w_wt * ver, ((w_wt > 0) & ver).astype(float)),
        "consensus": (w_maj * ver, None),  # share_confidence: verified valid weight
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
        rw_mat = {}
        for name, w in row_weights.items():
            rw_mat[name] = np.zeros((Pc, width))
            rw_mat[name][rows_r, cols] = np.where(local >= 0, w[r0:r1], 0.0)
        base_cell = code_mat * (G * C) + cls_mat  # + bucket * C per subset
        lbase = code_mat * G if rw_mat else None
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
            counts = np.bincount(cell.ravel(), minlength=n_bins)[: Mc * G * C]
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
                tallies["verified"] = (
                    np.where(use, sv, tallies["weighted"][0]),
                    np.where(use, vv, tallies["weighted"][1]),
                )
            if rw_mat:
                lcell = (lbase + bucket).ravel()
                sums = {}
                for name, mat in rw_mat.items():
                    w = np.bincount(lcell, weights=mat.ravel(), minlength=(Mc + 1) * G)
                    sums[name] = w[: Mc * G].reshape(Mc, G).cumsum(axis=1)
                valid_votes = (counts @ (w_maj > 0).astype(float)).cumsum(axis=1)
                for s in ("logprob", "entropy", "tail_entropy"):
                    if s in strategies:
                        votes = (
                            (counts @ lp_pos.astype(float)).cumsum(axis=1)
                            if s == "logprob"
                            else valid_votes
                        )
                        tallies[s] = (sums[ROW_WEIGHTS[s]], votes)
                if "share_confidence" in strategies:
                    tallies["share_confidence"] = (
                        _mix_score(
                            (counts @ w_maj).cumsum(axis=1),
                            sums["w_conf"],
                            (counts @ class_w["consensus"][0]).cumsum(axis=1),
                            starts,
                            mix,
                        ),
                        valid_votes,
                    )
            for s in strategies:
                score, votes = tallies[s]
                wins = _winners_correct(score, votes, ca, starts, correct_code)
                correct_count[s] += wins.sum(axis=0)
    return {s: correct_count[s] / (n_subsets * P) for s in strategies}


def bootstrap(
    hits: dict,
    baseline: str,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    cell_budget: int = _CELL_BUDGET,
) -> dict:
    """The spread of each strategy's accuracy over problems, by a paired bootstrap.

    `hits`: {strategy: bool array, one per problem (its vote was right)}. `n` resamples of the
    problems with replacement, the same ones for every strategy, give per strategy the central
    `level` interval of its accuracy (lo, hi) and of its difference from `baseline`'s (diff_lo,
    diff_hi): a strategy beats the baseline beyond the spread when diff_lo > 0.
    """
    P = len(next(iter(hits.values()), []))
    q = [50 * (1 - level), 50 * (1 + level)]
    if P == 0 or n < 1:
        return {
            s: {"lo": math.nan, "hi": math.nan, "diff_lo": math.nan, "diff_hi": math.nan}
            for s in hits
        }
    rng = np.random.default_rng(seed)
    base = np.asarray(hits[baseline], dtype=np.float64)
    acc = {s: [] for s in hits}
    diff = {s: [] for s in hits}
    step = max(1, cell_budget // P)
    for lo in range(0, n, step):
        idx = rng.integers(0, P, (min(step, n - lo), P))
        for s, h in hits.items():
            h = np.asarray(h, dtype=np.float64)
            acc[s].append(h[idx].mean(axis=1))
            diff[s].append((h - base)[idx].mean(axis=1))
    out = {}
    for s in hits:
        a_lo, a_hi = np.percentile(np.concatenate(acc[s]), q)
        d_lo, d_hi = np.percentile(np.concatenate(diff[s]), q)
        out[s] = {
            "lo": float(a_lo),
            "hi": float(a_hi),
            "diff_lo": float(d_lo),
            "diff_hi": float(d_hi),
        }
    return out
