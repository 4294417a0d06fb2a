# The aimo workflow: problems -> model -> generate -> execute -> reflexion -> critique -> vote
# -> submission -> evaluate. Only wiring here; the stages are in rules/, the logic in aimo/.
from snakemake.utils import min_version, validate

from aimo.config import check, check_moved

min_version("9.20")


configfile: "config.yaml"


check_moved(config)  # a key that moved names its new place, not a schema error
validate(config, "schemas/config.schema.yaml")
check(config)  # what the schema cannot relate: related keys, the vote settings


include: "rules/common.smk"
include: "rules/resources.smk"
include: "rules/problems.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/generate.smk"
include: "rules/execute.smk"
include: "rules/reflexion.smk"
include: "rules/critique.smk"
include: "rules/vote.smk"
include: "rules/submission.smk"
include: "rules/evaluate.smk"
include: "rules/inspect.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
