"""aimo: a test-time-compute math-olympiad solver as a Snakemake workflow.

Layers (imports go downward only): answers, prompts, sandbox, schemas, tables, problems at
the bottom; engine and tir above them; the stage modules (generate, execute, reflexion,
critique, vote, submission, evaluate, model, sft) on top, called by scripts/.
"""
from aimo.answers import extract_answer, to_integer

__all__ = ["extract_answer", "to_integer"]
