"""aimo: a test-time-compute math-olympiad solver as a Snakemake workflow.

Layers (imports go downward only): answers, prompts, sandbox, schemas, tables, problems,
curves at the bottom; engine, tir, executions (the execution rows), report, model above them;
scheduler and solver (what the engine stages share) next; the stage modules (generate,
execute, reflexion, critique, vote, submission, evaluate, inspector, sft_data, sft) and
config (it builds the vote's settings to check them) on top, with the online run, called by
scripts/, the Snakefile and main.py.
"""

from aimo.answers import extract_answer, to_integer

__all__ = ["extract_answer", "to_integer"]
