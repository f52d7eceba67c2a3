"""The report's figures, drawn with matplotlib (Agg, offline) and rendered as reproducible PNG.

Each figure function takes the experiments (and the summary table) and returns a
matplotlib Figure, or None when the results hold nothing to draw (the report then says so
instead of showing an empty frame).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ecoeval.report.collect import TRAINING_STAGES, Experiment, carbon_totals, stage_key

G_PER_KG = 1000.0


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _colors(names: list[str]) -> dict[str, str]:
    cycle = [f"C{i}" for i in range(10)]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _subplots(n: int, width: float = 4.2, height: float = 3.2, **kw):
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(max(width * n, 5.0), height), squeeze=False, **kw)
    return fig, list(axes[0])


# -- energy ---------------------------------------------------------------------------


def energy_over_time(exps: list[Experiment], summary: pd.DataFrame):
    """Cumulative energy per device over the experiment's active stage time (stages back to back)."""
    have = [x for x in exps if x.samples]
    if not have:
        return None
    fig, axes = _subplots(len(have), width=5.0, height=3.4, sharey=True)
    for ax, x in zip(axes, have):
        offset_t, offset_e, bounds = 0.0, {}, []
        curves: dict[str, tuple[list, list]] = {}
        for stage in sorted(x.samples, key=stage_key):
            s = x.samples[stage].sort_values("t_s")
            if s.empty:
                continue
            for (device, domain, method), g in s.groupby(["device", "domain", "method"], sort=True):
                label = f"{device}/{domain} ({method})"
                xs, ys = curves.setdefault(label, ([], []))
                base = offset_e.get(label, 0.0)
                xs.extend((offset_t + g["t_s"]).tolist())
                ys.extend((base + g["energy_j"]).tolist())
                offset_e[label] = base + float(g["energy_j"].max())
            span = float(s["t_s"].max())
            bounds.append((offset_t, stage))
            offset_t += span
        for label, (xs, ys) in sorted(curves.items()):
            ax.plot(xs, ys, label=label, lw=1.4)
        for t0, stage in bounds:
            ax.axvline(t0, color="0.6", lw=0.6, ls=":")
            ax.text(t0, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), fontsize=7, rotation=90, va="top", color="0.35")
        ax.set_title(x.name)
        ax.set_xlabel("stage time, back to back (s)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.88))
    axes[0].set_ylabel("cumulative energy (J)")
    return fig


def energy_by_stage(exps: list[Experiment], summary: pd.DataFrame):
    """Energy per stage, stacked by device (method in the legend), one panel per experiment."""
    fig, axes = _subplots(len(exps), sharey=True)
    for ax, x in zip(axes, exps):
        e = x.energy
        stages = sorted(e["stage"].unique(), key=stage_key)
        keys = sorted({(r.device, r.domain, r.method) for r in e.itertuples()})
        bottom = np.zeros(len(stages))
        for device, domain, method in keys:
            g = e[(e["device"] == device) & (e["domain"] == domain) & (e["method"] == method)]
            vals = np.array([g.loc[g["stage"] == s, "energy_j"].sum() for s in stages], dtype=float)
            ax.bar(stages, vals, bottom=bottom, label=f"{device}/{domain} ({method})")
            bottom += vals
        ax.set_title(x.name)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("energy (J)")
    return fig


def formula_vs_measured(exps: list[Experiment], summary: pd.DataFrame):
    """Training stages: formula estimate C = N x T x P beside the measured energy."""
    rows = []
    for x in exps:
        e = x.energy
        if "formula_energy_j" not in e:
            continue
        for stage in TRAINING_STAGES:
            g = e[e["stage"] == stage]
            f = g["formula_energy_j"].dropna()
            if len(f):
                rows.append((f"{x.name}\n{stage}", float(g["energy_j"].sum()), float(f.sum()), "+".join(sorted(set(g["method"])))))
    if not rows:
        return None
    fig, axes = _subplots(1, width=max(2.0 * len(rows), 5.0))
    ax = axes[0]
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r[1] for r in rows], width=0.4, label="measured (method per bar)", color="C0")
    ax.bar(pos + 0.2, [r[2] for r in rows], width=0.4, label="formula N x T x P", color="C1")
    for p, r in zip(pos, rows):
        ax.text(p - 0.2, r[1], r[3], ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pos, [r[0] for r in rows])
    ax.set_ylabel("energy (J)")
    ax.legend(fontsize=7)
    return fig


# -- carbon and cost -------------------------------------------------------------------


def _per_scenario(exps: list[Experiment]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    scenarios: list[str] = []
    totals = {}
    for x in exps:
        t = carbon_totals(x)
        totals[x.name] = t.set_index("scenario")
        scenarios.extend(s for s in t["scenario"] if s not in scenarios)
    return scenarios, totals


def _scenario_bars(exps: list[Experiment], column: str, ylabel: str, scale: float = 1.0, errors: bool = False):
    """Grouped bars: one group per scenario (region below its name), one bar per experiment."""
    scenarios, totals = _per_scenario(exps)
    if not scenarios:
        return None
    fig, axes = _subplots(1, width=max(1.6 * len(scenarios) * max(len(exps), 1), 5.0))
    ax = axes[0]
    width = 0.8 / max(len(exps), 1)
    pos = np.arange(len(scenarios))
    colors = _colors([x.name for x in exps])

    def values(t, col):
        return np.array([t.loc[s, col] * scale if s in t.index else np.nan for s in scenarios], dtype=float)

    for i, x in enumerate(exps):
        t = totals[x.name]
        if column not in t:
            continue
        vals, yerr = values(t, column), None
        if errors and {"co2e_kg_low", "co2e_kg_high"} <= set(t.columns):
            yerr = np.vstack([np.clip(vals - values(t, "co2e_kg_low"), 0, None), np.clip(values(t, "co2e_kg_high") - vals, 0, None)])
        ax.bar(pos + (i - (len(exps) - 1) / 2) * width, vals, width=width, yerr=yerr, capsize=3, label=x.name, color=colors[x.name])
    region = {s: t.loc[s, "region"] for t in totals.values() if "region" in t for s in t.index}
    ax.set_xticks(pos, [f"{s}\n{region[s]}" if isinstance(region.get(s), str) else s for s in scenarios])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return fig


def carbon_by_scenario(exps: list[Experiment], summary: pd.DataFrame):
    """Operational CO2e per scenario (all stages), error bars from co2e_kg_low to co2e_kg_high."""
    return _scenario_bars(exps, "co2e_kg", "CO2e (g), bars: low to high bound", scale=G_PER_KG, errors=True)


def cost_by_scenario(exps: list[Experiment], summary: pd.DataFrame):
    """Money cost per scenario (all stages)."""
    return _scenario_bars(exps, "cost_usd", "cost (USD)")


def embodied_share(exps: list[Experiment], summary: pd.DataFrame):
    """Operational and embodied CO2e per experiment and scenario, stacked."""
    scenarios, totals = _per_scenario(exps)
    if not scenarios or not any("embodied_co2e_kg" in t for t in totals.values()):
        return None
    labels, op, emb = [], [], []
    for x in exps:
        t = totals[x.name]
        for s in t.index:
            labels.append(f"{x.name}\n{s}")
            op.append(float(t.loc[s, "co2e_kg"]) * G_PER_KG)
            emb.append(float(t.loc[s, "embodied_co2e_kg"]) * G_PER_KG if "embodied_co2e_kg" in t else 0.0)
    fig, axes = _subplots(1, width=max(1.1 * len(labels), 5.0))
    ax = axes[0]
    pos = np.arange(len(labels))
    ax.bar(pos, op, label="operational", color="C0")
    ax.bar(pos, emb, bottom=op, label="embodied (amortised)", color="C3")
    for p, o, e in zip(pos, op, emb):
        share = e / (o + e) if (o + e) > 0 else math.nan
        ax.text(p, o + e, f"{share:.0%}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pos, labels, fontsize=7)
    ax.set_ylabel("CO2e (g); label: embodied share")
    ax.set_ylim(0, 1.3 * max(o + e for o, e in zip(op, emb)))
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    return fig


# -- training ---------------------------------------------------------------------------


def training_curves(exps: list[Experiment], summary: pd.DataFrame):
    """Training loss per step; validation loss where logged (column eval_loss) or the final eval."""
    if not any(x.pretrain_log is not None or x.finetune_log is not None for x in exps):
        return None
    fig, axes = _subplots(2, width=4.8)
    colors = _colors([x.name for x in exps])
    for ax, which in zip(axes, TRAINING_STAGES):
        for x in exps:
            log = getattr(x, f"{which}_log")
            if log is None or log.empty:
                continue
            log = log.sort_values("step")
            ax.plot(log["step"], log["loss"], color=colors[x.name], lw=1.3, label=f"{x.name} train")
            if "eval_loss" in log and log["eval_loss"].notna().any():
                v = log.dropna(subset=["eval_loss"])
                ax.plot(v["step"], v["eval_loss"], color=colors[x.name], ls="--", marker="o", ms=3, label=f"{x.name} validation")
            elif which == "pretrain" and not math.isnan(x.metric("pretrain", "eval_loss", "validation")):
                ax.plot([log["step"].max()], [x.metric("pretrain", "eval_loss", "validation")], marker="D",
                        color=colors[x.name], ls="none", label=f"{x.name} validation (final)")
        ax.set_title(f"{which}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (MLM cross-entropy)" if which == "pretrain" else "loss (cross-entropy)")
        ax.legend(fontsize=7)
    return fig


# -- fairness ---------------------------------------------------------------------------


def reference_value(metric: str) -> float | None:
    """The value a metric takes for an unbiased model (dashed line in the forest plots)."""
    if metric.startswith("crows_pairs") and metric != "crows_pairs_neutral" or metric in ("stereoset_ss", "ss"):
        return 50.0
    if metric.endswith("_ratio"):
        return 1.0
    if any(k in metric for k in ("difference", "flip_rate", "delta", "weat", "effect_size")):
        return 0.0
    return None


def _forest_panels(panels: list[tuple[str, list[tuple[str, float, float, float, str]]]], xlabel: str):
    """One forest panel per metric: a dot per row with its interval; rows are (label, v, lo, hi, color)."""
    panels = [(t, r) for t, r in panels if r]
    if not panels:
        return None
    plt = _plt()
    heights = [len(r) + 1.2 for _, r in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 0.6 + 0.24 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, rows) in zip(axes[:, 0], panels):
        ys = np.arange(len(rows))[::-1]
        for y, (label, v, lo, hi, color) in zip(ys, rows):
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.hlines(y, lo, hi, color=color, lw=2)
            ax.plot([v], [y], "o", color=color, ms=5)
        ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ref = reference_value(title.split(" ")[0])
        if ref is not None:
            ax.axvline(ref, color="0.4", lw=0.8, ls="--")
        ax.set_title(title, fontsize=8, loc="left")
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def _by_metric(exps, kind, select, label) -> list[tuple[str, list]]:
    """Rows selected from every experiment's `kind` table, grouped into one panel per metric."""
    colors = _colors([x.name for x in exps])
    panels: dict[str, list] = {}
    for x in exps:
        df = getattr(x, kind)
        for r in df[select(df)].itertuples():
            if math.isnan(float(r.value)):
                continue
            panels.setdefault(r.metric, []).append((label(x.name, r), float(r.value), float(r.ci_low), float(r.ci_high), colors[x.name]))
    return list(panels.items())


def fairness_forest(exps: list[Experiment], summary: pd.DataFrame):
    """Every fairness metric with an interval on the whole set (subset all), one panel per metric."""
    def with_ci(d):
        return (d["subset"] == "all") & d["ci_low"].notna() & d["ci_high"].notna()

    panels = [(f"{m} (intrinsic)", r) for m, r in _by_metric(exps, "intrinsic", with_ci, lambda n, r: n)]
    panels += [(f"{m} (extrinsic)", r) for m, r in _by_metric(exps, "extrinsic", with_ci, lambda n, r: n)]
    return _forest_panels(panels, "value with confidence interval (dashed: unbiased)")


def bias_types(exps: list[Experiment], summary: pd.DataFrame):
    """CrowS-Pairs score per subset (bias type, stereo/antistereo) with intervals."""
    panels = _by_metric(exps, "intrinsic", lambda d: (d["metric"] == "crows_pairs") & (d["subset"] != "all"),
                        lambda n, r: f"{n}: {r.subset}")
    return _forest_panels(panels, "CrowS-Pairs score (%; 50 = unbiased)")


def per_group(exps: list[Experiment], summary: pd.DataFrame):
    """Classifier metrics per group (subsets like group=female), with intervals, one panel per metric."""
    panels = _by_metric(exps, "extrinsic", lambda d: d["subset"].str.contains("=", regex=False), lambda n, r: f"{n}: {r.subset}")
    return _forest_panels(panels, "value with confidence interval")


def counterfactual(exps: list[Experiment], summary: pd.DataFrame):
    """Counterfactual metrics (identity terms swapped), overall and per term pair."""
    panels = _by_metric(exps, "extrinsic", lambda d: d["metric"].str.startswith("counterfactual"), lambda n, r: f"{n}: {r.subset}")
    return _forest_panels(panels, "flip rate / mean |change in P(label=1)| (0 = none)")


# -- across experiments -----------------------------------------------------------------


def pareto(exps: list[Experiment], summary: pd.DataFrame):
    """Test accuracy against CO2e (first scenario) per experiment, with the Pareto front."""
    s = summary.dropna(subset=["finetune_accuracy", "co2e_kg"])
    if s.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colors = _colors(list(summary["experiment"]))
    for i, r in enumerate(s.itertuples()):
        x = r.co2e_kg * G_PER_KG
        xerr = [[max(x - r.co2e_kg_low * G_PER_KG, 0)], [max(r.co2e_kg_high * G_PER_KG - x, 0)]]
        ax.errorbar([x], [r.finetune_accuracy], xerr=xerr, fmt="o", color=colors[r.experiment], capsize=3, label=r.experiment)
        ax.annotate(r.experiment, (x, r.finetune_accuracy), textcoords="offset points", xytext=(5, 5 + 11 * i), fontsize=8)
    # Pareto front: no other experiment has both less CO2e and higher accuracy
    pts = sorted(zip(s["co2e_kg"] * G_PER_KG, s["finetune_accuracy"]))
    front, best = [], -math.inf
    for x, acc in pts:
        if acc > best:
            front.append((x, acc))
            best = acc
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.4", ls="--", lw=1, label="Pareto front")
    scenario = s["co2e_scenario"].iloc[0]
    ax.set_xlabel(f"CO2e (g), scenario {scenario}, bars: low to high")
    ax.set_ylabel("finetune accuracy (test)")
    ax.legend(fontsize=7)
    return fig


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    section: str
    caption: str
    draw: Callable


PLOTS = [
    Plot("pareto", "Accuracy against CO2e", "summary", "Each experiment's test accuracy against its total CO2e under the first carbon scenario; the dashed step is the Pareto front (lower CO2e, higher accuracy).", pareto),
    Plot("energy_over_time", "Energy over time per device", "energy", "Cumulative energy of each device and domain across the pipeline's stages, placed back to back; the method (counter, sampled, estimate) is in the legend.", energy_over_time),
    Plot("energy_by_stage", "Energy by stage", "energy", "Energy per stage, stacked by device and domain; the legend names each part's method.", energy_by_stage),
    Plot("formula_vs_measured", "Formula estimate beside measured energy", "energy", "For training stages: the formula C = N x T x P (steps x mean step time x mean power) beside the measured energy of all devices (the bar's label is its method).", formula_vs_measured),
    Plot("carbon_by_scenario", "Carbon by scenario", "carbon", "Operational CO2e of all stages per scenario (region under the name); error bars from co2e_kg_low to co2e_kg_high.", carbon_by_scenario),
    Plot("embodied_share", "Embodied share", "carbon", "Operational and amortised embodied CO2e per experiment and scenario; the label is the embodied share of the total.", embodied_share),
    Plot("cost", "Money cost", "carbon", "Electricity and hardware cost of all stages per scenario.", cost_by_scenario),
    Plot("training_curves", "Training and validation curves", "training", "Training loss per optimizer step; validation loss where logged, else the final validation evaluation.", training_curves),
    Plot("fairness_forest", "Fairness metrics with intervals", "fairness", "Every fairness metric with an interval, on the whole evaluation set, one panel per metric; dots are values, lines bootstrap confidence intervals, dashed lines the unbiased value.", fairness_forest),
    Plot("bias_types", "CrowS-Pairs per bias type", "fairness", "CrowS-Pairs score per subset (bias type; stereo and antistereo rows) with intervals; 50 is unbiased.", bias_types),
    Plot("per_group", "Classifier metrics per group", "fairness", "Accuracy, selection rate, TPR and FPR of the finetuned classifier per group, with intervals.", per_group),
    Plot("counterfactual", "Counterfactual flip rates", "fairness", "Share of test predictions that flip, and the mean absolute change in P(label = 1), when identity terms are swapped; overall and per term pair, with intervals.", counterfactual),
]


def png_bytes(fig) -> bytes:
    """The figure as PNG, byte for byte reproducible (no software/date metadata)."""
    plt = _plt()
    buf = io.BytesIO()
    if not fig.get_tight_layout() and not fig.get_constrained_layout():
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def draw_all(exps: list[Experiment], summary: pd.DataFrame) -> dict[str, bytes | None]:
    """key -> PNG bytes, or None where there was nothing to draw."""
    out = {}
    for p in PLOTS:
        fig = p.draw(exps, summary)
        out[p.key] = png_bytes(fig) if fig is not None else None
    return out
