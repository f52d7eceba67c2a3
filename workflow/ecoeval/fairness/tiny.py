"""Tiny, seeded BERT models built offline from a few texts, for tests and benchmarks.

A WordPiece tokenizer is trained with `tokenizers` on the given texts and a randomly
initialised BERT (masked LM or sequence classifier) is saved next to it in
`save_pretrained` layout, so the scorers load it exactly as they load a trained model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A lowercasing WordPiece tokenizer with BERT's special tokens and post-processor."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )
    assert len(fast) > len(SPECIALS), "tokenizer training produced no vocabulary"
    return fast


def build_bert(texts: Iterable[str], out: Path, kind: str = "mlm", seed: int = 0, vocab_size: int = 1000,
               hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, tokenizer=None) -> Path:
    """Save a random-init BERT (`kind` 'mlm' or 'classifier') with its tokenizer in `out`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    tok = tokenizer or train_tokenizer(texts, vocab_size)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                        max_position_embeddings=128, pad_token_id=tok.pad_token_id, num_labels=2)
    torch.manual_seed(seed)
    model = (BertForMaskedLM if kind == "mlm" else BertForSequenceClassification)(config)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
