"""Read every experiment's stored results and turn them into the report's tables.

Only stored files are read (Parquet, JSON): nothing is trained or measured again, so the
report can be rebuilt from a results folder alone (`ecoeval report`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ecoeval import EcoevalError, __version__
from ecoeval.io import read_metadata, read_parquet, sha256_file

# pipeline order of the stages; stages not listed sort after these, by name
STAGE_ORDER = ["download", "tokenize", "pretrain", "finetune", "fairness", "energy", "carbon", "report"]
TRAINING_STAGES = ("pretrain", "finetune")
METRIC_COLUMNS = ["metric", "split", "value"]
LOG_COLUMNS = ["step", "loss"]
ENERGY_COLUMNS = ["stage", "device", "domain", "method", "energy_j", "wall_s"]
SAMPLE_COLUMNS = ["t_s", "timestamp_utc", "device", "domain", "energy_j", "power_w", "method"]
CARBON_COLUMNS = ["stage", "scenario", "co2e_kg", "co2e_kg_low", "co2e_kg_high", "cost_usd"]
FAIRNESS_COLUMNS = ["metric", "subset", "value", "ci_low", "ci_high", "n", "p_value"]
EXTRINSIC_SUMMARY = ["demographic_parity_difference", "equalized_odds_difference", "counterfactual_flip_rate"]
PACKAGES = [
    "ecoeval", "torch", "transformers", "tokenizers", "datasets", "accelerate", "safetensors",
    "pyarrow", "pandas", "numpy", "codecarbon", "fairlearn", "nvidia-ml-py", "matplotlib", "snakemake",
]


def stage_key(stage: str) -> tuple:
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


@dataclass
class Experiment:
    """Everything the report knows about one experiment, read from its results folder."""

    name: str
    folder: Path
    pretrain_metrics: pd.DataFrame
    finetune_metrics: pd.DataFrame
    energy: pd.DataFrame
    carbon: pd.DataFrame
    intrinsic: pd.DataFrame
    extrinsic: pd.DataFrame
    pretrain_log: pd.DataFrame | None = None
    finetune_log: pd.DataFrame | None = None
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)
    samples_meta: dict[str, dict] = field(default_factory=dict)
    carbon_meta: dict = field(default_factory=dict)
    co2_card: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    config: dict | None = None
    missing: list[str] = field(default_factory=list)

    def metric(self, which: str, metric: str, split: str | None = None) -> float:
        df = self.pretrain_metrics if which == "pretrain" else self.finetune_metrics
        rows = df[(df["metric"] == metric) & ((df["split"] == split) if split else True)]
        return float(rows["value"].iloc[0]) if len(rows) else math.nan

    def scenarios(self) -> list[str]:
        """Scenario names in the order carbon.parquet lists them (the config's order)."""
        return list(dict.fromkeys(self.carbon["scenario"]))


def _checked(path: Path, columns: list[str]) -> pd.DataFrame:
    table = read_parquet(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise EcoevalError(f"input file {path}: missing columns {missing} (see docs/contracts.md)")
    return table.to_pandas()


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EcoevalError(f"input file {path}: not valid JSON ({exc.msg})") from None


def load_experiment(name: str, folder: str | Path, config: dict | None = None) -> Experiment:
    """Read one experiment's results. Core tables are required; logs, samples, provenance optional."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EcoevalError(f"experiment {name}: results folder {folder} not found")
    exp = Experiment(
        name=name,
        folder=folder,
        pretrain_metrics=_checked(folder / "pretrain/metrics.parquet", METRIC_COLUMNS),
        finetune_metrics=_checked(folder / "finetune/metrics.parquet", METRIC_COLUMNS),
        energy=_checked(folder / "energy/summary.parquet", ENERGY_COLUMNS),
        carbon=_checked(folder / "carbon/carbon.parquet", CARBON_COLUMNS),
        intrinsic=_checked(folder / "fairness/intrinsic.parquet", FAIRNESS_COLUMNS),
        extrinsic=_checked(folder / "fairness/extrinsic.parquet", FAIRNESS_COLUMNS),
        config=config,
    )
    exp.carbon_meta = read_metadata(folder / "carbon/carbon.parquet")
    for which in TRAINING_STAGES:
        path = folder / which / "log.parquet"
        if path.is_file():
            setattr(exp, f"{which}_log", _checked(path, LOG_COLUMNS))
        else:
            exp.missing.append(str(path))
    samples_dir = folder / "energy" / "samples"
    for path in sorted(samples_dir.glob("*.parquet"), key=lambda p: stage_key(p.stem)):
        exp.samples[path.stem] = _checked(path, SAMPLE_COLUMNS)
        exp.samples_meta[path.stem] = read_metadata(path)
    if not exp.samples:
        exp.missing.append(str(samples_dir / "*.parquet"))
    for attr, rel in (("co2_card", "carbon/co2_eq_emissions.json"), ("provenance", "data/provenance.json")):
        path = folder / rel
        if path.is_file():
            setattr(exp, attr, _json(path))
        else:
            exp.missing.append(str(path))
    return exp


def discover(results_dir: str | Path, exclude: tuple[str, ...] = ("report",)) -> dict[str, Path]:
    """Experiment name -> folder for every subfolder of `results_dir` that holds an energy summary."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise EcoevalError(f"--results {results_dir}: folder not found")
    found = {
        p.name: p
        for p in sorted(results_dir.iterdir())
        if p.is_dir() and p.name not in exclude and (p / "energy" / "summary.parquet").is_file()
    }
    if not found:
        raise EcoevalError(f"--results {results_dir}: no experiment folders (with energy/summary.parquet) found")
    return found


# -- one row per experiment --------------------------------------------------------------


def _row(df: pd.DataFrame, metric: str, subset: str = "all") -> pd.Series | None:
    rows = df[(df["metric"] == metric) & (df["subset"] == subset)]
    return rows.iloc[0] if len(rows) else None


def _methods(values) -> str:
    return "+".join(sorted(set(values))) or "none"


# carbon.parquet columns that add up over stages; every other column is a per-scenario factor
ADDITIVE = ("wall_s", "energy_kwh", "energy_kwh_facility", "co2e_kg", "co2e_kg_low", "co2e_kg_high",
            "embodied_co2e_kg", "total_co2e_kg", "energy_cost_usd", "hardware_cost_usd", "cost_usd",
            "formula_energy_kwh", "formula_co2e_kg")


def carbon_totals(exp: Experiment) -> pd.DataFrame:
    """Per scenario, the carbon rows summed over stages.

    Bounds are summed too (errors taken as fully correlated). A factor that is the same on
    every stage is kept; a numeric one that varies (hourly intensity) becomes its
    facility-energy-weighted mean; a text one that varies lists its values.
    """
    c = exp.carbon
    additive = [col for col in ADDITIVE if col in c]
    rows = []
    for scenario, g in c.groupby("scenario", sort=False):
        row = {"scenario": scenario, **{col: float(g[col].sum(min_count=1)) for col in additive}}
        for col in c.columns:
            if col in additive or col in ("experiment", "stage", "scenario"):
                continue
            vals = g[col].dropna()
            if vals.nunique() <= 1:
                row[col] = vals.iloc[0] if len(vals) else None
            elif pd.api.types.is_numeric_dtype(g[col]) and "energy_kwh_facility" in g and g["energy_kwh_facility"].sum() > 0:
                w = g["energy_kwh_facility"]
                row[col] = float((g[col] * w).sum() / w.sum())
            else:
                row[col] = "; ".join(sorted(map(str, vals.unique())))
        rows.append(row)
    return pd.DataFrame(rows)


def summary_row(exp: Experiment) -> dict:
    e = exp.energy
    scenario = exp.scenarios()[0] if len(exp.carbon) else None
    totals = carbon_totals(exp).set_index("scenario") if scenario else None
    row = {
        "experiment": exp.name,
        "model_params": _int(exp.metric("pretrain", "model_params")),
        "pretrain_steps": _int(exp.metric("pretrain", "train_steps")),
        "pretrain_tokens": _int(exp.metric("pretrain", "train_tokens")),
        "pretrain_wall_s": exp.metric("pretrain", "train_wall_s"),
        "pretrain_eval_loss": exp.metric("pretrain", "eval_loss", "validation"),
        "pretrain_perplexity": exp.metric("pretrain", "perplexity", "validation"),
        "finetune_wall_s": exp.metric("finetune", "train_wall_s"),
        "finetune_accuracy": exp.metric("finetune", "accuracy", "test"),
        "finetune_macro_f1": exp.metric("finetune", "macro_f1", "test"),
        "energy_j": float(e["energy_j"].sum()),
        "attributed_energy_j": float(e["attributed_energy_j"].sum()) if "attributed_energy_j" in e else math.nan,
        "energy_method": _methods(e["method"]),
        "energy_basis": exp.carbon_meta.get("energy_basis"),
        "co2e_scenario": scenario,
    }
    for col in ("co2e_kg", "co2e_kg_low", "co2e_kg_high", "embodied_co2e_kg", "total_co2e_kg", "cost_usd", "energy_kwh_facility"):
        row[col] = float(totals.loc[scenario, col]) if totals is not None and col in totals else math.nan
    cp = _row(exp.intrinsic, "crows_pairs")
    row["crows_pairs_score"] = float(cp["value"]) if cp is not None else math.nan
    row["crows_pairs_ci_low"] = float(cp["ci_low"]) if cp is not None else math.nan
    row["crows_pairs_ci_high"] = float(cp["ci_high"]) if cp is not None else math.nan
    for metric in EXTRINSIC_SUMMARY:
        r = _row(exp.extrinsic, metric)
        row[metric] = float(r["value"]) if r is not None else math.nan
        row[f"{metric}_ci_low"] = float(r["ci_low"]) if r is not None else math.nan
        row[f"{metric}_ci_high"] = float(r["ci_high"]) if r is not None else math.nan
    return row


def _int(x: float):
    return None if x is None or math.isnan(x) else int(round(x))


def summary_table(exps: list[Experiment]) -> pd.DataFrame:
    df = pd.DataFrame([summary_row(x) for x in exps])
    for col in ("model_params", "pretrain_steps", "pretrain_tokens"):
        df[col] = df[col].astype("Int64")
    return df


# -- the report's tables ------------------------------------------------------------------


def energy_table(exps: list[Experiment]) -> pd.DataFrame:
    cols = ["experiment", "stage", "device", "domain", "method", "energy_j", "attributed_energy_j", "wall_s", "mean_power_w", "n_samples"]
    frames = []
    for x in exps:
        df = x.energy.copy()
        df["experiment"] = x.name
        frames.append(df[[c for c in cols if c in df]])
    out = pd.concat(frames, ignore_index=True)
    return _sort(out, ["experiment", "stage", "device", "domain"])


def formula_table(exps: list[Experiment]) -> pd.DataFrame:
    """Training stages: the formula C = N x T x P beside the measured (summed over devices) energy."""
    rows = []
    for x in exps:
        e = x.energy
        if "formula_energy_j" not in e:
            continue
        for stage, g in e.groupby("stage", sort=False):
            f = g.dropna(subset=["formula_energy_j"])
            if f.empty:
                continue
            measured = float(g["energy_j"].sum())
            # formula columns sit on each device's row (N x T x that device's P): sum over devices
            formula = float(f["formula_energy_j"].sum())
            rows.append({
                "experiment": x.name,
                "stage": stage,
                "formula_steps": _int(float(f["formula_steps"].iloc[0])) if "formula_steps" in f else None,
                "formula_step_time_s": float(f["formula_step_time_s"].iloc[0]) if "formula_step_time_s" in f else math.nan,
                "formula_power_w": float(f["formula_power_w"].sum()),
                "formula_energy_j": formula,
                "measured_energy_j": measured,
                "measured_method": _methods(g["method"]),
                "formula_over_measured": formula / measured if measured else math.nan,
            })
    return _sort(pd.DataFrame(rows, columns=None if rows else ["experiment", "stage"]), ["experiment", "stage"])


def carbon_table(exps: list[Experiment]) -> pd.DataFrame:
    """Per experiment and scenario, summed over stages, with the embodied share and money."""
    want = ["experiment", "scenario", "region", "pue", "intensity_g_per_kwh", "intensity_source", "intensity_year",
            "energy_kwh", "energy_method", "energy_kwh_facility", "co2e_kg", "co2e_kg_low", "co2e_kg_high", "embodied_co2e_kg",
            "total_co2e_kg", "embodied_share", "energy_cost_usd", "hardware_cost_usd", "cost_usd"]
    frames = []
    for x in exps:
        t = carbon_totals(x)
        t["experiment"] = x.name
        t["energy_method"] = _methods(x.energy["method"])
        if "embodied_co2e_kg" in t:
            # co2e_kg is operational; embodied_co2e_kg is the amortised manufacturing share
            t["embodied_share"] = t["embodied_co2e_kg"] / (t["co2e_kg"] + t["embodied_co2e_kg"])
        frames.append(t[[c for c in want if c in t]])
    return pd.concat(frames, ignore_index=True)


def carbon_stage_table(exps: list[Experiment]) -> pd.DataFrame:
    want = ["experiment", "stage", "scenario", "energy_kwh", "co2e_kg", "co2e_kg_low", "co2e_kg_high", "embodied_co2e_kg", "cost_usd"]
    frames = []
    for x in exps:
        c = x.carbon.copy()
        c["experiment"] = x.name
        frames.append(c[[col for col in want if col in c]])
    return _sort(pd.concat(frames, ignore_index=True), ["experiment", "scenario", "stage"])


def fairness_table(exps: list[Experiment]) -> pd.DataFrame:
    frames = []
    for x in exps:
        for kind, df in (("intrinsic", x.intrinsic), ("extrinsic", x.extrinsic)):
            d = df[FAIRNESS_COLUMNS].copy()
            d.insert(0, "kind", kind)
            d.insert(0, "experiment", x.name)
            frames.append(d)
    out = pd.concat(frames, ignore_index=True)
    # "all" first within each metric, then subsets by name
    out["_all"] = out["subset"] != "all"
    out = out.sort_values(["kind", "metric", "_all", "subset"], kind="stable").drop(columns="_all")
    return _sort(out, ["experiment"])


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = value


def assumptions_table(exps: list[Experiment]) -> pd.DataFrame:
    """Every assumed factor: energy-model assumptions per stage, and each carbon scenario's factors."""
    rows = []
    scenario_keys = ["region", "mode", "intensity_mode", "pue", "intensity_g_per_kwh", "intensity_source",
                     "intensity_year", "market_factor", "energy_rel_error", "intensity_rel_error",
                     "electricity_usd_per_kwh", "hardware_usd_per_hour", "embodied_kg", "embodied_kg_per_device",
                     "embodied_source", "lifetime_years", "utilization"]
    for x in exps:
        # energy: assumptions from the samples' metadata; identical values across stages share a row
        seen: dict[tuple, list[str]] = {}
        for stage, meta in x.samples_meta.items():
            flat: dict = {}
            _flatten("", meta.get("assumptions") or {}, flat)
            for k, v in flat.items():
                seen.setdefault((k, json.dumps(v, sort_keys=True, default=str)), []).append(stage)
        for (k, v), stages in seen.items():
            rows.append({"experiment": x.name, "scope": "energy", "applies_to": ", ".join(stages), "item": k, "value": json.loads(v)})
        # carbon: per scenario, from carbon.parquet, completed by the config's scenario entry
        cfg_sc = {s["name"]: s for s in ((x.config or {}).get("carbon", {}).get("scenarios", []))}
        first = carbon_totals(x).set_index("scenario")
        if x.carbon_meta.get("energy_basis"):
            rows.append({"experiment": x.name, "scope": "carbon", "applies_to": "all scenarios", "item": "energy_basis",
                         "value": x.carbon_meta["energy_basis"], "from": "carbon.parquet metadata"})
        for sc in x.scenarios():
            for k in scenario_keys:
                if k in first.columns and not _isnan(first.loc[sc, k]):
                    v, src = first.loc[sc, k], "carbon.parquet"
                elif k in cfg_sc.get(sc, {}):
                    v, src = cfg_sc[sc][k], "config"
                else:
                    continue
                rows.append({"experiment": x.name, "scope": "carbon", "applies_to": f"scenario {sc}", "item": k, "value": _plain(v), "from": src})
    df = pd.DataFrame(rows, columns=["experiment", "scope", "applies_to", "item", "value", "from"])
    df["from"] = df["from"].fillna("energy samples metadata")
    df["value"] = df["value"].map(_text)
    return df


def _isnan(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists, dicts: present
        return False


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def config_sha256(config: dict | None) -> str | None:
    if config is None:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def provenance_table(exps: list[Experiment], environment: dict) -> pd.DataFrame:
    """Data checksums and licences, config hash, model weights checksums, software and hardware."""
    rows = []
    for x in exps:
        for kind in sorted(x.provenance):
            rec = x.provenance[kind]
            if not isinstance(rec, dict):
                continue
            rows.append((x.name, f"data.{kind}.source", rec.get("source")))
            for f in rec.get("files") or []:
                if f.get("sha256"):
                    rows.append((x.name, f"data.{kind}.sha256", f"{f['sha256']} ({f.get('location')})"))
                else:  # a Hugging Face dataset: pinned by its revision in the location
                    rows.append((x.name, f"data.{kind}.location", f"{f.get('location')} (split {f.get('split_spec', f.get('split'))})"))
            if "license" in rec:
                rows.append((x.name, f"data.{kind}.license", rec["license"]))
            if "rows" in rec:
                rows.append((x.name, f"data.{kind}.rows", _text(rec["rows"])))
        rows.append((x.name, "config.sha256", config_sha256(x.config) or "not recorded"))
        for which in TRAINING_STAGES:
            weights = x.folder / which / "model" / "model.safetensors"
            if weights.is_file():
                rows.append((x.name, f"{which}.model.safetensors.sha256", sha256_file(weights)))
    for k in sorted(environment):
        rows.append(("(all)", k, _text(environment[k])))
    return pd.DataFrame(rows, columns=["experiment", "item", "value"]).astype({"value": str})


def environment_info() -> dict:
    """Software and hardware the report was built with (stored so a regeneration shows the same)."""
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    env: dict = {"ecoeval": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            env[f"package.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        repo = Path(__file__).resolve().parents[3]
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        env["git_commit"] = res.stdout.strip() if res.returncode == 0 else "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = "git not available"
    env["hardware.cpu_model"] = _cpu_model()
    env["hardware.logical_cpus"] = psutil.cpu_count(logical=True)
    env["hardware.memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    env["hardware.gpus"] = _gpus()
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpus() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
        return ", ".join(n.decode() if isinstance(n, bytes) else n for n in names) or "none"
    except Exception:  # NVML missing or no driver: no NVIDIA GPU to report
        return "none (NVML not available)"


def _sort(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    cols = [c for c in cols if c in df]
    if df.empty or not cols:
        return df.reset_index(drop=True)
    keyed = df.copy()
    keys = []
    for c in cols:
        if c == "stage":
            keyed["_stage"] = keyed["stage"].map(lambda s: stage_key(s))
            keys.append("_stage")
        elif c in ("experiment", "scenario"):
            # experiments and scenarios keep the config's order (their first appearance)
            order = {s: i for i, s in enumerate(dict.fromkeys(df[c]))}
            keyed[f"_{c}"] = keyed[c].map(order)
            keys.append(f"_{c}")
        else:
            keys.append(c)
    keyed = keyed.sort_values(keys, kind="stable")
    return keyed.drop(columns=[k for k in keys if k.startswith("_")]).reset_index(drop=True)
