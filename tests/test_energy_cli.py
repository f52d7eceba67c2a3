"""`ecoeval energy run`, the energy rule's summary math, and the runner writing samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from ecoeval import EcoevalError
from ecoeval.energy import SAMPLE_SCHEMA, integrate, step_energy, summarize_stage
from ecoeval.io import read_metadata, read_parquet, write_parquet

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ECOEVAL_POWERCAP_ROOT": "/nonexistent-powercap"}


def ecoeval(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ecoeval.cli", *args], capture_output=True, text=True, env=ENV, timeout=120, **kw)


def test_energy_run_json_exit_code_and_samples(tmp_path):
    out = tmp_path / "run.parquet"
    child = "import sys, time\nt = time.time()\nwhile time.time() - t < 0.6: pass\nprint('child says hi')\nsys.exit(3)"
    p = ecoeval("energy", "run", "--hz", "20", "--cpu-tdp-w", "30", "--json", "--out", str(out), "--", sys.executable, "-c", child)
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)  # stdout is only the JSON object; the child's stdout went to stderr
    assert "child says hi" in p.stderr and "child says hi" not in p.stdout
    assert doc["wall_s"] > 0.5
    dev = {(d["device"], d["domain"]): d for d in doc["devices"]}
    assert dev[("cpu", "package")]["method"] == "estimate"
    # the child's CPU seconds x 30 W / logical CPUs: at least some joules, never more than the device
    assert 0 < dev[("cpu", "package")]["attributed_energy_j"] <= dev[("cpu", "package")]["energy_j"] + 1e-9
    table = read_parquet(out)
    assert table.schema.remove_metadata() == SAMPLE_SCHEMA
    meta = read_metadata(out)
    assert meta["exit_code"] == 3 and meta["assumptions"]["cpu_tdp_w"] == 30
    assert meta["command"][0] == sys.executable
    assert "energy_j" in p.stderr and "cpu_tdp_source" in p.stderr  # the table on stderr


def test_energy_run_table_and_success(tmp_path):
    p = ecoeval("energy", "run", "--", sys.executable, "-c", "print('ok')")
    assert p.returncode == 0
    assert p.stdout.strip() == "ok"  # without --json the child's stdout stays on stdout
    assert "device" in p.stderr and "package" in p.stderr


def test_energy_run_missing_command():
    assert ecoeval("energy", "run", "--", "no-such-command-xyz").returncode == 127
    p = ecoeval("energy", "run")
    assert p.returncode == 2 and "expected a command" in p.stderr


def test_energy_run_signal_exit_code():
    p = ecoeval("energy", "run", "--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert p.returncode == 128 + 15


# -- summary math --------------------------------------------------------------------------------


def samples(rows):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    cols = {f.name: [] for f in SAMPLE_SCHEMA}
    for t, device, domain, e, p, method, step, attr in rows:
        for k, v in zip(cols, (t, datetime.fromtimestamp(t0 + t, tz=timezone.utc), device, domain, e, p, None, method, step, attr)):
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=SAMPLE_SCHEMA)


GPU_ROWS = [  # a GPU at 100 W whose counter fails at t=2 and continues sampled at 50 W
    (0.0, "gpu:0", "gpu", 0.0, None, "counter", -1, 0.0),
    (1.0, "gpu:0", "gpu", 100.0, 100.0, "counter", 1, 50.0),
    (2.0, "gpu:0", "gpu", 200.0, 100.0, "counter", 2, 100.0),
    (3.0, "gpu:0", "gpu", 250.0, 50.0, "sampled", 3, 125.0),
    (4.0, "gpu:0", "gpu", 300.0, 50.0, "sampled", -1, 150.0),
    (0.0, "cpu", "package", 0.0, None, "estimate", -1, 0.0),
    (2.0, "cpu", "package", 20.0, 10.0, "estimate", 2, 5.0),
    (4.0, "cpu", "package", 60.0, 20.0, "estimate", -1, 15.0),
]
STEPS = [{"step": s, "t_begin_s": s - 0.9, "t_end_s": s - 0.1, "tokens": 1000} for s in (1, 2, 3)]


def test_integrate_splits_methods_exactly():
    got = {(g["device"], g["method"]): g for g in integrate(samples(GPU_ROWS))}
    assert got[("gpu:0", "counter")]["energy_j"] == 200.0 and got[("gpu:0", "sampled")]["energy_j"] == 100.0
    assert got[("gpu:0", "counter")]["attributed_energy_j"] == 100.0 and got[("gpu:0", "sampled")]["attributed_energy_j"] == 50.0
    assert got[("gpu:0", "counter")]["mean_power_w"] == 100.0 and got[("gpu:0", "sampled")]["mean_power_w"] == 50.0
    assert got[("gpu:0", "counter")]["n_samples"] == 3 and got[("cpu", "estimate")]["energy_j"] == 60.0


def test_summarize_stage_formula_and_columns(tmp_path):
    write_parquet(samples(GPU_ROWS), tmp_path / "pretrain.parquet", metadata={"stage": "pretrain", "experiment": "x", "wall_s": 4.5, "steps": STEPS})
    write_parquet(samples(GPU_ROWS[5:]), tmp_path / "download.parquet", metadata={"stage": "download", "wall_s": 4.0, "steps": []})
    out = tmp_path / "summary.parquet"
    summarize_stage({"experiment": "x"}, {"pretrain": tmp_path / "pretrain.parquet", "download": tmp_path / "download.parquet"}, {"summary": out})
    rows = read_parquet(out).to_pylist()
    assert [(r["stage"], r["device"], r["method"]) for r in rows] == [
        ("download", "cpu", "estimate"), ("pretrain", "cpu", "estimate"), ("pretrain", "gpu:0", "counter"), ("pretrain", "gpu:0", "sampled")]
    dl, cpu, cnt, smp = rows
    assert dl["formula_energy_j"] is None and dl["formula_steps"] is None
    assert all(r["experiment"] == "x" for r in rows) and cnt["wall_s"] == 4.5
    # C = N x T x P: 3 steps x 0.8 s x mean power sampled inside steps
    assert cnt["formula_steps"] == 3 and cnt["formula_step_time_s"] == pytest.approx(0.8)
    assert cnt["formula_power_w"] == 100.0 and cnt["formula_energy_j"] == pytest.approx(240.0)
    assert smp["formula_power_w"] == 50.0 and smp["formula_energy_j"] == pytest.approx(120.0)
    assert cpu["formula_power_w"] == 10.0 and cpu["formula_energy_j"] == pytest.approx(24.0)
    assert cnt["train_tokens"] == 3000 and cnt["energy_per_token_j"] == pytest.approx(200.0 / 3000)
    expected = ["experiment", "stage", "device", "domain", "method", "energy_j", "attributed_energy_j", "wall_s", "mean_power_w",
                "n_samples", "formula_steps", "formula_step_time_s", "formula_power_w", "formula_energy_j"]
    assert read_parquet(out).column_names[: len(expected)] == expected


def test_summarize_stage_rejects_bad_inputs(tmp_path):
    with pytest.raises(EcoevalError, match="named by stage"):
        summarize_stage({}, {"train": tmp_path / "a.parquet"}, {"summary": tmp_path / "s.parquet"})
    with pytest.raises(EcoevalError, match="not found"):
        summarize_stage({}, {"download": tmp_path / "missing.parquet"}, {"summary": tmp_path / "s.parquet"})
    write_parquet(pa.table({"t_s": [0.0]}), tmp_path / "bad.parquet")
    with pytest.raises(EcoevalError, match="missing columns"):
        summarize_stage({}, {"download": tmp_path / "bad.parquet"}, {"summary": tmp_path / "s.parquet"})
    assert not (tmp_path / "s.parquet").exists()


def test_step_energy_interpolates():
    got = step_energy(samples(GPU_ROWS[:3]), STEPS[:1]).to_pylist()
    assert got == [{"step": 1, "device": "gpu:0", "domain": "gpu", "energy_j": pytest.approx(80.0), "tokens": 1000, "energy_per_token_j": pytest.approx(0.08)}]


def test_runner_energy_stage_writes_summary_and_its_own_samples(tmp_path):
    from ecoeval.runner import run_stage

    write_parquet(samples(GPU_ROWS[5:]), tmp_path / "tokenize.parquet", metadata={"stage": "tokenize", "wall_s": 4.0})
    params = {"experiment": "e1", "energy": {"sample_hz": 20, "cpu_tdp_w": 10.0, "ram_w_per_gb": 0.375, "gpu_index": None}}
    outs = {"summary": str(tmp_path / "summary.parquet"), "energy": str(tmp_path / "energy.parquet")}
    run_stage("energy", params, {"tokenize": str(tmp_path / "tokenize.parquet")}, outs)
    assert read_parquet(outs["summary"]).column("energy_j").to_pylist() == [60.0]
    meta = read_metadata(outs["energy"])
    assert meta["stage"] == "energy" and meta["experiment"] == "e1" and meta["assumptions"]["cpu_tdp_w"] == 10.0
    assert {"steps", "windows", "wall_s"} <= set(meta)
    assert read_parquet(outs["energy"]).num_rows > 0
