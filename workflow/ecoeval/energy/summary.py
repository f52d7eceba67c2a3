"""Integrate energy samples into per-stage, per-device energy (the `energy` rule), and the
formula view C = N x T x P for training stages."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ecoeval import EcoevalError

STAGES = ("download", "tokenize", "pretrain", "finetune", "fairness")
TRAINING_STAGES = ("pretrain", "finetune")
SAMPLE_COLUMNS = ["t_s", "device", "domain", "energy_j", "power_w", "method", "step"]

SUMMARY_SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("stage", pa.string()),
        ("device", pa.string()),
        ("domain", pa.string()),
        ("method", pa.string()),
        ("energy_j", pa.float64()),
        ("attributed_energy_j", pa.float64()),
        ("wall_s", pa.float64()),
        ("mean_power_w", pa.float64()),
        ("n_samples", pa.int64()),
        ("formula_steps", pa.int64()),
        ("formula_step_time_s", pa.float64()),
        ("formula_power_w", pa.float64()),
        ("formula_energy_j", pa.float64()),
        ("train_tokens", pa.int64()),
        ("energy_per_token_j", pa.float64()),
    ]
)


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None


def integrate(samples: pa.Table) -> list[dict]:
    """Energy per (device, domain, method) from cumulative samples.

    Each increment of a device's cumulative energy goes to the method of the sample that
    ends it, so a device that changed method mid-run (a counter failing) is split exactly.
    `span_s` is the time those increments cover; `step_power_w` lists power readings taken
    inside training steps (for the formula view).
    """
    cols = samples.to_pydict()
    has_attr = "attributed_energy_j" in cols
    order = sorted(range(samples.num_rows), key=lambda i: (cols["device"][i], cols["domain"][i], cols["t_s"][i]))
    groups: dict[tuple, dict] = {}
    prev: dict[tuple, tuple] = {}
    for i in order:
        dev_key = (cols["device"][i], cols["domain"][i])
        t, e = cols["t_s"][i], cols["energy_j"][i]
        a = cols["attributed_energy_j"][i] if has_attr else None
        t0, e0, a0 = prev.get(dev_key, (t, 0.0, 0.0))
        prev[dev_key] = (t, e, a if a is not None else a0)
        g = groups.setdefault(
            (*dev_key, cols["method"][i]),
            {"energy_j": 0.0, "attributed_energy_j": 0.0 if has_attr else None, "span_s": 0.0, "n_samples": 0, "power_w": [], "step_power_w": []},
        )
        g["energy_j"] += e - e0
        if has_attr and a is not None:
            g["attributed_energy_j"] += a - a0
        g["span_s"] += t - t0
        g["n_samples"] += 1
        p = cols["power_w"][i]
        if p is not None and t > t0:
            g["power_w"].append(p)
            if cols["step"][i] is not None and cols["step"][i] >= 0:
                g["step_power_w"].append(p)
    out = []
    for (device, domain, method), g in sorted(groups.items()):
        g.update(device=device, domain=domain, method=method)
        g["mean_power_w"] = g["energy_j"] / g["span_s"] if g["span_s"] > 0 else None
        out.append(g)
    return out


def formula(steps: list[dict], group: dict) -> dict:
    """C = N x T x P: steps x mean step time x mean sampled power (inside steps if any)."""
    durations = [s["t_end_s"] - s["t_begin_s"] for s in steps if s.get("t_end_s") is not None]
    n = len(durations)
    t = _mean(durations)
    p = _mean(group["step_power_w"]) if group["step_power_w"] else _mean(group["power_w"])
    tokens = sum(int(s.get("tokens") or 0) for s in steps)
    return {
        "formula_steps": n,
        "formula_step_time_s": t,
        "formula_power_w": p,
        "formula_energy_j": n * t * p if (n and t is not None and p is not None) else None,
        "train_tokens": tokens,
        "energy_per_token_j": group["energy_j"] / tokens if tokens else None,
    }


def summarize_file(path: Path, stage: str, experiment: str | None) -> list[dict]:
    from ecoeval.io import read_metadata, read_parquet

    table = read_parquet(path)
    missing = [c for c in SAMPLE_COLUMNS if c not in table.column_names]
    if missing:
        raise EcoevalError(f"input file {path}: missing columns {missing}")
    meta = read_metadata(path)
    wall = meta.get("wall_s")
    if wall is None:
        wall = max(table.column("t_s").to_pylist(), default=0.0)
    rows = []
    for g in integrate(table):
        row = {k: g[k] for k in ("device", "domain", "method", "energy_j", "attributed_energy_j", "mean_power_w", "n_samples")}
        row.update(experiment=experiment or meta.get("experiment"), stage=stage, wall_s=float(wall))
        if stage in TRAINING_STAGES:
            row.update(formula(meta.get("steps") or [], g))
        rows.append(row)
    return rows


def summary_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in SUMMARY_SCHEMA} for r in rows], schema=SUMMARY_SCHEMA)


def summarize_stage(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    """The `energy` rule: every stage's samples -> energy/summary.parquet."""
    from ecoeval.io import write_parquet

    if "summary" not in outputs:
        raise EcoevalError("energy stage: output 'summary' is required")
    unknown = [k for k in inputs if k not in STAGES]
    if unknown:
        raise EcoevalError(f"energy stage inputs: expected samples named by stage {list(STAGES)}, found {unknown}")
    experiment = params.get("experiment")
    rows: list[dict] = []
    for stage in [s for s in STAGES if s in inputs]:
        rows.extend(summarize_file(Path(inputs[stage]), stage, experiment))
    write_parquet(summary_table(rows), outputs["summary"], metadata={"experiment": experiment, "stages": [s for s in STAGES if s in inputs]})


def step_energy(samples: pa.Table, steps: list[dict]) -> pa.Table:
    """Energy of every training step per device/domain, interpolated on the cumulative series."""
    import numpy as np

    cols = samples.to_pydict()
    series: dict[tuple, tuple[list, list]] = {}
    for t, dev, dom, e in zip(cols["t_s"], cols["device"], cols["domain"], cols["energy_j"]):
        ts, es = series.setdefault((dev, dom), ([], []))
        ts.append(t)
        es.append(e)
    out = {"step": [], "device": [], "domain": [], "energy_j": [], "tokens": [], "energy_per_token_j": []}
    for (dev, dom), (ts, es) in sorted(series.items()):
        order = np.argsort(ts)
        ts_a, es_a = np.asarray(ts)[order], np.asarray(es)[order]
        for s in steps:
            e = float(np.interp(s["t_end_s"], ts_a, es_a) - np.interp(s["t_begin_s"], ts_a, es_a))
            tok = int(s.get("tokens") or 0)
            for k, v in zip(out, (int(s["step"]), dev, dom, e, tok, e / tok if tok else None)):
                out[k].append(v)
    return pa.table(out)
