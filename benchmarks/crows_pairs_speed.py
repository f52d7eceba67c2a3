"""CrowS-Pairs scoring speed: our batched scorer vs one forward pass per masked token.

Both run in this process on the real CrowS-Pairs file (../shared/data/crows-pairs) with the
same model, so the ratio is measured against a baseline taken in the same run. The
baseline is the reference algorithm of nyu-mll/crows-pairs (`mask_unigram`): every shared
token of every sentence masked and scored in its own forward pass. The script checks that
both give identical per-sentence scores and identical hits, and prints pairs/s and the ratio.

    python benchmarks/crows_pairs_speed.py [--model DIR] [--pairs N] [--threads T]

Without --model a small random-init BERT (4 layers, hidden 256, WordPiece vocabulary of
8000 trained on the file's sentences) is built in a temporary folder: the scores are
meaningless, the speed is what is measured. Target: ratio >= 5.
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


def main(argv=None) -> int:
    import torch

    from ecoeval.fairness import crows
    from ecoeval.fairness.models import load_masked_lm
    from ecoeval.fairness.tiny import build_bert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a local masked LM folder (default: a random-init small BERT)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--pairs", type=int, default=200, help="pairs timed (the first N of the file); 0 = all 1508")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"CrowS-Pairs file {args.data} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    pairs = crows.load_pairs(args.data)
    if args.pairs:
        pairs = pairs.head(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            everything = crows.load_pairs(args.data)
            texts = list(everything["sent_more"]) + list(everything["sent_less"])
            model_dir = build_bert(texts, Path(tmp) / "bert", seed=0, vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4)
        model, tok = load_masked_lm(model_dir)
        crows.score_pairs(model, tok, pairs.head(5))  # warm-up
        t0 = time.perf_counter()
        batched = crows.score_pairs(model, tok, pairs, batch_size=args.batch_size)
        t1 = time.perf_counter()
        single = crows.score_pairs(model, tok, pairs, batched=False)
        t2 = time.perf_counter()
    diff = np.abs(np.concatenate([batched["sent_more_score"] - single["sent_more_score"],
                                  batched["sent_less_score"] - single["sent_less_score"]]))
    result = {
        "pairs": len(pairs),
        "masked_forward_rows": int(2 * batched["n_masked_tokens"].sum()),
        "batched_pairs_per_s": len(pairs) / (t1 - t0),
        "one_pass_per_token_pairs_per_s": len(pairs) / (t2 - t1),
        "speedup": (t2 - t1) / (t1 - t0),
        "max_abs_score_diff": float(diff.max()),
        "hits_identical": bool((batched["hit"] == single["hit"]).all() and (batched["neutral"] == single["neutral"]).all()),
        "model": str(args.model or "random-init BERT, 4 layers, hidden 256, vocab 8000"),
        "threads": args.threads,
        "batch_size": args.batch_size,
    }
    print(json.dumps(result, indent=1))
    print(f"batched {result['batched_pairs_per_s']:.1f} pairs/s vs one pass per token "
          f"{result['one_pass_per_token_pairs_per_s']:.1f} pairs/s: {result['speedup']:.1f}x "
          f"(target >= 5x), max |score diff| {result['max_abs_score_diff']:.2e}, hits identical: {result['hits_identical']}")
    return 0 if result["hits_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
