"""A real one-node SLURM cluster: jobs go through sbatch, and the pipeline's results equal a local run's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from cluster.harness import PROFILES, SLURM_ARGS, env, load_config, snakemake

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


@pytest.mark.slow
def test_scancelled_pretrain_resumes_from_checkpoint_with_same_weights(slurm_cluster, tmp_path):
    """A pretraining job cancelled with `scancel` resumes from its last checkpoint when rerun,
    and ends with the same weights as an uninterrupted local run."""
    import shutil
    import time

    import torch
    from safetensors.torch import load_file

    from cluster.harness import snakemake_cmd
    from ecoeval.io import read_metadata

    cfg = load_config("faults")
    cfg["pretrain"].update(max_steps=1000, checkpoint_every=25, log_every=25)
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    snakemake(cut, "tokenize", config=cfg)
    shutil.copytree(cut, whole, symlinks=True)

    proc = subprocess.Popen(snakemake_cmd(cut, "pretrain", *SLURM_ARGS, "--retries", "0", config=cfg, profile="slurm"),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    meta = cut / "results" / "e1" / "work" / "pretrain" / "checkpoint" / "meta.json"
    deadline = time.time() + 900
    while not meta.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not meta.is_file():
        proc.kill()
        pytest.fail(f"no checkpoint appeared before the job ended:\n{proc.communicate()[0][-4000:]}")
    jobs = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout.splitlines()
    pretrain_jobs = [line.split()[0] for line in jobs if "run_pretrain" in line]
    assert pretrain_jobs, f"pretrain job not in squeue: {jobs}"
    subprocess.run(["scancel", *pretrain_jobs], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, "snakemake should report the cancelled job"
    assert not (cut / "results" / "e1" / "pretrain" / "model").exists()

    snakemake(cut, "pretrain", *SLURM_ARGS, config=cfg, profile="slurm", timeout=1200)
    snakemake(whole, "pretrain", config=cfg, timeout=1200)
    resumed = read_metadata(cut / "results" / "e1" / "pretrain" / "log.parquet")["resumed_from_step"]
    assert 0 < resumed < 1000, resumed
    a = load_file(cut / "results" / "e1" / "pretrain" / "model" / "model.safetensors")
    b = load_file(whole / "results" / "e1" / "pretrain" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
