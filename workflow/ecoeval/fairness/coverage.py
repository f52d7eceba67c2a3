"""How the probe words tokenize with the model's own vocabulary.

A self-trained vocabulary can turn most of a benchmark's words into [UNK], and then the
benchmark measures nothing. Reported over the distinct words (letters and digits runs) of
the probe sentences: the share of words with an [UNK] piece, the share of [UNK] pieces and
the mean number of pieces per word. Mostly unknown (> `WARN_SHARE`) warns; entirely
unknown is an error naming the probe file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ecoeval import EcoevalError

log = logging.getLogger("ecoeval.fairness")
WORD = re.compile(r"\w+")
WARN_SHARE = 0.5


def probe_words(sentences) -> list[str]:
    return sorted({w for s in sentences for w in WORD.findall(s)})


def coverage(tokenizer, sentences, source: str | Path) -> dict:
    words = probe_words(sentences)
    if not words:
        raise EcoevalError(f"probe file {source}: no words in the probe sentences")
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    n_pieces = np.array([len(p) for p in pieces])
    unk_pieces = np.array([sum(1 for t in p if t == unk) for p in pieces])
    stats = {
        "vocab_unk_word_share": float((unk_pieces > 0).mean()),
        "vocab_unk_piece_share": float(unk_pieces.sum() / max(n_pieces.sum(), 1)),
        "vocab_pieces_per_word": float(n_pieces.mean()),
        "n_words": len(words),
    }
    share = stats["vocab_unk_word_share"]
    if share >= 1.0:
        raise EcoevalError(f"probe file {source}: every one of its {len(words)} words is unknown ([UNK]) to the model's tokenizer; "
                           "the probe set and the model's vocabulary do not match")
    if share > WARN_SHARE:
        log.warning("probe file %s: %.0f%% of its %d words are unknown ([UNK]) to the model's tokenizer; "
                    "its bias scores say little about this model", source, 100 * share, len(words))
    return stats


def coverage_rows(stats: dict, subset: str) -> list[dict]:
    return [{"metric": k, "subset": subset, "value": v, "ci_low": float("nan"), "ci_high": float("nan"),
             "n": stats["n_words"], "p_value": float("nan")} for k, v in stats.items() if k != "n_words"]
