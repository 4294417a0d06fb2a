"""Bad input of every kind loses nothing: problems files, what model-written code prints, what
a vote lets win. Each gets a clear error naming the input, or a valid row or answer; never a
crash of the stage, a half file, or a write outside its folder. (The configs' corpus is in
tests/test_config_corpus.py; main.py on the tiny model with hostile ids in tests/test_online.py.)
"""

import csv
import io
import json
import os

import pytest

from aimo import problems, tir
from aimo.executions import BlockResult, execution_row, executions_from_blocks
from aimo.sandbox import OK, Limits, Sandbox
from aimo.schemas import EXECUTIONS, METRICS, PROBLEMS, TRACES, VOTES
from aimo.submission import write_submission
from aimo.tables import file_name, read_table, write_table
from aimo.vote import vote, vote_table

pytestmark = pytest.mark.needs("unit")

HOSTILE_IDS = [
    "test/algebra/1214.json",  # MATH's own ids
    "../escaped",
    "../../out",
    "..",
    ".",
    ".hidden",
    "a b",
    "übung-∑",
    "id,with,commas",
    'quote"d',
    "x" * 400,
    "%2E",  # what an escaped leading dot looks like: must stay distinct from "."
    "~2",
]


# -- problems files ------------------------------------------------------------------------
def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem", "answer"])
        w.writerows(rows)
    return path


def test_hostile_ids_and_long_problems_load_as_given(tmp_path):
    rows = [(pid, f"What is {i} + 1?", i + 1) for i, pid in enumerate(HOSTILE_IDS)]
    rows.append(("long", "word " * 20_000 + "What is 2 + 2?", 4))  # 100k characters
    rows.append(("lines", "First line.\nSecond line: what is 3 + 3?", 6))
    path = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "problems.parquet"
    assert problems.normalize(path, out) == len(rows)
    table = read_table(out, PROBLEMS).to_pylist()
    assert [r["problem_id"] for r in table][: len(HOSTILE_IDS)] == [
        pid.strip() for pid in HOSTILE_IDS
    ]
    by_id = {r["problem_id"]: r for r in table}
    assert len(by_id["long"]["problem"]) > 100_000
    assert by_id["lines"]["problem"] == "First line.\nSecond line: what is 3 + 3?"


@pytest.mark.parametrize(
    "rows, says",
    [
        ([("a", "", 1)], "row 1 (id 'a'), column 'problem': empty problem"),
        ([("", "What?", 1)], "row 1, column 'id': empty id"),
        ([("a", "Q1", 1), ("a", "Q2", 2)], "row 2, column 'id': duplicate id 'a'"),
        ([("a", "Q", "1" + "0" * 30)], "row 1, column 'answer'"),
        ([("a", "Q", "nan")], "row 1, column 'answer'"),
        ([("a", "Q", "seven")], "row 1, column 'answer': 'seven' is not an integer"),
    ],
)
def test_bad_problem_rows_are_named(tmp_path, rows, says):
    path = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "problems.parquet"
    with pytest.raises(problems.ProblemError) as err:
        problems.normalize(path, out)
    assert str(path) in str(err.value) and says in str(err.value)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_binary_and_broken_files_are_named(tmp_path):
    binary = tmp_path / "p.jsonl"
    binary.write_bytes(b'{"id": "a", "problem": "x"}\n\xff\xfe\x00\n')
    with pytest.raises(problems.ProblemError, match="line 2: not valid UTF-8"):
        problems.load(binary)
    broken = tmp_path / "q.jsonl"
    broken.write_text(json.dumps({"id": "a", "problem": "x"}) + "\n[1, 2]\n")
    with pytest.raises(problems.ProblemError, match="row 2: expected a JSON object"):
        problems.load(broken)


def test_ids_never_become_paths():
    names = [file_name(pid, ".parquet") for pid in HOSTILE_IDS + ["", "a", "A"]]
    assert len(set(names)) == len(names)  # distinct ids, distinct files
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name.encode()) < 255
        assert os.path.basename(name) == name and name not in (".", "..")


# -- what model-written code prints ---------------------------------------------------------
TRACE = {"trace_id": "t", "problem_id": "p", "answer_int": 5}
ANY = object()
CODE = {  # code -> (the status it must get, printed_int, agrees with the answer 5)
    "print(2**64)": (OK, None, False),
    "import math\nprint(math.comb(100, 50))": (OK, None, False),
    "print(-(2**63))": (OK, -(2**63), False),
    "print(float('nan'))": (OK, None, None),
    "print(float('inf'))": (OK, None, None),
    "print('7' * 1_000_000)": (OK, None, False),  # 1 MB of output, kept head and tail
    "import sys\nsys.stdout.buffer.write(bytes(range(256)))": (OK, ANY, ANY),
    "print(5)\nraise ValueError('at line 99')": ("error", None, None),
    "print(1/0)": ("error", None, None),
}


@pytest.fixture(scope="module")
def sandbox():
    limits = Limits(wall_s=10, cpu_s=10, output_chars=2000, max_output_mb=8)
    with Sandbox(limits, workers=1) as sb:
        yield sb


@pytest.mark.needs("sandbox")
def test_what_code_prints_never_loses_the_table(sandbox, tmp_path):
    rows = []
    for code, (status, printed, agrees) in CODE.items():
        session = sandbox.session(seed=1)
        try:
            result = session.run(code)
        finally:
            session.close()
        assert result.status == status, (code, result)
        row = execution_row(TRACE, [result])
        assert printed is ANY or row["printed_int"] == printed, (code, row)
        assert agrees is ANY or row["agrees"] is agrees, (code, row)
        rows.append(row)
    out = tmp_path / "executions.parquet"
    write_table(rows, out, EXECUTIONS)  # 2**64 and comb(100, 50) used to raise OverflowError
    assert read_table(out, EXECUTIONS).num_rows == len(CODE)


def test_agreement_is_read_from_the_exact_integer():
    big = BlockResult(OK, "18446744073709551616\n", None, 0.1)
    assert execution_row(dict(TRACE, answer_int=0), [big])["agrees"] is False
    huge = BlockResult(OK, str(3**200), None, 0.1)  # the model's answer cannot be that big
    assert execution_row(dict(TRACE, answer_int=None), [huge])["agrees"] is None
    small = BlockResult(OK, "250\n", None, 0.1)
    assert execution_row(dict(TRACE, answer_int=250), [small])["agrees"] is True


def test_a_traceback_is_not_what_the_code_printed():
    # online, a failed block's output is its stdout and traceback in one text
    trace = dict(
        TRACE,
        answer_int=12,
        code_blocks=[
            {
                "code": "f()",
                "output": "Traceback (most recent call last):\n  line 12\nNameError: f",
                "status": "error",
                "wall_s": 0.1,
            }
        ],
    )
    [row] = executions_from_blocks([trace])
    assert row["exec_status"] == "error" and row["printed_int"] is None and row["agrees"] is None


@pytest.mark.parametrize(
    "text, answer_int",
    [
        ("```python\nprint(1)\n", None),  # an unclosed fence, no answer
        ("```python\nx = '\\boxed{7}'\n```\nSo the answer is \\boxed{8}.", 8),
        ("Answer: \\boxed{12", None),  # an unclosed box is no integer
        ("\\boxed{" + "9" * 5000 + "}", None),  # beyond int64
        ("\x00\x01 binary \\boxed{3}", 3),
    ],
)
def test_trace_text_of_any_shape_gives_a_row(text, answer_int):
    trace = tir.Trace(tir.Request("t", "p", 0, 1, []), "prompt")
    trace.text = text
    assert tir.row(trace)["answer_int"] == answer_int


# -- what the vote lets win ------------------------------------------------------------------
def test_the_submission_never_writes_an_answer_outside_the_range(tmp_path):
    pids = ["in", "over", "neg", "none", "a,b"]
    write_table(
        [{"problem_id": p, "problem": "q", "answer": None} for p in pids],
        tmp_path / "problems.parquet",
        PROBLEMS,
    )
    votes = [
        {"problem_id": "in", "answer": 7},
        {"problem_id": "over", "answer": 123456},  # a positive vote.weights.invalid let it win
        {"problem_id": "neg", "answer": -3},
        {"problem_id": "none", "answer": None},
        {"problem_id": "a,b", "answer": 9},
    ]
    full = [dict({c: None for c in VOTES.names}, strategy="weighted", **v) for v in votes]
    write_table(full, tmp_path / "votes.parquet", VOTES)
    out = tmp_path / "submission.csv"
    fallbacks = write_submission(tmp_path / "problems.parquet", tmp_path / "votes.parquet", out, 0)
    assert fallbacks == 3
    got = list(csv.reader(io.StringIO(out.read_text())))
    assert got == [
        ["id", "answer"],
        ["in", "7"],
        ["over", "0"],
        ["neg", "0"],
        ["none", "0"],
        ["a,b", "9"],
    ]


def test_hostile_ids_through_the_batch_stages(tmp_path):
    """problems -> vote -> submission with every hostile id: one row each, in order, the
    CSV read back as written."""
    rows = [(pid, "What is 1 + 1?", 2) for pid in HOSTILE_IDS]
    problems.normalize(write_csv(tmp_path / "p.csv", rows), tmp_path / "problems.parquet")
    ids = [r["problem_id"] for r in read_table(tmp_path / "problems.parquet", PROBLEMS).to_pylist()]
    traces = [
        {
            "trace_id": f"{pid}:{s}",
            "problem_id": pid,
            "sample": s,
            "seed": s,
            "source": "generate",
            "answer": "2",
            "answer_int": 2,
            "finish_reason": "stop",
        }
        for pid in ids
        for s in range(2)
    ]
    write_table(traces, tmp_path / "traces.parquet", TRACES)
    write_table([], tmp_path / "executions.parquet", EXECUTIONS)
    vote(
        tmp_path / "problems.parquet",
        [tmp_path / "traces.parquet"],
        [tmp_path / "executions.parquet"],
        tmp_path / "votes.parquet",
        None,
    )
    out = tmp_path / "submission.csv"
    assert write_submission(tmp_path / "problems.parquet", tmp_path / "votes.parquet", out) == 0
    got = list(csv.reader(io.StringIO(out.read_text())))
    assert got == [["id", "answer"]] + [[pid, "2"] for pid in ids]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "p.csv",
            "problems.parquet",
            "traces.parquet",
            "executions.parquet",
            "votes.parquet",
            "submission.csv",
        ]
    )


def test_samples_never_started_never_vote_nor_count_as_wrong(tmp_path):
    write_table(
        [{"problem_id": "p", "problem": "q", "answer": 7}], tmp_path / "p.parquet", PROBLEMS
    )
    traces = [
        {
            "trace_id": f"p:{s}",
            "problem_id": "p",
            "sample": s,
            "seed": s,
            "source": "generate",
            "answer_int": a,
            "finish_reason": r,
        }
        for s, (a, r) in enumerate(
            [(7, "stop"), (7, "early_stop"), (None, "not_started"), (None, "not_started")]
        )
    ]
    write_table(traces, tmp_path / "t.parquet", TRACES)
    write_table([], tmp_path / "e.parquet", EXECUTIONS)
    from aimo.vote import VoteSettings

    table = vote_table(
        tmp_path / "p.parquet",
        [tmp_path / "t.parquet"],
        [tmp_path / "e.parquet"],
        VoteSettings(count_cancelled=True),
        strategies=["majority"],
    )
    assert table.to_pylist()[0]["answer"] == 7
    from aimo.evaluate import evaluate

    res = evaluate(
        tmp_path / "p.parquet",
        [str(tmp_path / "t.parquet")],
        [str(tmp_path / "e.parquet")],
        tmp_path / "eval",
        ks=[1],
        n_subsets=10,
        settings=VoteSettings(count_cancelled=True),
    )
    metrics = read_table(tmp_path / "eval/metrics.parquet", METRICS).to_pylist()
    pass1 = [m for m in metrics if m["curve"] == "pass" and m["k"] == 1]
    assert pass1 and pass1[0]["accuracy"] == 1.0, (pass1, res)  # 2 of 2 started samples right


def test_a_shard_from_before_the_thinking_columns_reads_them_as_null(tmp_path):
    """Columns added later (schemas.ADDED) read as nulls from an older shard; any other
    missing column is still an error naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aimo.schemas import ADDED

    row = tir.row(tir.Trace(tir.Request("p:0", "p", 0, 1, []), "prompt", text="\\boxed{7}"))
    old = pa.Table.from_pylist([row], schema=TRACES)
    old = old.drop_columns(list(ADDED))
    pq.write_table(old, tmp_path / "old.parquet")
    table = read_table(tmp_path / "old.parquet", TRACES)
    assert table.schema == TRACES and table.column("reasoning_tokens").to_pylist() == [None]
    assert table.column("answer_int").to_pylist() == [7]
    pq.write_table(old.drop_columns(["answer"]), tmp_path / "older.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['answer'\]"):
        read_table(tmp_path / "older.parquet", TRACES)
