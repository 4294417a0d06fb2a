import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aimo.problems import ProblemError, load, normalize
from aimo.schemas import PROBLEMS
from aimo.tables import file_mode, read_metadata, read_table

pytestmark = pytest.mark.needs("unit")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_jsonl_parquet_agree(tmp_path):
    csv = write(tmp_path, "p.csv", 'id,problem,answer\na,"What is 1+1, really?",2\nb,Hard one,\n')
    jsonl = write(
        tmp_path,
        "p.jsonl",
        json.dumps({"id": "a", "problem": "What is 1+1, really?", "answer": 2})
        + "\n"
        + json.dumps({"id": "b", "problem": "Hard one"})
        + "\n",
    )
    parquet = tmp_path / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "problem": ["What is 1+1, really?", "Hard one"],
                "answer": [2.0, float("nan")],
            }
        ),
        parquet,
    )
    expected = [
        {"problem_id": "a", "problem": "What is 1+1, really?", "answer": 2},
        {"problem_id": "b", "problem": "Hard one", "answer": None},
    ]
    for path in (csv, jsonl, parquet):
        assert load(path) == expected, path


def test_normalize_writes_schema_and_metadata(tmp_path):
    src = write(tmp_path, "p.csv", "id,problem\nx,Find 2+2.\n")
    out = tmp_path / "out" / "problems.parquet"
    assert normalize(src, out) == 1
    assert read_table(out, PROBLEMS).to_pylist() == [
        {"problem_id": "x", "problem": "Find 2+2.", "answer": None}
    ]
    assert read_metadata(out)["n_problems"] == 1
    # the mode a plain new file gets (not mkstemp's 0600), and no temporary file left beside it
    plain = tmp_path / "out" / "plain"
    plain.touch()
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == file_mode()
    assert sorted(p.name for p in out.parent.iterdir()) == ["plain", "problems.parquet"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,problem\na,one\na,two\n", "row 2, column 'id': duplicate id 'a' (first at row 1)"),
        ("id,problem\na,  \n", "row 1 (id 'a'), column 'problem': empty problem"),
        ("id,question\na,one\n", "row 1: missing column 'problem'"),
        ("id,problem,answer\na,one,3.5\n", "row 1, column 'answer': '3.5' is not an integer"),
        ("id,problem\n", "no problems"),
    ],
)
def test_bad_csv_names_row_and_column(tmp_path, text, message):
    with pytest.raises(ProblemError, match="p.csv: " + __import__("re").escape(message)):
        load(write(tmp_path, "p.csv", text))


def test_bad_encoding_names_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"id,problem\na,ok\nb,caf\xe9\n")
    with pytest.raises(ProblemError, match=r"p.csv: line 3: not valid UTF-8"):
        load(path)


def test_bad_json_and_format(tmp_path):
    with pytest.raises(ProblemError, match=r"row 2: not valid JSON"):
        load(write(tmp_path, "p.jsonl", '{"id": "a", "problem": "x"}\n{oops\n'))
    with pytest.raises(ProblemError, match=r"unsupported format '.txt'"):
        load(write(tmp_path, "p.txt", "x"))
    with pytest.raises(ProblemError, match="not found"):
        load(tmp_path / "missing.csv")
