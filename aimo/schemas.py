"""Arrow schemas of every table the workflow writes, defined once.

Stages import their schema from here; nothing else declares columns. A `trace` is one model
solution (a generated sample, a reflexion repair or a critique); an `execution` is the
sandbox's fresh re-run of one trace's code.
"""
import pyarrow as pa

PROBLEMS = pa.schema([
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("problem", pa.string(), nullable=False),
    pa.field("answer", pa.int64()),  # null when unknown
])

CODE_BLOCK = pa.struct([
    pa.field("code", pa.string()),
    pa.field("output", pa.string()),
    pa.field("status", pa.string()),  # a sandbox status: ok, error, timeout, memory, ...
    pa.field("wall_s", pa.float64()),
])

TRACES = pa.schema([
    pa.field("trace_id", pa.string(), nullable=False),  # problem:sample[:rN|:c]
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("sample", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # generate | reflexion | critique
    pa.field("parent_id", pa.string()),  # the trace this one repairs or reviews
    pa.field("attempt", pa.int32()),  # 0 for generate, 1.. for reflexion, 1 for critique
    pa.field("prompt", pa.string()),
    pa.field("text", pa.string()),  # the completion, real code outputs included
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
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
])

# Why a trace ended. FINISHED: on its own (the model stopped, its budget or the context ran
# out, its code blocks were used up, its prompt did not fit the context); CANCELLED: by a
# per-problem policy of the scheduler (enough answers agreed; the problem's deadline passed).
FINISHED = ("stop", "length", "max_rounds", "prompt_too_long")
CANCELLED = ("early_stop", "deadline")

EXECUTIONS = pa.schema([
    pa.field("trace_id", pa.string(), nullable=False),
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("exec_status", pa.string(), nullable=False),  # ok | error | timeout | ... | no_code
    pa.field("exec_output", pa.string()),  # output of the last block
    pa.field("exec_error", pa.string()),
    pa.field("printed_int", pa.int64()),  # last integer printed by the last block
    pa.field("agrees", pa.bool_()),  # printed_int equals the trace's answer_int
    pa.field("n_code_calls", pa.int32()),
    pa.field("n_code_errors", pa.int32()),
    pa.field("n_code_timeouts", pa.int32()),
    pa.field("exec_s", pa.float64()),
])

VOTES = pa.schema([
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("strategy", pa.string(), nullable=False),
    pa.field("answer", pa.int64()),
    pa.field("score", pa.float64()),
    pa.field("votes", pa.int64()),
    pa.field("runner_up", pa.int64()),
    pa.field("runner_up_score", pa.float64()),
    pa.field("margin", pa.float64()),
])
