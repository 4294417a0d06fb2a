# Provide the base model as a local Hugging Face directory. Kept under resources/ (not
# results/) so that clearing results keeps it; rebuilt only when model.* changes.
rule model:
    output:
        model=directory(MODEL_DIR),
    log:
        "logs/model.log",
    benchmark:
        "benchmarks/model.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        mem_mb=engine_mem_mb,
        runtime=model_runtime,
    params:
        model=config["model"],
    script:
        "../scripts/model.py"
