# Fine-tuning: a NuminaMath-TIR export -> checked chat-format rows -> LoRA adapter and merged
# model. With sft.enabled the generate, reflexion and critique stages read results/sft/merged
# (model_dir() in common.smk); checkpoints under results/sft/checkpoints are not an output, so
# a restarted job resumes from them instead of Snakemake deleting them.


rule sft_data:
    input:
        data=config["sft"]["data"],
    output:
        data="results/sft/data.parquet",
    log:
        "logs/sft/data.log",
    benchmark:
        "benchmarks/sft/data.tsv"
    conda:
        "../envs/sft.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    params:
        sft_data={k: config["sft"][k] for k in ("val_fraction", "seed", "integer_answers")},
    script:
        "../scripts/sft_data.py"


rule sft:
    input:
        data=rules.sft_data.output.data,
        model=rules.model.output.model,
    output:
        adapter=directory("results/sft/adapter"),
        merged=directory("results/sft/merged"),
        train_log="results/sft/train_log.csv",
        loss_plot=report("results/sft/loss.png", category="Fine-tuning"),
    log:
        "logs/sft/train.log",
    benchmark:
        "benchmarks/sft/train.tsv"
    conda:
        "../envs/sft.yaml"
    # Locally Snakemake lowers this to --cores; on a cluster it is --cpus-per-task.
    threads: 8
    resources:
        # Twice an engine job's: fp32 weights on a CPU, and a second copy while merging.
        mem_mb=lambda wildcards, attempt: 2 * engine_mem_mb(wildcards, attempt),
        runtime=sft_runtime,
        gpu=1,
    params:
        # The data reach the rule as its input file; `enabled` only switches the stage on.
        sft={k: v for k, v in config["sft"].items() if k not in ("enabled", "data")},
        dtype=config["model"]["dtype"],
        checkpoints="results/sft/checkpoints",
    script:
        "../scripts/sft.py"
