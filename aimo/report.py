"""The evaluation's report: the Markdown text and the plots, from the numbers aimo.evaluate
computed. Writes atomically; knows nothing of DuckDB or the shards."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimo.tables import atomic_path

__all__ = ["Results", "report", "plots"]


@dataclass(frozen=True)
class Results:
    """The numbers the report and the plots show, as aimo.evaluate computed them.

    strategies: the names voted; curves: {strategy or "pass@k": accuracy over grid} (the at-k
    curves); grid: their k-points; ks: the k of the report's table (config evaluate.ks); N: the
    most generate samples that can vote in one problem; hit: {strategy: bool per problem, the
    full vote right}; n_problems, n_known: problems, and those with a known answer; by_source:
    [(source, traces, completion tokens)]; n_subsets: random subsets per k; params: the vote's
    weights; tok_k: expected completion tokens per k-point; full_tokens: those of every
    candidate; selection: the oracle and the bootstrap spread (None without a known answer).
    """

    strategies: list
    curves: dict
    grid: np.ndarray
    ks: list
    N: int
    hit: dict
    n_problems: int
    n_known: int
    by_source: list
    n_subsets: int
    params: dict
    tok_k: np.ndarray
    full_tokens: float
    selection: dict | None = None


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


def plots(paths: dict, r: Results):
    """Write maj_at_k, tokens (accuracy vs tokens) and selection (accuracy per strategy with
    its spread, against the best possible pick) to their `paths`."""
    strategies, curves, grid, tok_k, hit = r.strategies, r.curves, r.grid, r.tok_k, r.hit
    n_known, full_tokens, n_subsets, selection = r.n_known, r.full_tokens, r.n_subsets, r.selection
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if n_known and len(grid):
        for s, acc in curves.items():
            ax.plot(
                grid,
                acc,
                label=s if s == "pass@k" else f"{s}@k",
                linestyle="--" if s == "pass@k" else "-",
                marker="." if len(grid) < 40 else None,
            )
        if grid[-1] > 1:
            ax.set_xscale("log")
            _plain_ticks(ax, grid)
        ax.set_xlabel("k (generate samples per problem)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"accuracy at k ({n_known} problems, {n_subsets} random subsets per k)")
    else:
        ax.text(0.5, 0.5, "no known answers: nothing to evaluate", ha="center", va="center")
        ax.set_axis_off()
    _save_png(fig, paths["maj_at_k"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if n_known and len(grid):
        for s in [s for s in strategies if s in curves]:
            (line,) = ax.plot(tok_k, curves[s], label=f"{s}@k (generate samples)")
            ax.scatter(
                [full_tokens],
                [hit[s].sum() / n_known],
                color=line.get_color(),
                marker="*",
                s=90,
                zorder=3,
            )
        if tok_k.max(initial=0) > 0 and tok_k.min(initial=0) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("completion tokens spent (all problems with a known answer)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(
            "accuracy vs tokens (stars: every candidate, reflexion and critique too)", fontsize=10
        )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no known answers: nothing to evaluate", ha="center", va="center")
        ax.set_axis_off()
    _save_png(fig, paths["tokens"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * (len(strategies) + 1)))
    if n_known and selection:
        names = list(strategies)
        acc = np.array([hit[s].sum() / n_known for s in names])
        lo = np.array([selection["spread"][s]["lo"] for s in names])
        hi = np.array([selection["spread"][s]["hi"] for s in names])
        y = np.arange(len(names))
        ax.barh(y, acc, xerr=[acc - lo, hi - acc], color="tab:blue", alpha=0.7, capsize=3)
        ax.axvline(
            selection["oracle"],
            color="tab:green",
            linestyle="--",
            label=f"some candidate right ({100 * selection['oracle']:.1f}%)",
        )
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("accuracy with every candidate (bars: 95% bootstrap interval)")
        ax.set_title(
            f"selection: each vote against the best possible pick ({n_known} problems)", fontsize=10
        )
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no known answers: nothing to evaluate", ha="center", va="center")
        ax.set_axis_off()
    _save_png(fig, paths["selection"])
    plt.close(fig)


def _plain_ticks(ax, grid):
    """k on a log axis, labelled 1, 2, 4, ... (not 10^0, 2x10^0, ...)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ticks = [
        k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192) if k <= grid[-1]
    ]
    if grid[-1] not in ticks:
        ticks.append(int(grid[-1]))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([str(k) for k in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def report(r: Results) -> str:
    """The evaluation's Markdown text."""
    strategies, curves, grid, ks, N, hit = r.strategies, r.curves, r.grid, r.ks, r.N, r.hit
    P, n_known, by_source, n_subsets = r.n_problems, r.n_known, r.by_source, r.n_subsets
    params, selection = r.params, r.selection
    counts = {s: (n, t) for s, n, t in by_source}
    lines = ["# Evaluation", ""]
    lines.append(
        f"{P} problems, {n_known} with a known answer; up to N = {N} generate samples "
        "that can vote per problem; candidates by source: "
        + ", ".join(
            f"{s} {counts.get(s, (0, 0))[0]}" for s in ("generate", "reflexion", "critique")
        )
        + "."
    )
    lines.append(f"Vote weights: {params}.")
    lines.append("")
    if not n_known:
        lines += [
            "**Note: no problem has a known answer, so there is nothing to score.** The "
            "votes are in per_problem.parquet; metrics.parquet has no rows.",
            "",
        ]
    else:
        if n_known < P:
            lines += [
                f"Accuracy is over the {n_known} problems with a known answer; the other "
                f"{P - n_known} are left out.",
                "",
            ]
        lines += [
            "## Accuracy per strategy with every candidate (N samples, reflexion, critique)",
            "",
        ]
        lines.append(
            _md_table(
                ["strategy", "accuracy", "correct"],
                [
                    [s, _pct(hit[s].sum() / n_known), f"{int(hit[s].sum())}/{n_known}"]
                    for s in strategies
                ],
            )
        )
        if selection:
            lines += ["", _selection(strategies, hit, n_known, selection)]
        lines += [
            "",
            f"## Accuracy at k (generate samples that can vote only; the mean over {n_subsets} "
            "random k-subsets per problem; pass@k unbiased)",
            "",
        ]
        cols = [s for s in strategies if s in curves] + ["pass@k"]
        at = {int(k): i for i, k in enumerate(grid)}
        table_ks = sorted({1, N} | {k for k in ks if 1 <= k <= N}) if N else []
        lines.append(
            _md_table(
                ["k"] + [c if c == "pass@k" else f"{c}@k" for c in cols],
                [
                    [str(k)] + [_pct(curves[c][at[k]]) if c in curves else "n/a" for c in cols]
                    for k in table_ks
                ],
            )
        )
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
    lines += [
        "",
        "Plots: maj_at_k.png (accuracy vs k for every strategy, and pass@k), "
        "accuracy_vs_tokens.png (accuracy vs completion tokens spent), selection.png "
        "(accuracy per strategy with its spread, against the best possible pick).",
        "",
    ]
    return "\n".join(lines)


def _selection(strategies, hit, n_known, sel) -> str:
    """The selection-loss table: each strategy against the best possible pick and majority."""
    base = sel["baseline"]
    out = [
        "## Selection: each vote against the best possible pick",
        "",
        f"Some candidate is right on {sel['n_oracle']}/{n_known} problems "
        f"({_pct(sel['oracle'])}): what a perfect vote would get. Selection loss = that minus "
        f"the strategy's accuracy. Intervals: 95%, a paired bootstrap over problems "
        f"({sel['resamples']} resamples); won/lost: problems the strategy gets right and "
        f"{base} wrong, and the reverse.",
        "",
    ]
    rows = []
    for s in strategies:
        sp, acc = sel["spread"][s], hit[s].sum() / n_known
        won, lost = sel["paired"][s]
        rows.append(
            [
                s,
                _pct(acc),
                f"{_pct(sp['lo'])} to {_pct(sp['hi'])}",
                _pct(sel["oracle"] - acc),
                f"{100 * (acc - hit[base].sum() / n_known):+.1f} "
                f"({100 * sp['diff_lo']:+.1f} to {100 * sp['diff_hi']:+.1f})",
                f"{won} / {lost}",
            ]
        )
    out.append(
        _md_table(
            [
                "strategy",
                "accuracy",
                "95% interval",
                "selection loss",
                f"vs {base}, points (95% interval)",
                "won / lost",
            ],
            rows,
        )
    )
    return "\n".join(out)
