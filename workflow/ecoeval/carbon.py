"""Carbon and cost accounting: from measured joules to CO2e and money, under explicit scenarios.

One row per stage x scenario, every factor in its own column so a reviewer can rebuild the
result by hand:

    energy_kwh_facility = energy_kwh x pue
    co2e_kg             = energy_kwh_facility x intensity_g_per_kwh x market_factor / 1000
    embodied_co2e_kg    = n_devices x embodied_kg_per_device x wall_s / 3600
                          / (lifetime_years x 8760 x utilization)
    cost_usd            = energy_kwh_facility x electricity_usd_per_kwh
                          + n_devices x wall_s / 3600 x hardware_usd_per_hour

Grid intensities come from the data files shipped with the pinned `codecarbon` package
(country energy mix with its year; cloud region impacts), from a fixed value, or from an
hourly CSV joined to the energy samples by timestamp. `account` is shared by the pipeline
stage (`run`) and the back-of-the-envelope calculator (`ecoeval carbon estimate`).
See docs/carbon.md.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import math
import platform
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from ecoeval import EcoevalError, __version__

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "carbon"
HOURS_PER_YEAR = 8760.0
# pipeline stages in flow order; the trained models get a model-card block
STAGE_ORDER = ["download", "tokenize", "pretrain", "finetune", "fairness"]
TRAINING_TYPE = {"pretrain": "pre-training", "finetune": "fine-tuning"}
CLOUD_PROVIDERS = ("gcp", "aws", "azure")
# accepted hourly-CSV headers: ecoeval's own, then Electricity Maps' export names
HOURLY_TIME_COLUMNS = ("datetime", "Datetime (UTC)")
HOURLY_VALUE_COLUMNS = (
    "carbon_intensity_g_per_kwh",
    "Carbon Intensity gCO₂eq/kWh (LCA)",
    "Carbon Intensity gCO₂eq/kWh (direct)",
)

CARBON_COLUMNS = [
    "experiment", "stage", "scenario", "region", "intensity_mode", "devices", "methods",
    "n_devices", "wall_s", "energy_kwh", "pue", "energy_kwh_facility",
    "intensity_g_per_kwh", "intensity_source", "intensity_year", "market_factor",
    "co2e_kg", "energy_rel_error", "intensity_rel_error", "co2e_kg_low", "co2e_kg_high",
    "embodied_kg_per_device", "embodied_source", "lifetime_years", "utilization",
    "embodied_co2e_kg", "total_co2e_kg", "electricity_usd_per_kwh", "hardware_usd_per_hour",
    "energy_cost_usd", "hardware_cost_usd", "cost_usd",
    "formula_steps", "formula_step_time_s", "formula_power_w", "formula_energy_kwh",
    "formula_co2e_kg",
]


# --------------------------------------------------------------------------------------
# documented defaults (resources/carbon)
# --------------------------------------------------------------------------------------
def _read_resource_csv(name: str) -> list[dict]:
    path = RESOURCES / name
    if not path.is_file():
        raise EcoevalError(f"resource file {path}: not found (the ecoeval checkout is incomplete)")
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(row for row in fh if not row.startswith("#")))


@functools.lru_cache(maxsize=1)
def uncertainty_defaults() -> dict[str, dict[str, float]]:
    """{"energy_method": {counter: r, ...}, "intensity": {annual: r, ...}} from uncertainty.csv."""
    out: dict[str, dict[str, float]] = {}
    for row in _read_resource_csv("uncertainty.csv"):
        out.setdefault(row["kind"], {})[row["name"]] = float(row["rel_error"])
    return out


@functools.lru_cache(maxsize=1)
def embodied_defaults() -> dict[str, dict]:
    """device_type -> row of embodied.csv (embodied_kg, gpus_per_host, description, source)."""
    return {row["device_type"]: row for row in _read_resource_csv("embodied.csv")}


def default_embodied_per_device(has_gpu: bool) -> tuple[float, str]:
    """Per-device manufacturing footprint (kgCO2e) and its source, from embodied.csv.

    A GPU device carries its own footprint plus its slot's share of the host server; a
    CPU-only run occupies one whole host.
    """
    table = embodied_defaults()
    if has_gpu:
        gpu, host = table["gpu"], table["gpu_host"]
        kg = float(gpu["embodied_kg"]) + float(host["embodied_kg"]) / float(host["gpus_per_host"])
        return kg, f"resources/carbon/embodied.csv: gpu + gpu_host/{host['gpus_per_host']} ({gpu['source']})"
    host = table["cpu_host"]
    return float(host["embodied_kg"]), f"resources/carbon/embodied.csv: cpu_host ({host['source']})"


def energy_rel_error(method: str) -> float:
    table = uncertainty_defaults()["energy_method"]
    if method not in table:
        raise EcoevalError(f"energy method {method!r}: no relative error in resources/carbon/uncertainty.csv (have: {', '.join(table)})")
    return table[method]


# --------------------------------------------------------------------------------------
# grid intensity
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intensity:
    """A grid carbon intensity and where it came from."""

    g_per_kwh: float
    source: str
    year: int | None
    rel_error: float
    mode: str  # annual, hourly, fixed
    region: str = ""
    location: str = ""  # human-readable, for the model card
    country_name: str = ""
    country_iso_code: str = ""
    cloud_provider: str = ""
    cloud_region: str = ""


@functools.lru_cache(maxsize=1)
def codecarbon_data() -> dict:
    """CodeCarbon's shipped intensity data, read through its own data loader (lazy import)."""
    try:
        import codecarbon
        from codecarbon.input import DataSource
    except ImportError as exc:  # pragma: no cover - codecarbon is a pinned dependency
        raise EcoevalError(f"package codecarbon: not importable ({exc}); install the pinned codecarbon==3.3.2") from None
    ds = DataSource()
    mix_path, cloud_path = Path(ds.global_energy_mix_data_path), Path(ds.cloud_emissions_path)
    with open(mix_path, encoding="utf-8") as fh:
        mix = json.load(fh)
    with open(cloud_path, encoding="utf-8-sig", newline="") as fh:
        cloud = {(r["provider"], r["region"]): r for r in csv.DictReader(fh)}
    return {
        "version": codecarbon.__version__,
        "mix": mix,
        "mix_file": mix_path.relative_to(Path(codecarbon.__file__).parent).as_posix(),
        "cloud": cloud,
        "cloud_file": cloud_path.relative_to(Path(codecarbon.__file__).parent).as_posix(),
    }


def _how_to_supply(where: str) -> str:
    known = "use an ISO 3166 alpha-3 country code (e.g. USA, FRA) or a cloud region 'gcp:<region>' from CodeCarbon's data"
    if where.startswith("--"):
        return f"{known}, or give the value with --intensity-g-per-kwh"
    return f"{known}, or supply a value: mode fixed with intensity_g_per_kwh, or mode hourly with hourly_csv"


def region_intensity(region: str, where: str = "region") -> Intensity:
    """The annual intensity of `region` from CodeCarbon's data.

    `region` is an ISO 3166 alpha-3 country code (`FRA`, case-insensitive) or a cloud region
    written `provider:region` (`gcp:us-central1`). Unknown regions raise EcoevalError naming
    the region and how to supply a value.
    """
    data = codecarbon_data()
    version = data["version"]
    text = str(region).strip()
    if ":" in text:
        provider, name = (p.strip() for p in text.split(":", 1))
        provider = provider.lower()
        row = data["cloud"].get((provider, name))
        if row is None:
            have = sorted({p for p, _ in data["cloud"]})
            known = sorted(r for p, r in data["cloud"] if p == provider)
            hint = f"known {provider} regions: {', '.join(known)}" if known else f"CodeCarbon {version} has cloud data for: {', '.join(have)} only"
            raise EcoevalError(f"{where}: unknown cloud region {text!r} ({hint}); {_how_to_supply(where)}")
        iso = row["countryIsoCode"]
        return Intensity(
            g_per_kwh=float(row["impact"]),
            source=f"codecarbon {version} {data['cloud_file']} ({provider} {name}; {row['source']})",
            year=None,  # the cloud impact file states no year
            rel_error=uncertainty_defaults()["intensity"]["cloud"],
            mode="annual",
            region=f"{provider}:{name}",
            location=f"{provider} {name} ({row['city'] or row['country_name']}, {row['country_name']})",
            country_name=row["country_name"],
            country_iso_code=iso,
            cloud_provider=provider,
            cloud_region=name,
        )
    code = text.upper()
    entry = data["mix"].get(code)
    if entry is None or entry.get("carbon_intensity") is None:
        raise EcoevalError(f"{where}: unknown region {text!r} (not a country in CodeCarbon {version}'s energy mix data); {_how_to_supply(where)}")
    return Intensity(
        g_per_kwh=float(entry["carbon_intensity"]),
        source=f"codecarbon {version} {data['mix_file']} ({code})",
        year=int(entry["year"]) if entry.get("year") is not None else None,
        rel_error=uncertainty_defaults()["intensity"]["annual"],
        mode="annual",
        region=code,
        location=entry.get("country_name", code),
        country_name=entry.get("country_name", ""),
        country_iso_code=code,
    )


def fixed_intensity(value: float, where: str, region: str | None = None, source: str | None = None,
                    year: int | None = None, rel_error: float | None = None) -> Intensity:
    if value is None or not math.isfinite(float(value)) or float(value) < 0:
        raise EcoevalError(f"{where}: expected a carbon intensity >= 0 g/kWh, got {value!r}")
    return Intensity(
        g_per_kwh=float(value),
        source=source or f"fixed value ({where})",
        year=year,
        rel_error=uncertainty_defaults()["intensity"]["fixed"] if rel_error is None else float(rel_error),
        mode="fixed",
        region=region or "",
        location=region or "unspecified",
        country_iso_code=region.upper() if region and len(region) == 3 and region.isalpha() else "",
    )


@dataclass(frozen=True)
class HourlySeries:
    """A step function of grid intensity: value k holds from start_s[k] to end_s[k] (epoch s)."""

    start_s: "object"  # numpy float64 arrays
    end_s: "object"
    g_per_kwh: "object"
    path: str
    sha256: str

    def weighted(self, t_s, cum_j, where: str) -> tuple[float, float, int | None]:
        """Energy-weighted intensity over one device's cumulative energy trace.

        Energy between two samples is spread evenly over that interval (constant power),
        then split at the series' hour boundaries. Returns (sum of dE x I in J g/kWh,
        sum of dE in J, year of the first hour used).
        """
        import numpy as np

        t = np.asarray(t_s, dtype=float)
        e = np.asarray(cum_j, dtype=float)
        order = np.argsort(t, kind="stable")
        t, e = t[order], e[order]
        if len(t) == 0:
            return 0.0, 0.0, None
        if t[0] < self.start_s[0] or t[-1] > self.end_s[-1]:
            raise EcoevalError(
                f"{where}: hourly intensity file {self.path} covers {_iso(self.start_s[0])} to {_iso(self.end_s[-1])}, "
                f"but the energy samples run from {_iso(t[0])} to {_iso(t[-1])}"
            )
        inner = self.start_s[(self.start_s > t[0]) & (self.start_s < t[-1])]
        grid = np.union1d(t, inner)
        e_grid = np.interp(grid, t, e)
        d_e = np.diff(e_grid)
        if len(d_e) == 0:
            k = int(np.searchsorted(self.start_s, t[0], side="right") - 1)
            return 0.0, 0.0, _year(self.start_s[k])
        mid = (grid[:-1] + grid[1:]) / 2
        k = np.searchsorted(self.start_s, mid, side="right") - 1
        if np.any(mid >= self.end_s[k]):
            gap = mid[mid >= self.end_s[k]][0]
            raise EcoevalError(f"{where}: hourly intensity file {self.path} has no value for {_iso(gap)} (a gap in the series)")
        return float(np.sum(d_e * self.g_per_kwh[k])), float(np.sum(d_e)), _year(self.start_s[k[0]])

    def at(self, t: float) -> float:
        import numpy as np

        k = int(np.searchsorted(self.start_s, t, side="right") - 1)
        return float(self.g_per_kwh[max(k, 0)])


def _iso(t_s: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(float(t_s), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _year(t_s: float) -> int:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(float(t_s), tz=timezone.utc).year


def _epoch_s(values) -> "object":
    """Timestamps (pandas/pyarrow, tz-aware or naive=UTC) as float seconds since the epoch."""
    import pandas as pd

    ts = pd.to_datetime(pd.Series(values), utc=True)
    return ((ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def read_hourly_csv(path: str | Path, where: str) -> HourlySeries:
    """Read `datetime,carbon_intensity_g_per_kwh` (each row: the hour starting at datetime)."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise EcoevalError(f"{where}: hourly intensity file {path} not found")
    try:
        df = pd.read_csv(path, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EcoevalError(f"{where}: hourly intensity file {path} is not a readable CSV ({str(exc).splitlines()[0]})") from None
    t_col = next((c for c in HOURLY_TIME_COLUMNS if c in df.columns), None)
    v_col = next((c for c in HOURLY_VALUE_COLUMNS if c in df.columns), None)
    if t_col is None or v_col is None:
        raise EcoevalError(f"{where}: hourly intensity file {path} needs columns datetime,carbon_intensity_g_per_kwh, found {list(df.columns)}")
    if df.empty:
        raise EcoevalError(f"{where}: hourly intensity file {path} has no rows")
    try:
        start = _epoch_s(df[t_col])
    except (ValueError, TypeError) as exc:
        raise EcoevalError(f"{where}: hourly intensity file {path}: column {t_col} is not a date-time ({exc})") from None
    values = pd.to_numeric(df[v_col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(np.argmax(bad)) + 2
        raise EcoevalError(f"{where}: hourly intensity file {path} line {row}: expected an intensity >= 0 g/kWh, got {df[v_col].iloc[row - 2]!r}")
    order = np.argsort(start, kind="stable")
    start, values = start[order], values[order]
    if len(start) > 1 and np.any(np.diff(start) == 0):
        raise EcoevalError(f"{where}: hourly intensity file {path} has duplicate date-times")
    step = float(np.median(np.diff(start))) if len(start) > 1 else 3600.0
    # each value holds until the next row, but never longer than one step (a longer gap is missing data)
    end = np.minimum(np.append(start[1:], start[-1] + step), start + step)
    return HourlySeries(start, end, values, str(path), _sha256(path))


def _sha256(path: Path) -> str:
    from ecoeval.io import sha256_file

    return sha256_file(path)


# --------------------------------------------------------------------------------------
# the arithmetic shared by the pipeline and the calculator
# --------------------------------------------------------------------------------------
def account(
    *,
    energy_kwh: float,
    wall_s: float,
    n_devices: int,
    pue: float,
    intensity: Intensity,
    energy_rel_error: float,
    market_factor: float = 1.0,
    embodied_kg_per_device: float = 0.0,
    lifetime_years: float = 4.0,
    utilization: float = 0.5,
    electricity_usd_per_kwh: float = 0.0,
    hardware_usd_per_hour: float = 0.0,
) -> dict:
    """Every derived number of one stage x scenario, from its factors (see the module docstring)."""
    if pue < 1:
        raise EcoevalError(f"pue: expected a value >= 1, got {pue!r}")
    if energy_kwh < 0 or wall_s < 0:
        raise EcoevalError(f"energy and time: expected values >= 0, got {energy_kwh!r} kWh over {wall_s!r} s")
    facility = energy_kwh * pue
    co2e = facility * intensity.g_per_kwh * market_factor / 1000.0
    rel = math.hypot(energy_rel_error, intensity.rel_error)
    hours = wall_s / 3600.0
    share = hours / (lifetime_years * HOURS_PER_YEAR * utilization)
    embodied = n_devices * embodied_kg_per_device * share
    energy_cost = facility * electricity_usd_per_kwh
    hardware_cost = n_devices * hours * hardware_usd_per_hour
    return {
        "n_devices": int(n_devices),
        "wall_s": float(wall_s),
        "energy_kwh": float(energy_kwh),
        "pue": float(pue),
        "energy_kwh_facility": float(facility),
        "intensity_g_per_kwh": float(intensity.g_per_kwh),
        "intensity_source": intensity.source,
        "intensity_year": intensity.year,
        "market_factor": float(market_factor),
        "co2e_kg": float(co2e),
        "energy_rel_error": float(energy_rel_error),
        "intensity_rel_error": float(intensity.rel_error),
        "co2e_kg_low": float(co2e * max(0.0, 1.0 - rel)),
        "co2e_kg_high": float(co2e * (1.0 + rel)),
        "embodied_kg_per_device": float(embodied_kg_per_device),
        "lifetime_years": float(lifetime_years),
        "utilization": float(utilization),
        "embodied_co2e_kg": float(embodied),
        "total_co2e_kg": float(co2e + embodied),
        "electricity_usd_per_kwh": float(electricity_usd_per_kwh),
        "hardware_usd_per_hour": float(hardware_usd_per_hour),
        "energy_cost_usd": float(energy_cost),
        "hardware_cost_usd": float(hardware_cost),
        "cost_usd": float(energy_cost + hardware_cost),
    }


# --------------------------------------------------------------------------------------
# the pipeline stage
# --------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ["stage", "device", "domain", "method", "energy_j", "wall_s"]
FORMULA_COLUMNS = ["formula_steps", "formula_step_time_s", "formula_power_w", "formula_energy_j"]


def _is_gpu(device: str) -> bool:
    return str(device).lower().startswith("gpu")


def _device_kind(device: str, domain: str) -> str:
    d, dom = str(device).lower(), str(domain).lower()
    if d.startswith("gpu"):
        return "gpu"
    if d in ("ram", "dram", "memory") or dom == "dram":
        return "ram"
    return "cpu"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def stage_energy(summary, basis: str) -> list[dict]:
    """Aggregate energy/summary.parquet rows into one record per stage, in pipeline order."""
    rows = summary.to_pylist()
    stages: dict[str, dict] = {}
    for r in rows:
        st = stages.setdefault(r["stage"], {"stage": r["stage"], "rows": []})
        st["rows"].append(r)
    order = [s for s in STAGE_ORDER if s in stages] + sorted(s for s in stages if s not in STAGE_ORDER)
    out = []
    for name in order:
        rs = stages[name]["rows"]
        energies = []
        for r in rs:
            e = r.get("attributed_energy_j") if basis == "attributed" else None
            energies.append(float(e) if _present(e) else float(r["energy_j"] or 0.0))
        total_j = sum(energies)
        weights = energies if total_j > 0 else [1.0] * len(rs)
        rel = sum(w * energy_rel_error(r["method"]) for w, r in zip(weights, rs)) / sum(weights)
        gpus = sorted({r["device"] for r in rs if _is_gpu(r["device"])})
        by_kind: dict[str, float] = {}
        for e, r in zip(energies, rs):
            k = _device_kind(r["device"], r["domain"])
            by_kind[k] = by_kind.get(k, 0.0) + e
        formula = [r for r in rs if _present(r.get("formula_energy_j"))]
        out.append({
            "stage": name,
            "energy_j": total_j,
            "energy_j_by_kind": by_kind,
            "wall_s": max(float(r["wall_s"] or 0.0) for r in rs),
            "devices": ",".join(sorted({str(r["device"]) for r in rs})),
            "methods": ",".join(sorted({str(r["method"]) for r in rs})),
            "gpus": gpus,
            "n_devices": max(len(gpus), 1),
            "energy_rel_error": rel,
            "formula_steps": int(formula[0]["formula_steps"]) if formula and _present(formula[0].get("formula_steps")) else None,
            "formula_step_time_s": float(formula[0]["formula_step_time_s"]) if formula and _present(formula[0].get("formula_step_time_s")) else None,
            "formula_power_w": sum(float(r["formula_power_w"]) for r in formula if _present(r.get("formula_power_w"))) if formula else None,
            "formula_energy_j": sum(float(r["formula_energy_j"]) for r in formula) if formula else None,
        })
    return out


def _read_samples(inputs: dict, stage: str, needed: bool):
    """The stage's energy samples (pyarrow Table) or None when not given and not needed."""
    from ecoeval.io import read_parquet

    key = f"samples_{stage}"
    if key not in inputs:
        if needed:
            raise EcoevalError(f"carbon inputs: hourly intensity needs the energy samples of stage {stage!r} (input {key}), which were not given")
        return None
    return read_parquet(inputs[key], columns=["timestamp_utc", "device", "domain", "energy_j"])


def _hourly_stage_intensity(series: HourlySeries, samples, where: str) -> tuple[float, int | None]:
    """Energy-weighted intensity of one stage's samples (all device/domain series)."""
    import numpy as np

    df = samples.to_pandas()
    if df.empty:
        raise EcoevalError(f"{where}: the stage has no energy samples to join with the hourly intensity")
    t_all = _epoch_s(df["timestamp_utc"])
    num = den = 0.0
    year = None
    for _, idx in sorted(df.groupby(["device", "domain"], dropna=False).indices.items()):
        mask = idx
        n, d, y = series.weighted(t_all[mask], df["energy_j"].to_numpy(dtype=float)[mask], where)
        num, den = num + n, den + d
        year = year if year is not None else y
    if den > 0:
        return num / den, year
    return series.at(float(np.min(t_all))), year  # no energy: the intensity when the stage began


def resolve_scenario(sc: dict, index: int) -> Intensity | HourlySeries:
    where = f"carbon.scenarios.{index}"
    mode = sc.get("mode", "annual")
    if mode == "fixed":
        return fixed_intensity(
            sc.get("intensity_g_per_kwh"), f"{where}.intensity_g_per_kwh", region=sc.get("region"),
            source=sc.get("intensity_source"), year=sc.get("intensity_year"), rel_error=sc.get("intensity_rel_error"),
        )
    if "region" not in sc:
        raise EcoevalError(f"{where}.region: mode {mode!r} needs a region")
    base = region_intensity(sc["region"], f"{where}.region")  # validates the region in every mode
    if mode == "hourly":
        if not sc.get("hourly_csv"):
            raise EcoevalError(f"{where}.hourly_csv: mode 'hourly' needs hourly_csv")
        return read_hourly_csv(sc["hourly_csv"], f"{where}.hourly_csv")
    if sc.get("intensity_rel_error") is not None:
        base = Intensity(**{**base.__dict__, "rel_error": float(sc["intensity_rel_error"])})
    return base


def carbon_rows(summary, inputs: dict, carbon: dict, experiment: str) -> list[dict]:
    """One record per stage x scenario (columns CARBON_COLUMNS plus private helpers)."""
    basis = carbon.get("energy_basis", "attributed")
    stages = stage_energy(summary, basis)
    rows = []
    for i, sc in enumerate(carbon["scenarios"]):
        resolved = resolve_scenario(sc, i)
        region_info = region_intensity(sc["region"], f"carbon.scenarios.{i}.region") if sc.get("region") and sc.get("mode") == "hourly" else None
        for st in stages:
            where = f"carbon.scenarios.{i} ({sc['name']}), stage {st['stage']}"
            if isinstance(resolved, HourlySeries):
                samples = _read_samples(inputs, st["stage"], needed=True)
                g, year = _hourly_stage_intensity(resolved, samples, where)
                intensity = Intensity(
                    g_per_kwh=g,
                    source=f"hourly CSV {resolved.path} (sha256 {resolved.sha256[:12]}), energy-weighted over the stage's samples",
                    year=year,
                    rel_error=float(sc["intensity_rel_error"]) if sc.get("intensity_rel_error") is not None else uncertainty_defaults()["intensity"]["hourly"],
                    mode="hourly",
                    region=region_info.region,
                    location=region_info.location,
                    country_name=region_info.country_name,
                    country_iso_code=region_info.country_iso_code,
                    cloud_provider=region_info.cloud_provider,
                    cloud_region=region_info.cloud_region,
                )
            else:
                intensity = resolved
            if sc.get("embodied_kg") is not None:
                emb_kg, emb_src = float(sc["embodied_kg"]), f"config carbon.scenarios.{i}.embodied_kg"
            else:
                emb_kg, emb_src = default_embodied_per_device(bool(st["gpus"]))
            acc = account(
                energy_kwh=st["energy_j"] / 3.6e6,
                wall_s=st["wall_s"],
                n_devices=st["n_devices"],
                pue=float(sc.get("pue", 1.0)),
                intensity=intensity,
                energy_rel_error=st["energy_rel_error"],
                market_factor=float(sc.get("market_factor", 1.0)),
                embodied_kg_per_device=emb_kg,
                lifetime_years=float(sc.get("lifetime_years", 4.0)),
                utilization=float(sc.get("utilization", 0.5)),
                electricity_usd_per_kwh=float(sc.get("electricity_usd_per_kwh", 0.15)),
                hardware_usd_per_hour=float(sc.get("hardware_usd_per_hour", 0.0)),
            )
            f_kwh = st["formula_energy_j"] / 3.6e6 if st["formula_energy_j"] is not None else None
            row = {
                "experiment": experiment,
                "stage": st["stage"],
                "scenario": sc["name"],
                "region": intensity.region,
                "intensity_mode": intensity.mode,
                "devices": st["devices"],
                "methods": st["methods"],
                **acc,
                "embodied_source": emb_src,
                "formula_steps": st["formula_steps"],
                "formula_step_time_s": st["formula_step_time_s"],
                "formula_power_w": st["formula_power_w"],
                "formula_energy_kwh": f_kwh,
                "formula_co2e_kg": f_kwh * acc["pue"] * acc["intensity_g_per_kwh"] * acc["market_factor"] / 1000.0 if f_kwh is not None else None,
                "_intensity": intensity,
                "_stage": st,
                "_basis": basis,
            }
            rows.append(row)
    return rows


def _carbon_table(rows: list[dict]):
    import pyarrow as pa

    types = {
        "n_devices": pa.int64(), "intensity_year": pa.int64(), "formula_steps": pa.int64(),
        **{c: pa.string() for c in ("experiment", "stage", "scenario", "region", "intensity_mode", "devices",
                                     "methods", "intensity_source", "embodied_source")},
    }
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in CARBON_COLUMNS])
    return pa.Table.from_pylist([{c: r[c] for c in CARBON_COLUMNS} for r in rows], schema=schema)


def _stage_times(samples) -> tuple[str, float | None]:
    """(end timestamp like CodeCarbon's, mean CPU utilisation in %) of a stage's samples."""
    if samples is None or samples.num_rows == 0:
        return "", None
    df = samples.to_pandas()
    end = _epoch_s(df["timestamp_utc"]).max()
    from datetime import datetime, timezone

    ts = datetime.fromtimestamp(float(end), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    util = None
    if "utilization" in df.columns:
        cpu = df[df["device"].astype(str).str.lower().str.startswith("cpu")]["utilization"].dropna()
        util = float(cpu.mean() * 100.0) if len(cpu) else None
    return ts, util


def emissions_records(rows: list[dict], inputs: dict, logical_cpus: int | None = None) -> list[dict]:
    """CodeCarbon `emissions.csv` rows (its EmissionsData fields and units) for carbon rows.

    Units as CodeCarbon writes them: duration s, emissions kg, emissions_rate kg/s, *_power W
    and *_energy / energy_consumed kWh, both with the PUE applied, water_consumed L.
    """
    import dataclasses

    from codecarbon.output_methods.emissions_data import EmissionsData

    cc = codecarbon_data()
    stage_info: dict[str, tuple] = {}
    out = []
    for r in rows:
        st, it = r["_stage"], r["_intensity"]
        if st["stage"] not in stage_info:
            extra = None
            if f"samples_{st['stage']}" in inputs:
                from ecoeval.io import read_parquet

                extra = read_parquet(inputs[f"samples_{st['stage']}"])
            stage_info[st["stage"]] = _stage_times(extra)
        ts, cpu_util = stage_info[st["stage"]]
        pue, wall = r["pue"], r["wall_s"]
        kwh = {k: st["energy_j_by_kind"].get(k, 0.0) / 3.6e6 * pue for k in ("cpu", "gpu", "ram")}
        power = {k: (v * 3.6e6 / wall if wall > 0 else 0.0) for k, v in kwh.items()}
        rec = EmissionsData(
            timestamp=ts,
            project_name=r["experiment"],
            run_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecoeval/{r['experiment']}/{r['stage']}/{r['scenario']}")),
            experiment_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecoeval/{r['experiment']}/{r['scenario']}")),
            duration=wall,
            emissions=r["co2e_kg"],
            emissions_rate=r["co2e_kg"] / wall if wall > 0 else 0.0,
            cpu_power=power["cpu"],
            gpu_power=power["gpu"],
            ram_power=power["ram"],
            cpu_energy=kwh["cpu"],
            gpu_energy=kwh["gpu"],
            ram_energy=kwh["ram"],
            energy_consumed=r["energy_kwh_facility"],
            water_consumed=0.0,
            country_name=it.country_name,
            country_iso_code=it.country_iso_code,
            region="",
            cloud_provider=it.cloud_provider,
            cloud_region=it.cloud_region,
            os=platform.platform(),
            python_version=platform.python_version(),
            codecarbon_version=cc["version"],
            cpu_count=float(logical_cpus) if logical_cpus else float("nan"),
            cpu_model="",
            gpu_count=float(len(st["gpus"])),
            gpu_model="",
            longitude=float("nan"),
            latitude=float("nan"),
            ram_total_size=float("nan"),
            tracking_mode="process" if r["_basis"] == "attributed" else "machine",
            cpu_utilization_percent=cpu_util if cpu_util is not None else 0.0,
            on_cloud="Y" if it.cloud_provider else "N",
            pue=pue,
            wue=0.0,
        )
        assert [f.name for f in dataclasses.fields(rec)] == list(rec.values)
        out.append(dict(rec.values))
    return out


def model_card_blocks(rows: list[dict], scenario: str) -> dict:
    """Hugging Face `co2_eq_emissions` blocks (emissions in grams) for the trained models."""
    models = {}
    for r in rows:
        if r["scenario"] != scenario or r["stage"] not in TRAINING_TYPE:
            continue
        st, it = r["_stage"], r["_intensity"]
        hardware = ", ".join(f"{len(st['gpus'])} x GPU ({', '.join(st['gpus'])})" if k == "gpu" else k
                             for k in sorted({_device_kind(d, "") for d in st["devices"].split(",")}))
        models[r["stage"]] = {
            "model_dir": f"{r['stage']}/model",
            "co2_eq_emissions": {
                "emissions": r["co2e_kg"] * 1000.0,
                "source": (
                    f"ecoeval {__version__}: measured energy ({r['methods']}) x PUE {r['pue']:g} x "
                    f"{r['intensity_g_per_kwh']:.1f} gCO2e/kWh ({r['intensity_source']}"
                    + (f", {r['intensity_year']}" if r["intensity_year"] is not None else "") + ")"
                ),
                "training_type": TRAINING_TYPE[r["stage"]],
                "geographical_location": it.location,
                "hardware_used": f"{hardware}; {r['wall_s'] / 3600.0:.4g} h",
            },
        }
    return {"scenario": scenario, "models": models}


def run(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    """The `carbon` stage: energy/summary.parquet (+ samples) -> carbon.parquet, emissions.csv, card."""
    from ecoeval.io import read_metadata, read_parquet, write_json, write_parquet, write_text

    carbon = params["carbon"]
    experiment = params.get("experiment", "")
    if "summary" not in inputs:
        raise EcoevalError("carbon inputs: missing 'summary' (energy/summary.parquet)")
    summary = read_parquet(inputs["summary"], columns=None)
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.column_names]
    if missing:
        raise EcoevalError(f"input file {inputs['summary']}: missing columns {missing}")
    if summary.num_rows == 0:
        raise EcoevalError(f"input file {inputs['summary']}: no rows (no stage energy to account for)")
    for c in FORMULA_COLUMNS + ["attributed_energy_j"]:
        if c not in summary.column_names:
            import pyarrow as pa

            summary = summary.append_column(c, pa.nulls(summary.num_rows, pa.float64()))
    unknown = sorted(set(summary.column("method").to_pylist()) - set(uncertainty_defaults()["energy_method"]))
    if unknown:
        raise EcoevalError(f"input file {inputs['summary']}: unknown energy method(s) {unknown} (expected counter, sampled, estimate)")

    rows = carbon_rows(summary, inputs, carbon, experiment)
    logical = None
    for stage in STAGE_ORDER:
        key = f"samples_{stage}"
        if key in inputs and Path(inputs[key]).is_file():
            logical = (read_metadata(inputs[key]).get("assumptions") or {}).get("logical_cpus")
            if logical:
                break
    meta = {
        "experiment": experiment,
        "energy_basis": carbon.get("energy_basis", "attributed"),
        "scenarios": carbon["scenarios"],
        "codecarbon_version": codecarbon_data()["version"],
        "uncertainty_defaults": uncertainty_defaults(),
        "formulas": __doc__.split("\n\n")[1],
    }
    records = emissions_records(rows, inputs, logical)
    import pandas as pd

    write_parquet(_carbon_table(rows), outputs["carbon"], metadata=meta)
    write_text(pd.DataFrame.from_records(records).to_csv(index=False), outputs["emissions"])
    write_json(model_card_blocks(rows, carbon["scenarios"][0]["name"]), outputs["card"])


# --------------------------------------------------------------------------------------
# ecoeval carbon estimate
# --------------------------------------------------------------------------------------
def estimate(
    *,
    devices: int,
    power_w: float,
    hours: float,
    pue: float,
    intensity_g_per_kwh: float | None = None,
    region: str | None = None,
    market_factor: float = 1.0,
    embodied_kg: float | None = None,
    lifetime_years: float = 4.0,
    utilization: float = 0.5,
    electricity_usd_per_kwh: float = 0.0,
    hardware_usd_per_hour: float = 0.0,
    method: str = "estimate",
) -> dict:
    """Back-of-the-envelope: N devices x W watts x H hours, through the pipeline's `account`."""
    checks = [
        ("--devices", devices, devices >= 1, "an integer >= 1"),
        ("--power-w", power_w, power_w >= 0, "a value >= 0"),
        ("--hours", hours, hours >= 0, "a value >= 0"),
        ("--pue", pue, pue >= 1, "a value >= 1"),
        ("--market-factor", market_factor, 0 <= market_factor <= 1, "a value between 0 and 1"),
        ("--lifetime-years", lifetime_years, lifetime_years > 0, "a value > 0"),
        ("--utilization", utilization, 0 < utilization <= 1, "a value in (0, 1]"),
        ("--electricity-usd-per-kwh", electricity_usd_per_kwh, electricity_usd_per_kwh >= 0, "a value >= 0"),
        ("--hardware-usd-per-hour", hardware_usd_per_hour, hardware_usd_per_hour >= 0, "a value >= 0"),
    ]
    if embodied_kg is not None:
        checks.append(("--embodied-kg", embodied_kg, embodied_kg >= 0, "a value >= 0"))
    for flag, value, ok, expected in checks:
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise EcoevalError(f"{flag}: expected {expected}, got {value!r}")
    if (intensity_g_per_kwh is None) == (region is None):
        raise EcoevalError("--intensity-g-per-kwh / --region: give exactly one of them")
    if region is not None:
        intensity = region_intensity(region, "--region")
    else:
        intensity = fixed_intensity(intensity_g_per_kwh, "--intensity-g-per-kwh")
    energy_kwh_it = devices * power_w * hours / 1000.0
    acc = account(
        energy_kwh=energy_kwh_it,
        wall_s=hours * 3600.0,
        n_devices=devices,
        pue=pue,
        intensity=intensity,
        energy_rel_error=energy_rel_error(method),
        market_factor=market_factor,
        embodied_kg_per_device=embodied_kg or 0.0,
        lifetime_years=lifetime_years,
        utilization=utilization,
        electricity_usd_per_kwh=electricity_usd_per_kwh,
        hardware_usd_per_hour=hardware_usd_per_hour,
    )
    return {
        "devices": devices,
        "power_w": power_w,
        "hours": hours,
        "region": intensity.region,
        "method": method,
        **acc,
        # the headline energy is the facility's (PUE included); the IT energy stays next to it
        "energy_kwh_it": acc["energy_kwh"],
        "energy_kwh": acc["energy_kwh_facility"],
    }


def _cmd_estimate(args: argparse.Namespace) -> int:
    result = estimate(
        devices=args.devices, power_w=args.power_w, hours=args.hours, pue=args.pue,
        intensity_g_per_kwh=args.intensity_g_per_kwh, region=args.region, market_factor=args.market_factor,
        embodied_kg=args.embodied_kg, lifetime_years=args.lifetime_years, utilization=args.utilization,
        electricity_usd_per_kwh=args.electricity_usd_per_kwh, hardware_usd_per_hour=args.hardware_usd_per_hour,
        method=args.method,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    year = f", {result['intensity_year']}" if result["intensity_year"] is not None else ""
    lines = [
        f"energy (IT)        {result['energy_kwh_it']:.6g} kWh  = {args.devices} x {args.power_w:g} W x {args.hours:g} h",
        f"energy (facility)  {result['energy_kwh']:.6g} kWh  (PUE {args.pue:g})",
        f"grid intensity     {result['intensity_g_per_kwh']:.6g} gCO2e/kWh  ({result['intensity_source']}{year})",
        f"operational CO2e   {result['co2e_kg']:.6g} kg  [{result['co2e_kg_low']:.6g}, {result['co2e_kg_high']:.6g}]",
        f"embodied CO2e      {result['embodied_co2e_kg']:.6g} kg",
        f"cost               {result['cost_usd']:.2f} USD",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (`ecoeval carbon estimate: error: ...`), exit 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("carbon", help="carbon and cost accounting")
    sub = p.add_subparsers(dest="carbon_command", required=True, parser_class=_OneLineParser)
    e = sub.add_parser(
        "estimate",
        help="back-of-the-envelope CO2e and cost: N devices x W watts x H hours",
        description="Energy = devices x power x hours x PUE; CO2e = energy x grid intensity (x market factor); "
        "plus embodied emissions and money. The same arithmetic as the pipeline's carbon stage.",
    )
    e.add_argument("--devices", type=int, required=True, help="number of devices (GPUs, or hosts)")
    e.add_argument("--power-w", type=float, required=True, help="mean power per device, W")
    e.add_argument("--hours", type=float, required=True, help="wall-clock hours")
    e.add_argument("--pue", type=float, default=1.0, help="data-centre PUE (>= 1; default 1.0)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--intensity-g-per-kwh", type=float, help="grid carbon intensity, gCO2e/kWh")
    src.add_argument("--region", help="ISO 3166 alpha-3 country (FRA) or cloud region (gcp:us-central1)")
    e.add_argument("--market-factor", type=float, default=1.0, help="share of emissions left after clean-energy purchases (default 1)")
    e.add_argument("--embodied-kg", type=float, help="manufacturing footprint per device, kgCO2e")
    e.add_argument("--lifetime-years", type=float, default=4.0, help="device lifetime for amortising --embodied-kg (default 4)")
    e.add_argument("--utilization", type=float, default=0.5, help="share of its lifetime the device is busy (default 0.5)")
    e.add_argument("--electricity-usd-per-kwh", type=float, default=0.0, help="electricity price (default 0)")
    e.add_argument("--hardware-usd-per-hour", type=float, default=0.0, help="price per device-hour (default 0)")
    e.add_argument("--method", choices=["counter", "sampled", "estimate"], default="estimate",
                   help="how the power figure was obtained; sets the energy uncertainty (default estimate)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_estimate)
