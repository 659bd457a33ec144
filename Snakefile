# kdad: datasets → expert hints → train one model per (dataset, protocol, category, model, seed)
#       → evaluate every variant → tidy results/*.csv → report/ tables and figures.
# Default: `snakemake --cores all` (config/config.yaml); the paper: `--configfile config/paper.yaml`;
# `--config key=value` overrides either (README: usage).
from snakemake.utils import min_version, validate

min_version("8.0")

# the default config, unless --configfile names another (which then replaces it, not merges into it)
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# kdad's strict reading first (duplicate YAML keys, `--config` texts such as seeds=[0,1] → numbers)
from kdad.experiment import workflow_config

config.update(workflow_config(config, workflow.overwrite_configfiles or ["config/config.yaml"]))
validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
