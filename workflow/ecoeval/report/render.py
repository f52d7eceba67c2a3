"""Lay the tables and figures out as one self-contained HTML page and its Markdown twin.

Both renderings use the same table cells (`cells`), so their numbers agree to the digit.
The HTML inlines every figure as a base64 PNG; the Markdown links the same PNG files.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ecoeval import __version__
from ecoeval.report.plots import PLOTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "n/a"

SECTIONS = [
    ("summary", "Summary", "One row per experiment (columns documented in docs/outputs.md)."),
    ("energy", "Energy", "Every energy number carries its method: counter, sampled or estimate."),
    ("carbon", "Carbon and cost", "CO2e = facility energy (energy x PUE) x grid intensity (x market factor); embodied emissions amortised over lifetime and utilisation."),
    ("training", "Training", None),
    ("fairness", "Fairness", "Intrinsic: CrowS-Pairs on the pretrained masked LM (0-100, 50 unbiased). Extrinsic: group metrics and counterfactual swaps on the finetuned classifier. Bootstrap confidence intervals."),
    ("assumptions", "Assumptions", "Every factor that is assumed rather than measured, with where it came from."),
    ("provenance", "Provenance", "Data checksums, configuration, model checksums, software and hardware."),
]


@dataclass
class Table:
    key: str
    title: str
    section: str
    df: pd.DataFrame
    note: str | None = None


@dataclass
class Block:
    """A preformatted block (a configuration) shown collapsed in HTML, fenced in Markdown."""

    title: str
    section: str
    text: str
    lang: str = "json"


@dataclass
class Content:
    title: str
    experiments: list[str]
    methods: list[str]
    tables: list[Table]
    figures: dict[str, bytes | None]
    blocks: list[Block] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def cell_text(value) -> str:
    """One number or string as the report prints it (same in HTML and Markdown)."""
    if value is None or value is pd.NA:
        return MISSING
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        v = float(value)
        if v == 0:
            return "0"
        return f"{v:.4g}"
    return str(value)


def cells(df: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    cols = list(df.columns)
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols}
    rows = [[{"text": cell_text(v), "num": numeric[c]} for c, v in zip(cols, r)] for r in df.itertuples(index=False, name=None)]
    return cols, rows


def _sections(content: Content, figure_src) -> list[dict]:
    out = []
    for key, title, intro in SECTIONS:
        figs = [
            {"key": p.key, "title": p.title, "caption": p.caption, "src": figure_src(p.key) if content.figures.get(p.key) else None}
            for p in PLOTS
            if p.section == key
        ]
        tables = []
        for t in content.tables:
            if t.section == key:
                cols, rows = cells(t.df)
                tables.append({"key": t.key, "title": t.title, "note": t.note, "columns": cols, "rows": rows})
        blocks = [{"title": b.title, "text": b.text} for b in content.blocks if b.section == key]
        out.append({"key": key, "title": title, "intro": intro, "figures": figs, "tables": tables, "blocks": blocks})
    return out


def render_html(content: Content) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )

    def src(key: str) -> str:
        return "data:image/png;base64," + base64.b64encode(content.figures[key]).decode("ascii")

    return env.get_template("report.html.j2").render(
        title=content.title,
        version=__version__,
        experiments=content.experiments,
        methods=content.methods,
        sections=_sections(content, src),
        missing=content.missing,
    )


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    cols, rows = cells(df)
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |"]
    lines.append("| " + " | ".join("---:" if rows and rows[0][i]["num"] else "---" for i in range(len(cols))) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(c["text"]) for c in row) + " |")
    return "\n".join(lines)


def render_markdown(content: Content, figures_rel: str) -> str:
    """The Markdown twin: the same tables; figures as links to PNG files under `figures_rel`."""
    out = [f"# {content.title}", ""]
    out.append(f"Experiments: {', '.join(content.experiments)}. Energy methods: {', '.join(content.methods)}. "
               "CO2e in the summary uses the first scenario of each experiment. The HTML twin (report.html) "
               "holds the same tables with the figures inlined.")
    out.append("")
    for s in _sections(content, lambda key: f"{figures_rel}/{key}.png"):
        out += [f"## {s['title']}", ""]
        if s["intro"]:
            out += [s["intro"], ""]
        for f in s["figures"]:
            if f["src"]:
                out += [f"![{f['title']}]({f['src']})", "", f"*{f['title']}.* {f['caption']}", ""]
            else:
                out += [f"*{f['title']}: nothing to draw in these results.*", ""]
        for t in s["tables"]:
            table = next(x for x in content.tables if x.key == t["key"])
            out += [f"### {t['title']}", ""]
            if t["note"]:
                out += [t["note"], ""]
            out += [markdown_table(table.df), ""]
        for b in content.blocks:
            if b.section == s["key"]:
                out += [f"<details><summary>{b.title}</summary>", "", f"```{b.lang}", b.text, "```", "", "</details>", ""]
    if content.missing:
        out += ["## Files not found", ""] + [f"- {m}" for m in content.missing] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def config_block(name: str, config: dict) -> Block:
    return Block(title=f"Configuration of {name}", section="provenance", text=json.dumps(config, indent=2, sort_keys=True, default=str))
