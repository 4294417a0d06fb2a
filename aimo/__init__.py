"""aimo: a test-time-compute math-olympiad solver as a Snakemake workflow.

Layers (imports go downward only): answers, prompts, sandbox, schemas, tables, problems,
curves, config at the bottom; engine, tir, executions (the execution rows), report, model
above them; scheduler and solver (what the
engine stages share) next; the stage modules (generate, execute, reflexion, critique, vote,
submission, evaluate, sft_data, sft) and the online run on top, called by scripts/ and
main.py.
"""

from aimo.answers import extract_answer, to_integer

__all__ = ["extract_answer", "to_integer"]
