"""Real model outputs (22 DeepSeek-R1-Distill-style traces on AIMO2-style problems): the final
answers our extraction reads must be the ones the data set recorded (`eventual_answer`).

The rest of the real-data path (sandbox execution of their code, the vote, the evaluation) needs
the sandbox and is covered elsewhere."""

import json
from pathlib import Path

import pytest

from aimo.answers import answer_int64, extract_answer, in_range, to_integer

pytestmark = pytest.mark.needs("unit")

TRACES = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "tir_traces_aimo2_r1distill.jsonl"
)


@pytest.fixture(scope="module")
def traces():
    if not TRACES.is_file():
        pytest.skip(f"shared data not found at {TRACES} (expected ../shared/data beside the repo)")
    return [
        json.loads(line) for line in TRACES.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def test_extracted_answers_match_eventual_answer(traces):
    assert len(traces) == 22
    matches = [
        t["id"]
        for t in traces
        if extract_answer(t["completion"]) == str(t["eventual_answer"]).strip()
    ]
    assert len(matches) == 22, sorted({t["id"] for t in traces} - set(matches))


def test_integer_values_and_range(traces):
    for t in traces:
        value = to_integer(extract_answer(t["completion"]))
        assert value == int(t["eventual_answer"]), t["id"]
        # one trace boxes a 100-digit number: exact as a Python int, NULL in an int64 column
        if len(str(value)) > 18:
            assert answer_int64(extract_answer(t["completion"])) is None
            assert not in_range(value)
    right = sum(to_integer(extract_answer(t["completion"])) == t["answer"] for t in traces)
    assert right == 18  # 4 traces end on a wrong answer (a check on the data, not on us)
