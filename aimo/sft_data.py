"""NuminaMath-TIR rows -> chat-format training rows: checked, normalised, deduplicated and split.

Reads an export of the data set (Parquet or JSONL with `problem`, `solution`, `messages`) and
writes one SFT_DATA table whose `messages` are exactly what inference sends (the system and user
turns of aimo.prompts.tir_messages) followed by the solution as the assistant turn, its code and
outputs re-fenced the way the TIR loop writes them (aimo.prompts.output_block). A bad row is
dropped and counted by reason, never fatal. Knows nothing of models, tokenizers or Snakemake.
"""

import contextlib
import hashlib
import json
import logging
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aimo import prompts
from aimo.answers import extract_answer, to_integer
from aimo.schemas import SFT_DATA
from aimo.tables import write_table

log = logging.getLogger("aimo.sft_data")

# Why a row is dropped; the metadata and the log count every one of these.
REASONS = {
    "unreadable": "the line is not a JSON object",
    "missing_problem": "no problem text",
    "missing_solution": "no solution text",
    "unclosed_fence": "a ``` fence is never closed",
    "code_without_output": "a ```python block is not followed by its ```output block",
    "output_without_code": "an ```output block follows no ```python block",
    "no_boxed_answer": "the solution has no \\boxed{...} final answer",
    "non_integer_answer": "the boxed answer is not an integer (sft.integer_answers is on)",
    "duplicate_problem": "the same problem (whitespace and case aside) came earlier",
}

_FENCED = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_CODE_LANG = prompts.CODE_FENCE.removeprefix("```")
_OUTPUT_LANG = prompts.OUTPUT_FENCE.removeprefix("```")


class ConfigError(ValueError):
    """A setting that cannot work here; its message names the config key to change."""


@contextlib.contextmanager
def clean_errors():
    """For stage scripts: a configuration or missing-file error ends the job with its message
    in the log (and on the terminal), not with a traceback."""
    try:
        yield
    except (ConfigError, FileNotFoundError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


def prompt_sha256() -> str:
    """A hash of the prompt text the training rows are built with."""
    text = "\0".join(
        [
            prompts.SYSTEM,
            prompts.TIR_INSTRUCTION,
            prompts.CODE_FENCE,
            prompts.OUTPUT_FENCE,
            prompts.FENCE_END,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path):
    """(row number, dict or None) for every row of a Parquet or JSONL export; None marks a line
    that is not a JSON object. A missing file is an error that names the config key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"sft.data={str(path)!r}: no such file. Point sft.data at a NuminaMath-TIR export "
            "(Parquet or JSONL with problem, solution and messages); the project's own sample "
            "is data/numina_tir_sample.jsonl"
        )
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(
                f"sft.data={str(path)!r}: not a readable Parquet file ({exc})"
            ) from exc
        return list(enumerate(rows))
    if path.suffix not in (".jsonl", ".json"):
        raise ConfigError(f"sft.data={str(path)!r}: expected a .parquet or .jsonl file")
    out = []
    with open(path, encoding="utf-8") as src:
        for number, line in enumerate(src):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            out.append((number, row if isinstance(row, dict) else None))
    return out


def _turn(messages, role):
    for message in messages or []:
        if isinstance(message, dict) and message.get("role") == role:
            return message.get("content")
    return None


def normalise_solution(solution: str):
    """(normalised solution, number of code blocks, reason or None).

    Each ```python block must be followed (only whitespace between) by its ```output block;
    both are re-fenced as the TIR loop writes them, so the model learns the exact text it will
    see at inference. Other fenced blocks (```latex, plain ```) are kept as written.
    """
    parts, pos, n_code, pending, after_output = [], 0, 0, False, False
    for match in _FENCED.finditer(solution):
        lang, body = match.group(1), match.group(2)
        between = solution[pos : match.start()]
        if after_output and between.startswith("\n"):
            between = between[1:]  # output_block already ends with this newline
        if lang == _OUTPUT_LANG:
            if not pending:
                return None, n_code, "output_without_code"
            if between.strip():
                return None, n_code, "code_without_output"
            parts.append(prompts.output_block(body))
        elif pending:
            return None, n_code, "code_without_output"
        elif lang == _CODE_LANG:
            if between and not between.endswith("\n"):
                between += "\n"
            code = body.strip("\n").rstrip()
            parts.append(f"{between}{prompts.CODE_FENCE}\n{code}\n{prompts.FENCE_END}\n")
            n_code += 1
        else:
            parts.append(between + match.group(0))
        pending, after_output = lang == _CODE_LANG, lang == _OUTPUT_LANG
        pos = match.end()
    if pending:
        return None, n_code, "code_without_output"
    rest = solution[pos:]
    if "```" in rest:
        return None, n_code, "unclosed_fence"
    parts.append(rest[1:] if after_output and rest.startswith("\n") else rest)
    return "".join(parts).strip(), n_code, None


def check_row(row, integer_answers=False):
    """(problem, normalised solution, answer, n_code_blocks) of a good row, or the drop reason."""
    if row is None:
        return "unreadable"
    messages = row.get("messages")
    problem = row.get("problem") or _turn(messages, "user")
    solution = row.get("solution") or _turn(messages, "assistant")
    if not isinstance(problem, str) or not problem.strip():
        return "missing_problem"
    if not isinstance(solution, str) or not solution.strip():
        return "missing_solution"
    text, n_code, reason = normalise_solution(solution)
    if reason:
        return reason
    answer = extract_answer(text)
    if not _BOX.search(text) or answer is None:
        return "no_boxed_answer"
    if integer_answers and to_integer(answer) is None:
        return "non_integer_answer"
    return problem.strip(), text, answer, n_code


def split_of(n: int, val_fraction: float, seed: int) -> list[str]:
    """train/validation labels for n rows: a seeded shuffle, round(n * val_fraction) rows to
    validation (at least one, and one row left to train, when the fraction is above zero)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    validation = set(order[:n_val])
    return ["validation" if i in validation else "train" for i in range(n)]


def prepare(data_path, out, val_fraction=0.1, seed=2026, integer_answers=False):
    """Write the training table for the export at `data_path` to `out`; return its metadata."""
    rows = read_rows(data_path)
    dropped, examples = Counter(), defaultdict(list)
    seen, kept = set(), []
    for number, row in rows:
        checked = check_row(row, integer_answers)
        if isinstance(checked, str):
            dropped[checked] += 1
            examples[checked].append(number)
            continue
        problem, solution, answer, n_code = checked
        key = " ".join(problem.split()).casefold()
        if key in seen:
            dropped["duplicate_problem"] += 1
            examples["duplicate_problem"].append(number)
            continue
        seen.add(key)
        integer = to_integer(answer)
        kept.append(
            {
                "example_id": hashlib.sha256(key.encode()).hexdigest()[:16],
                "source_row": number,
                "problem": problem,
                "solution": solution,
                "answer": answer,
                "answer_int": integer
                if integer is not None and -(2**63) <= integer < 2**63
                else None,
                "n_code_blocks": n_code,
                "messages": prompts.tir_messages(problem)
                + [{"role": "assistant", "content": solution}],
            }
        )
    if not kept:
        raise ConfigError(
            f"sft.data={str(data_path)!r}: none of its {len(rows)} rows is usable "
            f"(dropped: {dict(dropped)})"
        )
    for row, split in zip(kept, split_of(len(kept), val_fraction, seed)):
        row["split"] = split
    n_val = sum(r["split"] == "validation" for r in kept)
    for reason, count in sorted(dropped.items()):
        log.warning(
            "dropped %d row(s): %s (%s); rows %s%s",
            count,
            reason,
            REASONS[reason],
            examples[reason][:5],
            " ..." if count > 5 else "",
        )
    log.info(
        "%s: %d rows read, %d kept (%d train, %d validation), %d dropped",
        data_path,
        len(rows),
        len(kept),
        len(kept) - n_val,
        n_val,
        sum(dropped.values()),
    )
    meta = {
        "source": str(data_path),
        "source_sha256": file_sha256(data_path),
        "rows_read": len(rows),
        "rows_kept": len(kept),
        "dropped": dict(sorted(dropped.items())),
        "train": len(kept) - n_val,
        "validation": n_val,
        "val_fraction": val_fraction,
        "seed": seed,
        "integer_answers": integer_answers,
        "prompt_sha256": prompt_sha256(),
    }
    write_table(kept, out, SFT_DATA, metadata=meta)
    return meta
