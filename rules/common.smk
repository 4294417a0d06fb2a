# Shared helpers: shard list, shard paths, model directory, per-rule params, input functions.
# The resource functions are in resources.smk.
import os

from aimo.config import engine_params
from aimo.model import slug


# The jobs import the aimo package from this repository. In the project's venv it is installed
# as well, but under --sdm conda a job runs in an env of envs/ that holds only the dependencies,
# so the repository goes first on the PYTHONPATH that the jobs inherit (a cluster job parses
# this file again on its node). Snakemake drops PYTHONPATH from conda jobs unless told not to:
# the profiles set conda-not-block-search-path-envvars. (Set here, not asked of the user: so no
# `envvars:` directive.)
def repository_on_pythonpath():
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if workflow.basedir not in paths:
        os.environ.update(PYTHONPATH=os.pathsep.join([workflow.basedir, *paths]))


repository_on_pythonpath()


wildcard_constraints:
    shard=r"\d+",
    stage="generate|reflexion|critique",


# samples.n is a multiple of samples.shard_size (aimo.config.check, from the Snakefile)
SHARDS = list(range(config["samples"]["n"] // config["samples"]["shard_size"]))
MODEL_SLUG = slug(config["model"]["name"])
MODEL_DIR = f"resources/models/{MODEL_SLUG}"


def generate_params():
    """What a generate, reflexion or critique job depends on. samples.n is left out on
    purpose: raising N adds shards without invalidating the existing ones."""
    samples = {k: v for k, v in config["samples"].items() if k != "n"}
    return engine_params(config) | {"samples": samples}


def model_dir():
    """The model the generate stages use: the base model, or the fine-tuned one."""
    return rules.sft.output.merged if config["sft"]["enabled"] else rules.model.output.model


def shard(stage, executions=False):
    """The one spelling of a shard's path: shard {shard} of `stage`'s traces, or of their
    executions (`stage` may be the wildcard "{stage}")."""
    return f"results/{'execute/' if executions else ''}{stage}/shard-{{shard}}.parquet"


def shard_files(stage, executions=False):
    """Every shard of `stage`'s traces (or of their executions)."""
    return expand(shard(stage, executions), shard=SHARDS)


def voting_stages():
    """The stages whose traces vote: generate, plus reflexion and critique when enabled."""
    return ["generate"] + [s for s in ("reflexion", "critique") if config[s]["enabled"]]


def trace_files():
    """Every trace shard that votes."""
    return [f for s in voting_stages() for f in shard_files(s)]


def execution_files():
    """The executions of every trace shard that votes, in the order of trace_files()."""
    return [f for s in voting_stages() for f in shard_files(s, executions=True)]


def critique_inputs(kind):
    """The generate (and reflexion) traces or executions of one shard, for its critique."""
    stages = ["generate"] + (["reflexion"] if config["reflexion"]["enabled"] else [])
    return [shard(s, executions=kind == "executions") for s in stages]


def final_outputs():
    return ["results/submission.csv", "results/evaluate/report.md", "results/inspect"]
