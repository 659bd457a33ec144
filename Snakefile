# kdad: datasets → expert hints → one run per (dataset, protocol, category, variant, seed)
#       → tidy results/*.csv → report/ tables and figures.
# Default: `snakemake --cores all` (config/config.yaml); the paper: `--configfile config/paper.yaml`.
from snakemake.utils import min_version, validate

min_version("8.0")

if not config:  # a --configfile replaces the default instead of being merged into it
    configfile: "config/config.yaml"

validate(config, "config/schema.yaml")

include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
