rule reflexion:
    input:
        problems=rules.problems.output.problems,
        traces=rules.generate.output.shard,
        executions=shard("generate", executions=True),
        model=model_dir(),
    output:
        shard="results/reflexion/shard-{shard}.parquet",
    log:
        "logs/reflexion/shard-{shard}.log",
    benchmark:
        "benchmarks/reflexion/shard-{shard}.tsv"
    conda:
        "../envs/engine.yaml"
    threads: 2
    resources:
        mem_mb=engine_job_mem_mb("reflexion"),
        runtime=engine_runtime("reflexion"),
        gpu=ENGINE_GPUS,
    params:
        generate=generate_params(),
        reflexion=config["reflexion"],
    script:
        "../scripts/reflexion.py"
