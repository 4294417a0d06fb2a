"""Arrow schemas of every table the workflow writes, defined once.

Stages import their schema from here; nothing else declares columns. A `trace` is one model
solution (a generated sample, a reflexion repair or a critique); an `execution` is the
sandbox's fresh re-run of one trace's code.
"""

from enum import StrEnum

import pyarrow as pa

PROBLEMS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("answer", pa.int64()),  # null when unknown
    ]
)

CODE_BLOCK = pa.struct(
    [
        pa.field("code", pa.string()),
        pa.field("output", pa.string()),
        pa.field("status", pa.string()),  # a sandbox status: ok, error, timeout, memory, ...
        pa.field("wall_s", pa.float64()),
    ]
)

TRACES = pa.schema(
    [
        pa.field("trace_id", pa.string(), nullable=False),  # problem:sample[:rN|:c]
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # generate | reflexion | critique
        pa.field("parent_id", pa.string()),  # the trace this one repairs or reviews
        pa.field("attempt", pa.int32()),  # 0 for generate, 1.. for reflexion, 1 for critique
        pa.field("prompt", pa.string()),
        pa.field("text", pa.string()),  # the completion, real code outputs included
        # a thinking channel (tir.think_end): where the final text starts in `text` (null: no
        # channel, or the trace never left its thinking) and the tokens up to it
        pa.field("final_start", pa.int32()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("reasoning_tokens", pa.int32()),
        pa.field("code_blocks", pa.list_(CODE_BLOCK)),
        pa.field("n_code_calls", pa.int32()),
        pa.field("n_code_errors", pa.int32()),
        pa.field("n_code_timeouts", pa.int32()),
        pa.field("exec_s", pa.float64()),
        pa.field("finish_reason", pa.string()),  # one of FINISHED or CANCELLED
        pa.field("answer", pa.string()),  # extracted, as written
        pa.field("answer_int", pa.int64()),  # null unless an integer
        pa.field("mean_logprob", pa.float64()),  # mean log-probability of the sampled tokens
        # mean entropy (nats) of the engine's top-k distribution over the sampled tokens, and over
        # the last `sampling.tail_tokens` of them before the final answer; null when not asked for
        pa.field("mean_entropy", pa.float64()),
        pa.field("tail_entropy", pa.float64()),
        pa.field("changed", pa.bool_()),  # critique: did the answer change
        pa.field("round_tokens", pa.list_(pa.int32())),  # completion tokens of each engine round
        # token confidence (DeepConf: minus the mean top-k log-probability; aimo.tir.Confidence):
        # the lowest window mean, the mean of the lowest 10% of windows, the mean over the last
        # `sampling.tail_tokens`, and the window means themselves (one every
        # `sampling.conf_stride` tokens from `sampling.conf_window` on); null when not asked for
        pa.field("min_conf", pa.float64()),
        pa.field("bottom_conf", pa.float64()),
        pa.field("tail_conf", pa.float64()),
        pa.field("window_conf", pa.list_(pa.float32())),
    ]
)

# Columns added after shards were first written, all nullable: a table from before them reads
# with them null (aimo.tables.read_table) rather than failing.
ADDED = ("final_start", "reasoning_tokens")

# Columns (and struct fields) that hold measured seconds: a rerun on the same inputs gives the
# same tables except these (the reproducibility guarantee, checked by .ci/slurm.sh).
TIMING = ("exec_s", "wall_s")


# Why a trace ended. FINISHED: on its own (the model stopped, its budget or the context ran
# out, its code blocks were used up, its prompt did not fit the context); CANCELLED: by a
# per-problem policy of the scheduler (enough answers agreed; the problem's deadline passed; its
# window confidence fell below the problem's threshold; a stopping rule was met before it
# started, so it has no tokens).
class Finish(StrEnum):
    """A trace's end, the finish_reason column (a trace still open has none)."""

    STOP = "stop"
    LENGTH = "length"
    MAX_ROUNDS = "max_rounds"
    PROMPT_TOO_LONG = "prompt_too_long"
    EARLY_STOP = "early_stop"
    DEADLINE = "deadline"
    PRUNED = "pruned"
    NOT_STARTED = "not_started"


FINISHED = tuple(map(str, list(Finish)[:4]))
CANCELLED = tuple(map(str, list(Finish)[4:]))

EXECUTIONS = pa.schema(
    [
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field(
            "exec_status", pa.string(), nullable=False
        ),  # ok | error | timeout | ... | no_code
        pa.field("exec_output", pa.string()),  # output of the last block
        pa.field("exec_error", pa.string()),
        pa.field("printed_int", pa.int64()),  # last integer printed by the last block
        pa.field("agrees", pa.bool_()),  # printed_int equals the trace's answer_int
        pa.field("n_code_calls", pa.int32()),
        pa.field("n_code_errors", pa.int32()),
        pa.field("n_code_timeouts", pa.int32()),
        pa.field("exec_s", pa.float64()),
    ]
)

VOTES = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("answer", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("votes", pa.int64()),
        pa.field("runner_up", pa.int64()),
        pa.field("runner_up_score", pa.float64()),
        pa.field("runner_up_votes", pa.int64()),  # how a tie of scores was broken
        pa.field("margin", pa.float64()),
    ]
)

# The evaluation's tables (aimo/evaluate.py). METRICS: one row per (strategy, k, curve): the
# at-k curve over random k-subsets of the generate samples ("subset"), pass@k ("pass"), and the
# vote with every candidate ("full", k = N; strategy "pass@k" there: some candidate is right)
# with its bootstrap interval over problems (lo, hi; null elsewhere).
METRICS = pa.schema(
    [
        pa.field("strategy", pa.string(), nullable=False),  # a vote strategy, or "pass@k"
        pa.field("k", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64()),
        pa.field("curve", pa.string(), nullable=False),  # subset | pass | full
        pa.field("tokens", pa.float64()),  # completion tokens spent (expected, for subsets)
        pa.field("n_problems", pa.int64()),
        pa.field("lo", pa.float64()),  # full: the 95% bootstrap interval of the accuracy
        pa.field("hi", pa.float64()),
    ]
)


def per_problem_schema(strategies) -> pa.Schema:
    """The evaluation's per-problem table: counts, the answer distribution, and per strategy
    its voted answer and whether it is right."""
    fields = [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("answer", pa.int64()),  # the correct answer (null when unknown)
        pa.field("n_traces", pa.int64()),
        pa.field("n_generate", pa.int64()),
        pa.field("n_valid", pa.int64()),  # candidates with an answer in [0, 99999]
        pa.field("n_correct", pa.int64()),  # candidates whose answer is the correct one
        pa.field("distribution", pa.string()),  # "answer:count, ..." by count, top 10
        pa.field(
            "correct_rank", pa.int64()
        ),  # 1 = the submission strategy's winner; null if absent
        pa.field("completion_tokens", pa.int64()),
    ]
    for s in strategies:
        fields.append(pa.field(f"voted_{s}", pa.int64()))
        fields.append(pa.field(f"correct_{s}", pa.bool_()))
    return pa.schema(fields)


# Fine-tuning: a chat message, and the sft_data stage's checked training rows.
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

SFT_DATA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),  # hash of the normalised problem
        pa.field("source_row", pa.int64(), nullable=False),  # 0-based row (line) of the export
        pa.field("split", pa.string(), nullable=False),  # train | validation
        pa.field("problem", pa.string(), nullable=False),
        pa.field("solution", pa.string(), nullable=False),  # normalised: the assistant turn
        pa.field("answer", pa.string()),  # the boxed final answer, as written
        pa.field("answer_int", pa.int64()),  # null unless an integer that fits int64
        pa.field("n_code_blocks", pa.int32()),
        pa.field("messages", pa.list_(MESSAGE)),  # system, user, assistant
    ]
)


# Status words, each spelled once. A code block's status is the sandbox's (re-exported here);
# an execution row's exec_status is one of those or NO_CODE (a trace without code); NOT_RUN
# marks a block rebuilt from a trace's text that nothing has run yet. (Imported here, at the
# end, so that this block stays one piece; the sandbox imports no other aimo module.)
from aimo.sandbox import ERROR, KILLED, MEMORY, OK, OUTPUT_LIMIT, TIMEOUT  # noqa: E402, F401
from aimo.sandbox import STATUSES as SANDBOX_STATUSES  # noqa: E402

NO_CODE = "no_code"
NOT_RUN = "not_run"
EXEC_STATUSES = SANDBOX_STATUSES + (NO_CODE,)
