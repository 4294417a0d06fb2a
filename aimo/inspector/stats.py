"""The inspector's statistics beside the report's: pass@1 with its standard error, the
no-answer rate, and the vote's ties and how they were broken. Plain numbers in, plain numbers
out: no files, no DuckDB."""

from __future__ import annotations

import math
import statistics

__all__ = ["pass_at_1", "rate", "tie", "tie_counts", "BROKEN_BY"]

# how rank.sql breaks a tie of scores, in its order
BROKEN_BY = ("more votes", "smaller answer")


def pass_at_1(pools) -> dict:
    """pass@1 from `pools`, one (samples, right) pair per problem with a known answer: the
    mean over problems of each one's share of right samples (the mean over all samples when
    every problem has as many), with its standard error over problems, sd / sqrt(P). A problem
    with no sample is left out. {"value", "se", "problems", "samples"}; None where undefined."""
    shares = [right / n for n, right in pools if n > 0]
    n = len(shares)
    return {
        "value": statistics.fmean(shares) if n else None,
        "se": statistics.stdev(shares) / math.sqrt(n) if n > 1 else None,
        "problems": n,
        "samples": sum(n for n, _ in pools if n > 0),
    }


def rate(hits: int, total: int) -> dict:
    """A count over a total, with its share (None of nothing)."""
    return {"count": hits, "total": total, "share": hits / total if total else None}


def tie(vote: dict) -> dict:
    """Of one VOTES row: whether its winner's and runner-up's scores tie (as rank.sql compares
    them), and for a tie which rule of rank.sql's order broke it. {"tie", "broken_by"}."""
    tied = vote["runner_up"] is not None and vote["score"] == vote["runner_up_score"]
    broken_by = None
    if tied:
        broken_by = BROKEN_BY[0] if vote["votes"] > vote["runner_up_votes"] else BROKEN_BY[1]
    return {"tie": tied, "broken_by": broken_by}


def tie_counts(rows) -> dict:
    """From the VOTES rows of one strategy (one per problem): problems voted, votes that were
    ties, how many of those each rule of rank.sql broke, and problems with no answer to vote."""
    voted = [r for r in rows if r["answer"] is not None]
    ties = [tie(r)["broken_by"] for r in voted if tie(r)["tie"]]
    return {
        "problems": len(rows),
        "voted": len(voted),
        "no_vote": len(rows) - len(voted),
        "ties": len(ties),
        **{b: ties.count(b) for b in BROKEN_BY},
    }
