"""tokenize: train (or load) a WordPiece tokenizer, encode in batches, pack blocks.

Outputs (docs/contracts.md): `tokenizer/` in Hugging Face layout, `tokens/pretrain.parquet`
(`split`, `input_ids` list<int32>, every row exactly `block_size` tokens) and
`tokens/classify.parquet` (`id`, `split`, `label`, `group`, `input_ids`, truncated).

Packing: every document is encoded without special tokens and followed by [SEP]; the
stream of a split is cut into pieces of block_size - 1 tokens and each piece gets a leading
[CLS]. So every block starts with [CLS] (position 0 always sees [CLS], as in BERT), documents
are separated by [SEP], and the tail shorter than a block is dropped (as run_mlm.py's
`group_texts` does). The tokenizer is trained on the train split only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ecoeval import EcoevalError
from ecoeval.io import atomic_dir, read_parquet, write_parquet

log = logging.getLogger("ecoeval.tokenize")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool):
    """A BERT-style WordPiece `tokenizers.Tokenizer` trained on `texts`, deterministically.

    tokenizers' WordPiece/BPE trainer numbers the continuing-subword pieces ("##x") in
    hash-map order and breaks ties between equally frequent merges by those numbers, so two
    trainings on the same text can differ (huggingface/tokenizers#1794). We hand the trainer
    every "##x" piece of the corpus' alphabet up front, sorted, as reserved tokens, so every
    id is fixed before training; then the trained vocabulary is loaded into a fresh WordPiece
    model where only BERT's five tokens are special.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=None, lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    chars: set[str] = set()
    for text in texts:
        chars.update(normalizer.normalize_str(text))
    chars -= set(" \t\n\r")
    reserved = [f"##{c}" for c in sorted(chars)]

    trainee = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainee.normalizer, trainee.pre_tokenizer = normalizer, pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size,
                                        min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS + reserved,
                                        show_progress=False)
    trainee.train_from_iterator(texts, trainer=trainer, length=len(texts))
    vocab = trainee.get_vocab(with_added_tokens=False)

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def wrap_fast(tok, model_max_length: int):
    """The `tokenizers` object as a transformers tokenizer (what save_pretrained writes)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length,
    )
    if len(fast) != tok.get_vocab_size(with_added_tokens=True):
        raise EcoevalError(f"tokenizer: wrapped tokenizer has {len(fast)} tokens, expected {tok.get_vocab_size(with_added_tokens=True)}")
    return fast


def load_tokenizer(path: str | Path):
    """A local tokenizer folder (AutoTokenizer layout); must be fast and have BERT's specials."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise EcoevalError(f"config key tokenize.tokenizer_path: {path} is not a folder")
    try:
        fast = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise EcoevalError(f"config key tokenize.tokenizer_path: {path} is not a loadable tokenizer ({str(exc).splitlines()[0]})") from None
    if not getattr(fast, "is_fast", False):
        raise EcoevalError(f"config key tokenize.tokenizer_path: {path} has no tokenizer.json (a fast tokenizer is needed)")
    for attr in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        if getattr(fast, attr, None) is None:
            raise EcoevalError(f"config key tokenize.tokenizer_path: {path} defines no {attr.removesuffix('_id')}")
    return fast


def pack_blocks(docs_ids: list[list[int]], block_size: int, cls_id: int, sep_id: int):
    """Concatenate documents (each followed by [SEP]) and cut into [CLS] + block_size-1 tokens."""
    import numpy as np

    if not docs_ids:
        return np.zeros((0, block_size), dtype=np.int32)
    lengths = np.fromiter((len(d) + 1 for d in docs_ids), dtype=np.int64, count=len(docs_ids))
    stream = np.empty(int(lengths.sum()), dtype=np.int32)
    stream[np.cumsum(lengths) - 1] = sep_id
    body = np.ones(len(stream), dtype=bool)
    body[np.cumsum(lengths) - 1] = False
    stream[body] = np.fromiter((t for d in docs_ids for t in d), dtype=np.int32, count=int(body.sum()))
    piece = block_size - 1
    n_blocks = len(stream) // piece
    blocks = np.empty((n_blocks, block_size), dtype=np.int32)
    blocks[:, 0] = cls_id
    blocks[:, 1:] = stream[: n_blocks * piece].reshape(n_blocks, piece)
    return blocks


def _encode(tok, texts: list[str], batch_size: int, add_special_tokens: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        out.extend(e.ids for e in tok.encode_batch(texts[i:i + batch_size], add_special_tokens=add_special_tokens))
    return out


def _list_int32(rows):
    import pyarrow as pa

    return pa.array(rows, type=pa.list_(pa.int32()))


def run(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    import numpy as np
    import pyarrow as pa

    cfg = params["tokenize"]
    pre = read_parquet(inputs["pretrain"], columns=["text", "split"])
    cls_tab = read_parquet(inputs["classify"], columns=["id", "text", "split", "label", "group"])
    splits = pre.column("split").to_pylist()
    texts = pre.column("text").to_pylist()
    train_texts = [t for t, s in zip(texts, splits) if s == "train"]
    if not train_texts:
        raise EcoevalError(f"input file {inputs['pretrain']}: no rows with split 'train'")

    model_max = max(cfg["block_size"], cfg["classify_max_length"])
    if cfg.get("tokenizer_path"):
        fast = load_tokenizer(cfg["tokenizer_path"])
        fast.model_max_length = model_max
        tok = fast.backend_tokenizer
        log.info("loaded tokenizer from %s (%d tokens)", cfg["tokenizer_path"], len(fast))
    else:
        tok = train_tokenizer(train_texts, cfg["vocab_size"], cfg["min_frequency"], cfg["lowercase"])
        fast = wrap_fast(tok, model_max)
        log.info("trained WordPiece tokenizer on %d train documents: %d tokens", len(train_texts), len(fast))
    tok.no_truncation()
    tok.no_padding()

    # pretraining blocks, per split in order of first appearance
    order = list(dict.fromkeys(splits))
    block_rows, block_splits = [], []
    for split in order:
        docs = [t for t, s in zip(texts, splits) if s == split]
        blocks = pack_blocks(_encode(tok, docs, cfg["batch_size"], False), cfg["block_size"],
                             fast.cls_token_id, fast.sep_token_id)
        if len(blocks) == 0:
            raise EcoevalError(f"input file {inputs['pretrain']}: split {split!r} has fewer tokens than one block "
                               f"(tokenize.block_size = {cfg['block_size']})")
        log.info("split %s: %d documents -> %d blocks of %d tokens", split, len(docs), len(blocks), cfg["block_size"])
        block_rows.append(blocks)
        block_splits.extend([split] * len(blocks))
    all_blocks = np.concatenate(block_rows)
    pre_out = pa.table({
        "split": pa.array(block_splits, pa.string()),
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(all_blocks.reshape(-1), pa.int32()), cfg["block_size"]).cast(pa.list_(pa.int32())),
    })

    # classification examples: [CLS] text [SEP], truncated, not padded
    tok.enable_truncation(max_length=cfg["classify_max_length"])
    ids = _encode(tok, cls_tab.column("text").to_pylist(), cfg["batch_size"], True)
    tok.no_truncation()
    cls_out = pa.table({
        "id": cls_tab.column("id").cast(pa.string()),
        "split": cls_tab.column("split").cast(pa.string()),
        "label": cls_tab.column("label").cast(pa.int64()),
        "group": cls_tab.column("group").cast(pa.string()),
        "input_ids": _list_int32(ids),
    })

    meta = {"vocab_size": len(fast), "block_size": cfg["block_size"], "packing": "cls+stream(doc [SEP])",
            "classify_max_length": cfg["classify_max_length"]}
    with atomic_dir(outputs["tokenizer"]) as tmp:
        fast.save_pretrained(tmp)
    write_parquet(pre_out, outputs["pretrain_tokens"], metadata=meta)
    write_parquet(cls_out, outputs["classify_tokens"], metadata=meta)
