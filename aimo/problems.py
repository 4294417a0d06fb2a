"""Read a problem set (CSV, JSONL or Parquet with `id`, `problem` and optional `answer`) and
normalize it into the PROBLEMS table. Every error names the file, the row and the column."""

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq

from aimo.answers import INT64_MAX, INT64_MIN
from aimo.schemas import PROBLEMS
from aimo.tables import write_table


class ProblemError(ValueError):
    """A problem file that cannot be used as it is."""


def _rows(path: Path):
    """Yield (row number, dict) from a CSV, JSONL or Parquet file; row numbers are 1-based
    data rows (a CSV's header is row 0)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield i, row
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ProblemError(
            f"{path}: line {line}: not valid UTF-8 (byte {exc.start}: {exc.reason})"
        ) from exc
    if suffix == ".csv":
        # a quoted field may span lines (a problem's paragraphs): the reader sees the newlines
        for i, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), 1):
            yield i, row
    elif suffix in (".jsonl", ".json"):
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemError(f"{path}: row {i}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ProblemError(
                    f"{path}: row {i}: expected a JSON object, got {type(row).__name__}"
                )
            yield i, row
    else:
        raise ProblemError(f"{path}: unsupported format {suffix!r}; use .csv, .jsonl or .parquet")


def _answer(value, path, i):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value != value:  # NaN from a Parquet/pandas export
        return None
    text = str(value).replace(",", "").strip()
    try:
        number = int(text)  # exact: a float would round a long integer
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise ProblemError(
                f"{path}: row {i}, column 'answer': {value!r} is not an integer"
            ) from None
        number = int(number)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ProblemError(
            f"{path}: row {i}, column 'answer': {value!r} does not fit a 64-bit integer"
        )
    return number


def load(path) -> list[dict]:
    """The problems of `path` as PROBLEMS rows, checked: ids unique, problems non-empty."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: problem file not found")
    rows, seen = [], {}
    for i, raw in _rows(path):
        for column in ("id", "problem"):
            if column not in raw:
                raise ProblemError(
                    f"{path}: row {i}: missing column {column!r} "
                    f"(found {sorted(raw)}); expected id, problem[, answer]"
                )
        pid = "" if raw["id"] is None else str(raw["id"]).strip()
        if not pid:
            raise ProblemError(f"{path}: row {i}, column 'id': empty id")
        if pid in seen:
            raise ProblemError(
                f"{path}: row {i}, column 'id': duplicate id {pid!r} (first at row {seen[pid]})"
            )
        seen[pid] = i
        problem = raw["problem"]
        if not isinstance(problem, str) or not problem.strip():
            raise ProblemError(f"{path}: row {i} (id {pid!r}), column 'problem': empty problem")
        rows.append(
            {
                "problem_id": pid,
                "problem": problem.strip(),
                "answer": _answer(raw.get("answer"), path, i),
            }
        )
    if not rows:
        raise ProblemError(f"{path}: no problems")
    return rows


def normalize(src, out):
    """Read the problem file `src` and write the normalized PROBLEMS Parquet `out`."""
    rows = load(src)
    write_table(rows, out, PROBLEMS, metadata={"source": str(src), "n_problems": len(rows)})
    return len(rows)
