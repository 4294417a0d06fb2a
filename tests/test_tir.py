from aimo import prompts, tir
from aimo.generate import shard_requests


def test_last_code_block():
    text = "Let me compute.\n```python\nx = 1\nprint(x)\n```\nok\n```python\nprint(2)\n```\n"
    assert tir.last_code_block(text) == "print(2)"
    assert tir.last_code_block("```python\nprint(3)\n") == "print(3)"  # cut by the stop fence
    assert tir.last_code_block("no code here") is None
    assert tir.last_code_block("```python\n\n```") is None


def test_seeds_are_stable_distinct_and_independent_of_n():
    problems = [{"problem_id": "a", "problem": "p"}, {"problem_id": "b", "problem": "q"}]
    first = shard_requests(problems, 1, 2, seed=5)
    assert [r.sample for r in first] == [2, 3, 2, 3]
    assert len({r.seed for r in first}) == 4
    again = shard_requests(problems, 1, 2, seed=5)
    assert [r.seed for r in first] == [r.seed for r in again]
    assert [r.seed for r in shard_requests(problems, 1, 2, seed=6)] != [r.seed for r in first]
    assert first[0].trace_id == "a:2" and first[0].messages == prompts.tir_messages("p")


def test_output_block_is_fenced():
    assert prompts.output_block("42\n") == "```output\n42\n```\n"
