"""The evaluation's estimators, numpy only: pass@k, the k grid of the at-k curves, and a paired
bootstrap over problems. The at-k curves of the strategies are not here: they run each
strategy's own query over random subsets (aimo/subsets.py), so no strategy is written twice.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pass_at_k", "pass_at_k_mean", "k_grid", "bootstrap"]

ALL_K_MAX = 256  # every k from 1 to N up to this N; a grid above
GRID_POINTS = 32  # geometric points above the dense head of the grid
DENSE_HEAD = 16
_CELL_BUDGET = 1 << 22  # (problems x k-points) and (resamples x problems) cells per numpy chunk

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
