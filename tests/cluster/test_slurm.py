"""A real one-node SLURM cluster: jobs go through sbatch, and the pipeline's results equal a local run's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from cluster.conftest import SLURM_ARGS
from cluster.harness import PROFILES, env, load_config, snakemake

pytestmark = pytest.mark.cluster

TWO_RULES = textwrap.dedent(
    """
    rule all:
        input: "b.txt"

    rule a:
        output: "a.txt"
        threads: 1
        resources: mem_mb=200, runtime=5
        shell: "scontrol show job -o $SLURM_JOB_ID > {output}"

    rule b:
        input: "a.txt"
        output: "b.txt"
        threads: 2
        resources: mem_mb=300, runtime=5
        shell: "cat {input} > {output}; scontrol show job -o $SLURM_JOB_ID >> {output}"
    """
)


def test_slurm_profile_submits_each_rule_as_a_job(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_RULES)
    cmd = [sys.executable, "-m", "snakemake", "-d", str(tmp_path), "-s", str(tmp_path / "Snakefile"),
           "--profile", str(PROFILES / "slurm"), *SLURM_ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # each line: `scontrol show job -o` of the job the rule ran in
    a, b = (dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            for line in (tmp_path / "b.txt").read_text().splitlines())
    assert a["JobId"] != b["JobId"] and a["Partition"] == "debug"
    # threads -> --cpus-per-task, mem_mb -> --mem, runtime -> --time (minutes)
    assert (a["CPUs/Task"], a["MinMemoryNode"], a["TimeLimit"]) == ("1", "200M", "00:05:00")
    assert (b["CPUs/Task"], b["MinMemoryNode"], b["TimeLimit"]) == ("2", "300M", "00:05:00")


# columns that hold measurements (time, power, energy, money) rather than computed results
MEASURED = ("wall", "time", "energy", "power", "kwh", "co2", "cost", "_j", "_w", "samples", "utilization")


def _deterministic(table):
    df = table.to_pandas()
    keep = [c for c in df.columns if not any(m in c.lower() for m in MEASURED)]
    df = df[keep]
    if "metric" in df.columns:  # long format: drop the measured rows
        df = df[~df["metric"].str.lower().str.contains("|".join(MEASURED))]
    return df.reset_index(drop=True)


@pytest.mark.slow
def test_pipeline_on_slurm_equals_local_run(slurm_cluster, tmp_path):
    cfg = load_config("faults")
    snakemake(tmp_path / "slurm", *SLURM_ARGS, config=cfg, profile="slurm", timeout=1200)
    snakemake(tmp_path / "local", config=cfg, profile="default", timeout=1200)
    a, b = tmp_path / "slurm" / "results", tmp_path / "local" / "results"
    assert (a / "report" / "report.html").is_file()
    exp = "e1"
    # data, tokens and the tokenizer: byte for byte
    for rel in ["data/pretrain.parquet", "data/classify.parquet", "data/probe.parquet",
                "tokens/pretrain.parquet", "tokens/classify.parquet", "tokenizer/tokenizer.json"]:
        assert (a / exp / rel).read_bytes() == (b / exp / rel).read_bytes(), rel
    # training, predictions, fairness and the summary: every column that is not a measurement
    for rel in ["pretrain/log.parquet", "pretrain/metrics.parquet", "finetune/log.parquet",
                "finetune/metrics.parquet", "finetune/predictions.parquet", "fairness/intrinsic.parquet",
                "fairness/extrinsic.parquet", "fairness/items.parquet"]:
        x, y = _deterministic(pq.read_table(a / exp / rel)), _deterministic(pq.read_table(b / exp / rel))
        assert list(x.columns) == list(y.columns) and len(x) == len(y) > 0, rel
        for col in x.columns:
            if x[col].dtype.kind == "f":
                np.testing.assert_allclose(x[col], y[col], rtol=1e-6, atol=1e-9, err_msg=f"{rel}:{col}")
            else:
                assert x[col].tolist() == y[col].tolist(), f"{rel}:{col}"
    sx = _deterministic(pq.read_table(a / "report" / "summary.parquet"))
    sy = _deterministic(pq.read_table(b / "report" / "summary.parquet"))
    assert sx.shape == sy.shape and sx.shape[0] == 1
    # every stage ran as a SLURM job: the plugin kept no failed-job logs and snakemake said so
    log = next((tmp_path / "slurm" / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    for rule in ("run_download", "run_tokenize", "run_pretrain", "run_finetune", "run_fairness",
                 "run_energy", "run_carbon", "run_report"):
        assert f"rule {rule}:" in log and "submitted with SLURM jobid" in log, rule
