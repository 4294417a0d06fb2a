# Shared helpers: shard list, model directory, per-rule params and input functions.
import re

wildcard_constraints:
    shard=r"\d+",
    stage="generate|reflexion|critique",


if config["samples"]["n"] % config["samples"]["shard_size"]:
    raise ValueError(
        f"config samples.n={config['samples']['n']} is not a multiple of samples.shard_size="
        f"{config['samples']['shard_size']}: a shard always holds shard_size samples per problem"
    )

SHARDS = list(range(config["samples"]["n"] // config["samples"]["shard_size"]))
MODEL_SLUG = re.sub(r"[^\w.-]+", "--", config["model"]["name"])
MODEL_DIR = f"resources/models/{MODEL_SLUG}"


def generate_params():
    """What a generate, reflexion or critique job depends on. samples.n is left out on
    purpose: raising N adds shards without invalidating the existing ones."""
    samples = {k: v for k, v in config["samples"].items() if k != "n"}
    return {k: config[k] for k in ("model", "engine", "sampling", "tir", "sandbox")} | {
        "samples": samples
    }


def model_dir():
    """The model the generate stages use: the base model, or the fine-tuned one."""
    return "results/sft/merged" if config["sft"]["enabled"] else MODEL_DIR


def engine_mem_mb(wildcards=None, attempt=1):
    """Memory of an engine job, from the model's size in its name (e.g. '1.5b', '32B'):
    bf16 weights plus the KV cache and the sandbox."""
    found = re.search(r"(\d+(?:\.\d+)?)[bB]", config["model"]["name"])
    billions = float(found.group(1)) if found else 2.0
    return int((billions * 2 + 6) * 1024 * attempt)


def shard_files(stage):
    return expand(f"results/{stage}/shard-{{shard}}.parquet", shard=SHARDS)


def trace_files():
    """Every trace shard that votes: generate, plus reflexion and critique when enabled."""
    stages = ["generate"] + [s for s in ("reflexion", "critique") if config[s]["enabled"]]
    return [f for s in stages for f in shard_files(s)]


def execution_files():
    return [f.replace("results/", "results/execute/", 1) for f in trace_files()]


def critique_inputs(kind):
    """The generate (and reflexion) traces or executions of one shard, for its critique."""
    stages = ["generate"] + (["reflexion"] if config["reflexion"]["enabled"] else [])
    prefix = "results/execute/" if kind == "executions" else "results/"
    return [f"{prefix}{s}/shard-{{shard}}.parquet" for s in stages]


def final_outputs():
    return ["results/submission.csv", "results/evaluate/report.md"]
