"""End to end: the real pipeline through Snakemake on the tiny config, reruns, lint and format."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_helpers import REPO, TINY, copy_run, snakemake


def jobs_planned(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in the 'Job stats' table of a dry run."""
    names, in_table = set(), False
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                in_table = False
                continue
            if not set(parts[0]) <= {"-"}:
                names.add(parts[0])
    return names


@pytest.fixture()
def pipeline_run(tiny_pipeline):
    return tiny_pipeline


@pytest.mark.slow
def test_full_pipeline_outputs(pipeline_run):
    res = pipeline_run / "results"
    summary = pq.read_table(res / "report" / "summary.parquet").to_pandas()
    assert sorted(summary["experiment"]) == ["balanced", "skewed"]
    assert (res / "report" / "report.html").stat().st_size > 1000
    for exp in ("skewed", "balanced"):
        d = res / exp
        for rel in (
            "data/pretrain.parquet", "data/classify.parquet", "data/probe.parquet", "data/provenance.json",
            "tokens/pretrain.parquet", "tokens/classify.parquet", "tokenizer/tokenizer.json",
            "pretrain/model/model.safetensors", "pretrain/log.parquet", "pretrain/metrics.parquet",
            "finetune/model/model.safetensors", "finetune/metrics.parquet", "finetune/predictions.parquet",
            "energy/summary.parquet", "carbon/carbon.parquet", "fairness/intrinsic.parquet",
            "fairness/extrinsic.parquet", "fairness/items.parquet",
        ):
            assert (d / rel).exists(), rel
        for stage in ("download", "tokenize", "pretrain", "finetune", "energy", "carbon", "fairness"):
            assert (d / "logs" / f"{stage}.log").exists()
            assert (d / "benchmarks" / f"{stage}.tsv").exists()
        log = pq.read_table(d / "pretrain" / "log.parquet").to_pandas()
        assert log["step"].max() == 20
        energy = pq.read_table(d / "energy" / "summary.parquet").to_pandas()
        assert set(energy["stage"]) >= {"download", "tokenize", "pretrain", "finetune"}
        assert (energy["energy_j"] > 0).any()
        assert energy["method"].notna().all()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(pipeline_run):
    proc = snakemake(pipeline_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


@pytest.mark.slow
def test_finetune_change_reruns_finetune_not_pretrain(pipeline_run, tmp_path):
    pipeline_run = copy_run(pipeline_run, tmp_path / "run")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["finetune"]["learning_rate"] = 0.001
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(pipeline_run, "-n", configfile=changed))
    assert "run_finetune" in planned and "run_fairness" in planned and "run_report" in planned
    assert not planned & {"run_download", "run_tokenize", "run_pretrain"}, planned
    model = pipeline_run / "results" / "skewed" / "pretrain" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    snakemake(pipeline_run, "--until", "run_finetune", configfile=changed)
    assert model.stat().st_mtime_ns == before


@pytest.mark.slow
def test_data_and_tokenize_are_byte_identical_across_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        w.mkdir()
        snakemake(w, "tokenize")
    files = sorted(p.relative_to(a) for p in (a / "results").glob("*/*/*.parquet"))
    assert len(files) >= 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    tok = sorted(p.relative_to(a) for p in (a / "results").glob("*/tokenizer/*"))
    for rel in tok:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_stage_target_dry_runs_only_its_stages(tmp_path):
    planned = jobs_planned(snakemake(tmp_path, "-n", "pretrain"))
    assert planned == {"run_download", "run_tokenize", "run_pretrain", "pretrain"}


def test_large_grid_plans_in_batches(tmp_path):
    """docs/cluster.md: a large grid is planned and run in batches of the report's inputs
    (`--batch run_report=i/n`); a batch plans only its share of the experiments, and the
    report waits for the last batch."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"] = {f"e{i}": {"seed": i} for i in range(4)}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--batch", "run_report=1/2", configfile=path)
    out = proc.stdout
    planned = {(m.group(1), m.group(2)) for m in re.finditer(r"rule (run_\w+):.*?wildcards: experiment=(\S+)", out, re.S)}
    experiments = {e for _, e in planned}
    assert len(experiments) == 2, experiments
    assert {r for r, _ in planned} == {f"run_{s}" for s in
                                       ("download", "tokenize", "pretrain", "finetune", "fairness", "energy", "carbon")}
    assert "rule run_report:" not in out
    assert "Considering only batch 1/2" in out + proc.stderr


def test_per_experiment_and_shared_resources_reach_the_jobs(tmp_path):
    """Resources that differ between experiments are looked up per job; shared ones are
    plain values (planning a large grid evaluates nothing per job). Both reach the jobs."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"]["skewed"]["resources"] = {"pretrain": {"mem_mb": 3210, "runtime": 77}}
    cfg["resources"] = {"finetune": {"mem_mb": 2345}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "pretrain", "finetune", configfile=path).stdout
    jobs = {}
    for block in out.split("rule ")[1:]:
        name = block.split(":", 1)[0]
        exp = re.search(r"wildcards: experiment=(\S+)", block)
        res = re.search(r"resources: (.*)", block)
        if exp and res:
            jobs[(name, exp.group(1))] = res.group(1)
    assert "mem_mb=3210" in jobs[("run_pretrain", "skewed")] and "runtime=77" in jobs[("run_pretrain", "skewed")]
    assert "mem_mb=4000" in jobs[("run_pretrain", "balanced")]  # the schema default
    assert all("mem_mb=2345" in jobs[("run_finetune", e)] for e in ("skewed", "balanced"))


def test_snakemake_lint_is_clean(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr or (proc.stdout + proc.stderr).strip() == ""


def test_snakefmt_check_passes():
    exe = shutil.which("snakefmt")
    assert exe, "snakefmt is a test dependency (pip install -e '.[test]')"
    proc = subprocess.run([exe, "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_config_stops_snakemake_with_one_line(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"]["skewed"]["pretrain"] = {"hidden_size": 33}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.startswith("ecoeval: error:")]
    assert lines == [
        "ecoeval: error: config key experiments.skewed.pretrain.hidden_size: must be divisible by "
        "pretrain.num_heads (2), got 33"
    ]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_real_data_pipeline_on_local_copies(shared_data, tmp_path):
    """workflow/configs/real.yaml end to end on ../shared/data, with small step counts."""
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / "real.yaml").read_text())
    for kind in ("pretrain", "classify", "probe"):
        splits = cfg["data"][kind]["splits"]
        for split, path in splits.items():
            splits[split] = str((REPO / path).resolve())
    cfg["data"]["classify"]["max_rows"] = 600
    cfg["tokenize"]["vocab_size"] = 2000
    cfg["pretrain"].update(max_steps=20, warmup_steps=2)
    cfg["finetune"].update(max_steps=10, warmup_steps=1)
    cfg["fairness"].update(bootstrap=50, max_pairs=60)
    config = tmp_path / "real-small.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "w"
    work.mkdir()
    snakemake(work, configfile=config)
    res = work / "results" / "real"
    summary = pq.read_table(res / "report" / "summary.parquet").to_pandas()
    assert list(summary["experiment"]) == ["real"]
    prov = yaml.safe_load((res / "real" / "data" / "provenance.json").read_text())
    shas = {f["sha256"] for kind in ("pretrain", "classify", "probe") for f in prov[kind]["files"]}
    # the checksums ../shared/data/README.md lists for WikiText-2, SST-2 and CrowS-Pairs
    assert "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8" in shas
    assert "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338" in shas
    assert "dfb36986ce0502abbaf7055b9176da3d08d48e07df1251991b5dfbcbceab9d0c" in shas
    probe = pq.read_table(res / "real" / "data" / "probe.parquet").to_pandas()
    assert len(probe) == 1508 and probe["bias_type"].nunique() == 9
    intrinsic = pq.read_table(res / "real" / "fairness" / "intrinsic.parquet").to_pandas()
    crows = intrinsic[(intrinsic["metric"] == "crows_pairs") & (intrinsic["subset"] == "all")].iloc[0]
    assert crows["n"] == 60 and 0 <= crows["value"] <= 100
    classify = pq.read_table(res / "real" / "data" / "classify.parquet").to_pandas()
    assert set(classify["label"]) == {0, 1} and set(classify["split"]) == {"train", "test"}
