# ecoeval: pretrain and finetune transformer LMs; measure energy, carbon, cost and fairness.
# Stage targets: data, tokenize, pretrain, finetune, energy, carbon, fairness, report.


# The embedded default, unless the command line names config files (--configfile): then
# those alone are the config, so another config's experiments are not mixed into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/tokenize.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/energy.smk"
include: "rules/carbon.smk"
include: "rules/fairness.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),


rule data:
    input:
        per_experiment(
            "data/pretrain.parquet", "data/classify.parquet", "data/probe.parquet"
        ),


rule tokenize:
    input:
        per_experiment("tokens/pretrain.parquet", "tokens/classify.parquet"),


rule pretrain:
    input:
        per_experiment("pretrain/model", "pretrain/metrics.parquet"),


rule finetune:
    input:
        per_experiment("finetune/model", "finetune/metrics.parquet"),


rule energy:
    input:
        per_experiment("energy/summary.parquet"),


rule carbon:
    input:
        per_experiment("carbon/carbon.parquet"),


rule fairness:
    input:
        per_experiment("fairness/intrinsic.parquet", "fairness/extrinsic.parquet"),


rule report:
    input:
        report_outputs(),


# Never lose results (workflow/ecoeval/safety.py): snapshot finished results before any job
# runs; if the run fails, put back those that Snakemake removed; print the stages' errors.
import time as _time
from ecoeval import safety as _safety

_RUN_STARTED = _time.time()


onstart:
    try:
        _safety.on_start(RESULTS, workflow.persistence.path)
    except EcoevalError as exc:
        sys.stderr.write(f"ecoeval: error: {exc}\n")
        sys.exit(2)


onsuccess:
    _safety.on_success(RESULTS, workflow.persistence.path)


onerror:
    _restored = _safety.on_error(RESULTS, workflow.persistence.path)
    if _restored:
        sys.stderr.write(
            f"ecoeval: the run failed; {len(_restored)} earlier results it had removed were put back\n"
        )
    for _line in _safety.failed_job_errors(RESULTS, _RUN_STARTED):
        sys.stderr.write(_line + "\n")
