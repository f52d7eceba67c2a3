"""Faults: a failed rerun loses no results, a killed run leaves nothing a rerun would accept.

- `Snapshot` (workflow/ecoeval/safety.py) on its own: hard links, metadata, interrupted snapshots.
- The same handlers under real Snakemake, on a two-rule workflow that fails on demand.
- The real pipeline: a failing rerun of the download stage keeps the earlier data; a pretrain
  job killed with SIGKILL in the middle of writing its outputs is redone by the rerun.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.harness import digest, env, error_lines, explain, load_config, snakemake, snakemake_cmd
from ecoeval import EcoevalError
from ecoeval.safety import SNAPSHOT, Snapshot, _is_temp, on_error, on_start


# --- Snapshot on its own --------------------------------------------------------------------
def _record(meta_root: Path, key: str, content: str) -> Path:
    path = meta_root / base64.urlsafe_b64encode(key.encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "results"
    (res / "e" / "data").mkdir(parents=True)
    (res / "e" / "data" / "a.parquet").write_bytes(b"A" * 100)
    (res / "e" / "model").mkdir()
    (res / "e" / "model" / "w.safetensors").write_bytes(b"W" * 50)
    (res / "e" / "model" / "config.json").write_text("{}")
    (res / "e" / "logs").mkdir()
    (res / "e" / "logs" / "download.log").write_text("old log")
    (res / "e" / "work" / "pretrain").mkdir(parents=True)
    (res / "e" / "work" / "pretrain" / "ckpt").write_text("c")
    persist = tmp_path / ".snakemake"
    _record(persist / "metadata", "results/e/data/a.parquet", '{"params": "old"}')
    _record(persist / "metadata", "results/e/model", '{"params": "old-model"}')
    (persist / "incomplete").mkdir(parents=True)
    return res, persist


def test_snapshot_hard_links_results_and_skips_logs_and_scratch(tree):
    res, persist = tree
    snap = Snapshot(res, persist)
    assert snap.take() == 2  # the parquet file and the model folder; not logs, not work/
    linked = res / SNAPSHOT / "files" / "e" / "data" / "a.parquet"
    assert linked.stat().st_ino == (res / "e" / "data" / "a.parquet").stat().st_ino
    assert not (res / SNAPSHOT / "files" / "e" / "logs").exists()
    assert not (res / SNAPSHOT / "files" / "e" / "work").exists()


def test_restore_puts_back_removed_results_with_their_metadata(tree):
    res, persist = tree
    snap = Snapshot(res, persist)
    snap.take()
    before = digest(res)
    # what Snakemake does to a failing job: outputs and metadata removed, incomplete marked
    import shutil

    shutil.rmtree(res / "e" / "model")
    (res / "e" / "data" / "a.parquet").unlink()
    for rec in (persist / "metadata").iterdir():
        rec.unlink()
    _record(persist / "incomplete", "results/e/model", "{}")
    assert sorted(snap.restore()) == ["e/data/a.parquet", "e/model"]
    assert digest(res) == before
    assert sorted(p.read_text() for p in (persist / "metadata").iterdir()) == ['{"params": "old"}', '{"params": "old-model"}']
    assert not any((persist / "incomplete").iterdir())


def test_restore_keeps_what_a_successful_job_rewrote(tree):
    res, persist = tree
    snap = Snapshot(res, persist)
    snap.take()
    new = res / "e" / "data" / "a.parquet"
    tmp = new.with_name(".a.parquet.x.tmp")
    tmp.write_bytes(b"NEW")
    os.replace(tmp, new)  # how ecoeval.io writes: a new inode
    assert snap.restore() == []
    assert new.read_bytes() == b"NEW"
    assert (res / SNAPSHOT / "files" / "e" / "data" / "a.parquet").read_bytes() == b"A" * 100


def test_restore_replaces_a_result_marked_incomplete(tree):
    res, persist = tree
    snap = Snapshot(res, persist)
    snap.take()
    (res / "e" / "model" / "w.safetensors").unlink()
    _record(persist / "incomplete", "results/e/model", "{}")  # a killed job's leftover
    assert snap.restore() == ["e/model"]
    assert (res / "e" / "model" / "w.safetensors").read_bytes() == b"W" * 50


def test_interrupted_snapshot_is_never_used(tree):
    res, persist = tree
    snap = Snapshot(res, persist)
    snap.take()
    (res / SNAPSHOT / "manifest.json").unlink()  # killed before the manifest was written
    (res / "e" / "data" / "a.parquet").unlink()
    assert snap.restore() == []


def test_results_marked_incomplete_are_not_snapshotted(tree):
    res, persist = tree
    _record(persist / "incomplete", "results/e/data/a.parquet", "{}")
    assert Snapshot(res, persist).take() == 1


def test_stale_snapshot_of_a_killed_run_is_restored_at_next_start(tree):
    res, persist = tree
    Snapshot(res, persist).take()
    (res / "e" / "data" / "a.parquet").unlink()  # the killed run had removed it; no onerror ran
    on_start(res, persist)
    assert (res / "e" / "data" / "a.parquet").read_bytes() == b"A" * 100
    assert (res / SNAPSHOT / "manifest.json").is_file()  # and a fresh snapshot was taken
    assert on_error(res, persist) == []
    assert not (res / SNAPSHOT).exists()


def test_temp_names_are_those_of_ecoeval_io():
    assert _is_temp(".model.k3x9.tmp") and _is_temp(".log.parquet.ab_12.tmp") and _is_temp(".model.old")
    assert not _is_temp(".snakemake_timestamp") and not _is_temp("model.tmp") and not _is_temp(".tmpdir")


def test_start_sweeps_temp_names_left_by_killed_jobs(tree):
    res, persist = tree
    (res / "e" / ".model.k3x9.tmp").mkdir()
    (res / "e" / "data" / ".a.parquet.q1w2.tmp").write_bytes(b"half")
    on_start(res, persist)
    assert not list(res.rglob(".*.tmp"))
    assert (res / "e" / "data" / "a.parquet").is_file()


def test_unwritable_results_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EcoevalError, match=r"^config key results_dir: folder .*file/results is not writable"):
        Snapshot(blocker / "results", tmp_path / ".snakemake").take()


# --- the handlers under real Snakemake, on a small workflow that fails on demand -------------
TOY = textwrap.dedent(
    """
    import sys
    from ecoeval import safety

    R = config["results_dir"]

    rule all:
        input: f"{R}/x/a.txt", f"{R}/x/model", f"{R}/x/b.txt"

    rule a:
        output: a=f"{R}/x/a.txt", m=directory(f"{R}/x/model")
        params: val=config["val"]
        shell:
            "sleep {config[sleep]}; mkdir -p {output.m}.tmp && echo {params.val:q} > {output.m}.tmp/w"
            " && mv {output.m}.tmp {output.m} && test {params.val:q} != fail"
            " && echo {params.val:q} > {output.a}.tmp && mv {output.a}.tmp {output.a}"

    rule b:
        input: f"{R}/x/a.txt"
        output: f"{R}/x/b.txt"
        shell: "cat {input} > {output}.tmp && mv {output}.tmp {output}"

    rule c:
        output: f"{R}/y/c.txt"
        shell: "echo c > {output}"

    onstart:
        safety.on_start(R, workflow.persistence.path)
    onsuccess:
        safety.on_success(R, workflow.persistence.path)
    onerror:
        print("restored:", sorted(safety.on_error(R, workflow.persistence.path)), file=sys.stderr)
    """
)


def _toy(workdir: Path, *args: str, val: str, sleep: float = 0, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    (workdir / "Snakefile").write_text(TOY)
    cmd = [sys.executable, "-m", "snakemake", "-c1", "-d", str(workdir), "-s", str(workdir / "Snakefile"), *args,
           "--config", "results_dir=results", f"val={val}", f"sleep={sleep}"]
    if kw.get("background"):
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_failed_rerun_under_snakemake_keeps_earlier_results(tmp_path):
    assert _toy(tmp_path, val="one").returncode == 0
    before = digest(tmp_path / "results")
    failed = _toy(tmp_path, val="fail")  # params changed: Snakemake removes a's outputs, a fails
    assert failed.returncode != 0
    assert "restored: ['x/a.txt', 'x/model']" in failed.stderr
    assert digest(tmp_path / "results") == before
    assert not (tmp_path / "results" / SNAPSHOT).exists()
    # Snakemake sees the results exactly as before the failed run: old params, up to date
    assert "Nothing to be done" in _toy(tmp_path, "-n", val="one").stdout
    assert "Params have changed" in _toy(tmp_path, "-n", val="two").stdout


@pytest.mark.slow
def test_killed_snakemake_loses_nothing_on_the_next_run(tmp_path):
    assert _toy(tmp_path, val="one").returncode == 0
    before = digest(tmp_path / "results")
    proc = _toy(tmp_path, val="two", sleep=60, background=True)
    try:
        deadline = time.time() + 60
        while not any((tmp_path / ".snakemake" / "incomplete").rglob("*")) and time.time() < deadline:
            time.sleep(0.1)
        assert not (tmp_path / "results" / "x" / "a.txt").exists(), "job a should be running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # another target: the next run's start puts back what the killed run had removed
    assert _toy(tmp_path, "results/y/c.txt", val="one").returncode == 0
    after = digest(tmp_path / "results")
    assert {k: v for k, v in after.items() if not k.startswith("y/")} == before
    assert "Nothing to be done" in _toy(tmp_path, "-n", val="one").stdout


# --- the real pipeline ---------------------------------------------------------------------
def faults_config() -> dict:
    return load_config("faults")


@pytest.mark.slow
def test_failing_download_rerun_keeps_earlier_data(tmp_path):
    cfg = faults_config()
    snakemake(tmp_path, "data", config=cfg)
    before = digest(tmp_path / "results")
    assert "e1/data/pretrain.parquet" in before
    cfg["data"]["classify"] = {"source": "local", "format": "csv", "splits": {"train": str(tmp_path / "missing.csv")}}
    proc = snakemake(tmp_path, "data", config=cfg, check=False)
    assert proc.returncode != 0
    assert any("missing.csv" in line for line in error_lines(proc.stderr)), explain(proc, tmp_path)
    assert digest(tmp_path / "results") == before


KILL_HOOK = textwrap.dedent(
    """
    # test hook: SIGKILL the whole Snakemake session when a file is renamed onto a target
    # whose path ends with $ECOEVAL_TEST_KILL_AT: the job dies in the middle of writing
    import os, signal
    _at = os.environ.get("ECOEVAL_TEST_KILL_AT")
    if _at:
        _replace = os.replace
        def _kill_before(src, dst, *a, **k):
            if str(dst).endswith(_at):
                os.killpg(0, signal.SIGKILL)
            return _replace(src, dst, *a, **k)
        os.replace = _kill_before
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["pretrain/model", "pretrain/log.parquet"])
def test_pretrain_killed_mid_write_is_redone(tmp_path, kill_at):
    """Killed before the model folder is renamed in place, or after it but before the log is:
    either way no partial output is accepted and the rerun produces the full result."""
    cfg = faults_config()
    work = tmp_path / "w"
    snakemake(work, "tokenize", config=cfg)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    kill_env = env(ECOEVAL_TEST_KILL_AT=kill_at, PYTHONPATH=f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(snakemake_cmd(work, "pretrain", config=cfg), env=kill_env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    pre = work / "results" / "e1" / "pretrain"
    if kill_at == "pretrain/model":
        assert not (pre / "model").exists()
        assert list(pre.glob(".model.*.tmp")), "the kill should leave the unfinished temp folder"
    else:
        assert (pre / "model" / "model.safetensors").is_file()  # complete-looking, but from a dead job
        assert not (pre / "log.parquet").exists()
    # Snakemake itself died too: its lock stays until `--unlock` (what a user does after a crash)
    snakemake(work, "--unlock", config=cfg)
    if kill_at == "pretrain/log.parquet":
        # the model folder is marked incomplete: without --rerun-incomplete Snakemake refuses it
        refused = snakemake(work, "-n", "pretrain", config=cfg, check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "incomplete" in said.lower() and "pretrain/model" in said, said[-3000:]
    planned = snakemake(work, "-n", "pretrain", "--rerun-incomplete", config=cfg)
    assert "run_pretrain" in planned.stdout
    # the rerun redoes the job, produces complete outputs and sweeps the dead job's temp names
    snakemake(work, "pretrain", "--rerun-incomplete", config=cfg)
    log = pq.read_table(pre / "log.parquet").to_pandas()
    assert log["step"].max() == cfg["pretrain"]["max_steps"]
    assert not list(pre.glob(".*.tmp")), "the rerun's atomic writes leave no temp names"
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(pre / "model")
