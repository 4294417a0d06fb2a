rule generate:
    input:
        problems=rules.problems.output.problems,
        model=model_dir(),
    output:
        shard=shard("generate"),
    log:
        "logs/generate/shard-{shard}.log",
    benchmark:
        "benchmarks/generate/shard-{shard}.tsv"
    conda:
        "../envs/engine.yaml"
    threads: 2
    resources:
        mem_mb=engine_job_mem_mb("generate"),
        runtime=engine_runtime("generate"),
        gpu=ENGINE_GPUS,
    params:
        generate=generate_params(),
    script:
        "../scripts/generate.py"
