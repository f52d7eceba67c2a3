"""CrowS-Pairs scoring speed: our batched scorer vs one forward pass per masked token.

Both run in this process on the real CrowS-Pairs file (../shared/data/crows-pairs) with the
same model, so each ratio is measured against a baseline taken in the same run. The
baseline is the reference algorithm of nyu-mll/crows-pairs (`mask_unigram`): every shared
token of every sentence masked and scored in its own forward pass through the whole model.
Ours groups the masked variants by length, runs `--batch-size` of them per forward pass and
applies the vocabulary head only at the masked positions.

    python benchmarks/crows_pairs_speed.py [--model DIR] [--pairs N] [--threads T]

Without --model it times two random-init BERTs with a WordPiece vocabulary trained on the
file's sentences (the scores are meaningless, the speed is what is measured):
  - `pipeline default`: the shape `config.yaml`'s pretraining builds and the fairness stage
    scores (2 layers, hidden 64, vocabulary 2000);
  - `4x256`: 4 layers, hidden 256, vocabulary 8000, to show how the gain shrinks as the
    matrix products grow (a bigger model keeps the CPU busy even one variant at a time).
Target: ratio >= 5 on the pipeline default. Identity: float32 matrix products may round
differently for different batch shapes, so scores are compared to 1e-4 and the metric's own
inputs (3-decimal comparisons: hits and neutrals) must be identical; the exit status is 1
when they are not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crows-pairs" / "crows_pairs_anonymized.csv"
SHAPES = {  # name: (hidden, layers, heads, vocabulary)
    "pipeline default": (64, 2, 2, 2000),
    "4x256": (256, 4, 4, 8000),
}


def time_model(crows, model, tok, pairs, batch_size: int) -> dict:
    crows.score_pairs(model, tok, pairs.head(5))  # warm-up
    t0 = time.perf_counter()
    batched = crows.score_pairs(model, tok, pairs, batch_size=batch_size)
    t1 = time.perf_counter()
    single = crows.score_pairs(model, tok, pairs, batched=False)
    t2 = time.perf_counter()
    diff = np.abs(np.concatenate([batched["sent_more_score"] - single["sent_more_score"],
                                  batched["sent_less_score"] - single["sent_less_score"]]))
    return {
        "pairs": len(pairs),
        "masked_forward_rows": int(2 * batched["n_masked_tokens"].sum()),
        "batched_pairs_per_s": len(pairs) / (t1 - t0),
        "one_pass_per_token_pairs_per_s": len(pairs) / (t2 - t1),
        "speedup": (t2 - t1) / (t1 - t0),
        "max_abs_score_diff": float(diff.max()),
        "hits_identical": bool((batched["hit"] == single["hit"]).all() and (batched["neutral"] == single["neutral"]).all()),
    }


def main(argv=None) -> int:
    import torch

    from ecoeval.fairness import crows
    from ecoeval.fairness.models import load_masked_lm
    from ecoeval.fairness.tiny import build_bert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a local masked LM folder (default: the two random-init BERTs above)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--pairs", type=int, default=200, help="pairs timed (the first N of the file); 0 = all 1508")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"CrowS-Pairs file {args.data} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    everything = crows.load_pairs(args.data)
    pairs = everything.head(args.pairs) if args.pairs else everything
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            models = {str(args.model): args.model}
        else:
            texts = list(everything["sent_more"]) + list(everything["sent_less"])
            models = {name: build_bert(texts, Path(tmp) / f"bert{i}", seed=0, vocab_size=v, hidden_size=h,
                                       num_layers=n, num_heads=a)
                      for i, (name, (h, n, a, v)) in enumerate(SHAPES.items())}
        for name, folder in models.items():
            model, tok = load_masked_lm(folder)
            row = {"model": name, **time_model(crows, model, tok, pairs, args.batch_size),
                   "threads": args.threads, "batch_size": args.batch_size}
            results.append(row)
            print(json.dumps(row, indent=1))
    ok = True
    for r in results:
        same = r["hits_identical"] and r["max_abs_score_diff"] < 1e-4
        ok &= same
        print(f"{r['model']}: batched {r['batched_pairs_per_s']:.1f} pairs/s vs one pass per token "
              f"{r['one_pass_per_token_pairs_per_s']:.1f} pairs/s: {r['speedup']:.1f}x, "
              f"max |score diff| {r['max_abs_score_diff']:.2e}, hits and neutrals identical: {r['hits_identical']}")
    print("target: >= 5x on the pipeline default with identical hits")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
