"""The submission: `id,answer` for every problem, from the vote, with a documented fallback.

A problem whose vote found no valid answer (every candidate outside [0, 99999] or missing)
gets `fallback` (config `submission.fallback`, default 0): Kaggle scores a missing row as wrong
anyway, and a constant keeps the file complete and valid. An answer outside that range never
reaches the file, whatever the vote's weights let win (a positive `vote.weights.invalid`).
"""

import csv
import io

import pyarrow.parquet as pq

from aimo.answers import in_range
from aimo.schemas import VOTES
from aimo.tables import read_table, write_text


def csv_text(rows) -> str:
    """`id,answer` CSV of (id, answer) pairs: an id with a comma, a quote or a newline is
    quoted, so it stays one field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "answer"])
    writer.writerows((pid, int(answer)) for pid, answer in rows)
    return out.getvalue()


def write_submission(problems_path, votes_path, out, fallback: int = 0):
    """Write `out` (CSV: id,answer) in the problem file's order; return the fallback count."""
    problems = pq.read_table(problems_path).column("problem_id").to_pylist()
    votes = {r["problem_id"]: r["answer"] for r in read_table(votes_path, VOTES).to_pylist()}
    rows, fallbacks = [], 0
    for pid in problems:
        answer = votes.get(pid)
        if not in_range(answer):
            answer, fallbacks = fallback, fallbacks + 1
        rows.append((pid, answer))
    write_text(csv_text(rows), out)
    return fallbacks
