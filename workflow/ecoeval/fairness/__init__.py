"""The fairness stage: intrinsic bias of the pretrained masked LM, extrinsic bias of the classifier.

`run` is the stage function (`ecoeval stage fairness`); `add_cli` adds
`ecoeval fairness crows-pairs`. Metric names and subsets are listed in docs/fairness.md;
the report reads `crows_pairs`/`all` from intrinsic.parquet and
`demographic_parity_difference`, `equalized_odds_difference`, `counterfactual_flip_rate`
(subset `all`) from extrinsic.parquet.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("ecoeval.fairness")

METRIC_COLUMNS = ["metric", "subset", "value", "ci_low", "ci_high", "n", "p_value"]
DEFAULTS = {"bootstrap": 1000, "confidence": 0.95, "batch_size": 64, "max_pairs": None, "stereoset_path": None,
            "seat_path": None, "counterfactual_pairs": None, "permutations": 10000}


def _table(rows: list[dict]):
    import pyarrow as pa

    schema = pa.schema([("metric", pa.string()), ("subset", pa.string()), ("value", pa.float64()), ("ci_low", pa.float64()),
                        ("ci_high", pa.float64()), ("n", pa.int64()), ("p_value", pa.float64())])
    return pa.Table.from_pylist([{k: r[k] for k in METRIC_COLUMNS} for r in rows], schema=schema)


def evaluate_intrinsic(model_dir: Path, probe: Path, cfg: dict, seed: int) -> tuple[list[dict], "object"]:
    """Metric rows and the per-pair items table for a masked LM and a CrowS-Pairs-format probe file."""
    from ecoeval.fairness import coverage, crows, weat
    from ecoeval.fairness.models import load_masked_lm

    pairs = crows.load_pairs(probe)
    if cfg["max_pairs"]:
        pairs = pairs.head(cfg["max_pairs"])
    model, tok = load_masked_lm(model_dir)
    cov = coverage.coverage(tok, list(pairs["sent_more"]) + list(pairs["sent_less"]), probe)
    items = crows.score_pairs(model, tok, pairs, batch_size=cfg["batch_size"])
    rows = crows.crows_rows(items, cfg["bootstrap"], cfg["confidence"], seed)
    rows += coverage.coverage_rows(cov, "probe")
    tests = {f.stem: weat.load_test(f) for f in sorted(weat.FAIRNESS_RESOURCES.glob("*.json"))}
    tests.update({f"file:{f.stem}": weat.load_test(f) for f in weat.test_files(cfg["seat_path"])})
    rows += weat.weat_rows(model, tok, tests, cfg["permutations"], cfg["bootstrap"], cfg["confidence"], seed, cfg["batch_size"])
    if cfg["stereoset_path"]:
        from ecoeval.fairness.stereoset import stereoset_rows

        rows += stereoset_rows(model, tok, Path(cfg["stereoset_path"]), cfg["bootstrap"], cfg["confidence"], seed, cfg["batch_size"])
    return rows, items


def evaluate_extrinsic(finetuned: Path, pretrained: Path, predictions: Path, classify: Path, cfg: dict, seed: int) -> list[dict]:
    from ecoeval.fairness import extrinsic as ex
    from ecoeval.fairness.models import load_classifier
    from ecoeval.io import read_parquet

    preds = read_parquet(predictions, ["id", "split", "group", "label", "pred", "prob"]).to_pandas()
    data = read_parquet(classify, ["id", "text", "split", "label", "group"]).to_pandas()
    rows = ex.group_metric_rows(preds, data, cfg["bootstrap"], cfg["confidence"], seed)
    model, tok = load_classifier(finetuned, tokenizer_fallback=pretrained)
    swapper = ex.Swapper(ex.load_identity_pairs(cfg["counterfactual_pairs"]))
    cf = ex.counterfactual(model, tok, data, swapper, cfg["batch_size"])
    rows += ex.counterfactual_rows(cf, cfg["bootstrap"], cfg["confidence"], seed)
    return rows


def run(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    """The fairness stage (see docs/contracts.md and docs/fairness.md)."""
    import torch

    from ecoeval.io import write_parquet

    cfg = {**DEFAULTS, **params.get("fairness", {})}
    seed = int(params.get("seed", 0))
    torch.set_num_threads(max(1, int(params.get("threads", 1))))
    torch.manual_seed(seed)
    rows_in, items = evaluate_intrinsic(Path(inputs["pretrained"]), Path(inputs["probe"]), cfg, seed)
    rows_ex = evaluate_extrinsic(Path(inputs["finetuned"]), Path(inputs["pretrained"]), Path(inputs["predictions"]),
                        Path(inputs["classify"]), cfg, seed)
    meta = {"experiment": params.get("experiment"), "seed": seed, "fairness": cfg}
    write_parquet(_table(rows_in), outputs["intrinsic"], metadata=meta)
    write_parquet(_table(rows_ex), outputs["extrinsic"], metadata=meta)
    write_parquet(items, outputs["per_item"], metadata=meta)
    overall = next(r for r in rows_in if r["metric"] == "crows_pairs" and r["subset"] == "all")
    log.info("crows_pairs %.1f [%.1f, %.1f] over %d pairs", overall["value"], overall["ci_low"], overall["ci_high"], overall["n"])


# ---------------------------------------------------------------- command line
def _cmd_crows(args: argparse.Namespace) -> int:
    import torch

    from ecoeval.fairness import crows
    from ecoeval.fairness.models import load_masked_lm
    from ecoeval.io import write_parquet

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = crows.load_pairs(args.data)
    if args.max_pairs:
        pairs = pairs.head(args.max_pairs)
    model, tok = load_masked_lm(args.model)
    items = crows.score_pairs(model, tok, pairs, batch_size=args.batch_size)
    rows = crows.crows_rows(items, args.bootstrap, args.confidence, args.seed)
    write_parquet(items, args.out, metadata={"model": str(args.model), "data": str(args.data), "metrics": rows})
    result = crows.summary(items, rows)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"CrowS-Pairs metric score {result['metric_score']:.2f} "
              f"[{result['ci_low']:.2f}, {result['ci_high']:.2f}] over {result['n']} pairs "
              f"(stereotype {result.get('stereotype_score', float('nan')):.2f}, "
              f"anti-stereotype {result.get('antistereotype_score', float('nan')):.2f}, "
              f"neutral {result['neutral']}); per-pair scores in {args.out}", file=sys.stdout)
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("fairness", help="bias evaluation of local models")
    sub = p.add_subparsers(dest="fairness_command", required=True)
    c = sub.add_parser("crows-pairs", help="score a local Hugging Face masked LM on a CrowS-Pairs CSV (Nangia et al. 2020)")
    c.add_argument("--model", type=Path, required=True, help="save_pretrained folder of a masked LM with its tokenizer")
    c.add_argument("--data", type=Path, required=True, help="CrowS-Pairs CSV (or a probe Parquet in the same columns)")
    c.add_argument("--out", type=Path, required=True, help="per-pair Parquet to write")
    c.add_argument("--json", action="store_true", help="print one JSON object (metric_score, n, ...) instead of a sentence")
    c.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="masked variants per forward pass")
    c.add_argument("--bootstrap", type=int, default=DEFAULTS["bootstrap"], help="bootstrap resamples for the interval")
    c.add_argument("--confidence", type=float, default=DEFAULTS["confidence"])
    c.add_argument("--seed", type=int, default=1234)
    c.add_argument("--max-pairs", type=int, default=None, help="score only the first N pairs")
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    c.set_defaults(func=_cmd_crows)
