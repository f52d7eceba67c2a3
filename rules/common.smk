# Config loading and validation, experiments, paths. No stage logic lives here.
import inspect
import json
import os
import sys

from ecoeval import EcoevalError
from ecoeval.config import validate_experiments

try:
    CONFIG, EXPERIMENT_CONFIGS = validate_experiments(config)
except EcoevalError as exc:
    # one line naming the key path, then a non-zero exit (no Snakemake traceback)
    sys.stderr.write(f"ecoeval: error: {exc}\n")
    sys.exit(2)

RESULTS = CONFIG["results_dir"]
EXPERIMENTS = list(CONFIG["experiments"])
ENV = "../environment.yml"

# sections of the experiment config each stage depends on: a change there reruns the stage
STAGE_SECTIONS = {
    "download": ["seed", "data"],
    "tokenize": ["seed", "tokenize"],
    "pretrain": ["seed", "pretrain", "energy"],
    "finetune": ["seed", "finetune", "tokenize", "energy"],
    "energy": ["energy"],
    "carbon": ["carbon", "energy"],
    "fairness": ["seed", "fairness", "tokenize", "energy"],
    "report": ["carbon"],
}


wildcard_constraints:
    # the schema's pattern for experiment names (a plain pattern: an alternation of all
    # names would make matching O(experiments) per job)
    experiment=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def exp_path(path):
    """A path under one experiment's results folder, with the {experiment} wildcard."""
    return f"{RESULTS}/{{experiment}}/{path}"


def per_experiment(*paths):
    return [f"{RESULTS}/{e}/{p}" for e in EXPERIMENTS for p in paths]


def report_outputs():
    return [f"{RESULTS}/report/summary.parquet", f"{RESULTS}/report/report.html"]


def _signed(fn):
    """Snakemake inspects every input/params/resources function's signature for every job;
    a stored `__signature__` (PEP 362) answers that at once (a 1,000-experiment grid asks
    ~130,000 times)."""
    fn.__signature__ = inspect.signature(fn)
    return fn


def stage_params(stage):
    """The experiment's config sections `stage` depends on, as JSON (Snakemake reruns on change)."""

    def params(wildcards):
        cfg = EXPERIMENT_CONFIGS[wildcards.experiment]
        sub = {k: cfg[k] for k in STAGE_SECTIONS[stage]}
        sub["experiment"] = wildcards.experiment
        # scratch space that survives a failed or killed job (resumable checkpoints)
        sub["work_dir"] = f"{RESULTS}/{wildcards.experiment}/work/{stage}"
        return json.dumps(sub, sort_keys=True)

    return _signed(params)


def io_json(wildcards, input, output, threads):
    """Named inputs and outputs of a rule, and its threads, as JSON for `ecoeval stage`."""
    return json.dumps(
        {
            "input": dict(input.items()),
            "output": dict(output.items()),
            "threads": threads,
        },
        sort_keys=True,
    )


def log_path(stage):
    return f"{RESULTS}/{{experiment}}/logs/{stage}.log"


def bench_path(stage):
    return f"{RESULTS}/{{experiment}}/benchmarks/{stage}.tsv"


def _per_experiment(value_of):
    """A setting of a rule that may differ between experiments. The value itself when every
    experiment has the same one (Snakemake then evaluates nothing per job), else a function
    of the {experiment} wildcard."""
    values = {e: value_of(cfg) for e, cfg in EXPERIMENT_CONFIGS.items()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return _signed(lambda wildcards: values[wildcards.experiment])


def res(stage, key):
    """A rule's threads/mem_mb/runtime from the experiment's `resources` (base config for the report)."""
    if stage == "report":
        return CONFIG["resources"][stage][key]
    return _per_experiment(lambda cfg: cfg["resources"][stage][key])


def gpus(stage):
    """GPUs the training job asks the scheduler for (the same number torchrun starts)."""
    return _per_experiment(lambda cfg: cfg[stage]["gpus"])


def report_params(wildcards):
    """The report reads every experiment's results folder: their names, folders, order and
    the validated config (base + overrides; the report merges each experiment itself, which
    keeps this argument small for large grids)."""
    return json.dumps(
        {
            "experiments": {e: f"{RESULTS}/{e}" for e in EXPERIMENTS},
            "experiment_order": EXPERIMENTS,
            "results_dir": RESULTS,
            "config": CONFIG,
        },
        sort_keys=True,
    )


def local_data_files(wildcards):
    """Local files the download stage reads: a changed file reruns it; a missing one is the
    same one-line error the stage gives (Snakemake would otherwise keep earlier outputs).
    """
    data = EXPERIMENT_CONFIGS[wildcards.experiment]["data"]
    files = []
    for kind in ("pretrain", "classify", "probe"):
        if data[kind]["source"] != "local":
            continue
        for split, path in data[kind]["splits"].items():
            if not os.path.isfile(path):
                sys.stderr.write(
                    f"ecoeval: error: {path} (data.{kind}.splits.{split}): file not found\n"
                )
                sys.exit(2)
            files.append(path)
    return sorted(set(files))


def hourly_csvs(wildcards):
    """Hourly intensity files of the carbon scenarios: a changed file reruns carbon."""
    scenarios = EXPERIMENT_CONFIGS[wildcards.experiment]["carbon"]["scenarios"]
    return [s["hourly_csv"] for s in scenarios if s.get("mode") == "hourly"]


for _fn in (io_json, report_params, local_data_files, hourly_csvs):
    _signed(_fn)
