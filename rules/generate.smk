rule generate:
    input:
        problems=rules.problems.output.problems,
        model=model_dir(),
    output:
        shard=shard("generate"),
    params:
        generate=generate_params(),
    log:
        "logs/generate/shard-{shard}.log",
    benchmark:
        "benchmarks/generate/shard-{shard}.tsv"
    threads: 2
    resources:
        mem_mb=engine_mem_mb,
        runtime=engine_runtime("generate"),
        gpu=1,
    conda:
        "../envs/engine.yaml"
    script:
        "../scripts/generate.py"
