"""tokenize stage: WordPiece training, HF layout, packing, classify encoding, determinism.

Also home of the tiny synthetic corpus the training tests build on (`make_stage_inputs`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecoeval import EcoevalError
from ecoeval.io import sha256_file, write_parquet
from ecoeval.tokenize import pack_blocks, run

NAMES = {"female": ["mary", "anna", "linda", "sarah"], "male": ["john", "peter", "david", "tom"]}
JOBS = ["nurse", "engineer", "teacher", "doctor", "pilot", "baker", "lawyer", "farmer"]
VERBS = ["visited", "helped", "called", "met", "thanked", "watched"]
PLACES = ["school", "hospital", "office", "market", "station", "garden"]
GOOD, BAD = ["great", "wonderful", "kind", "happy"], ["awful", "rude", "terrible", "sad"]


def _sentence(rng: random.Random) -> str:
    g = rng.choice(list(NAMES))
    pron = "she" if g == "female" else "he"
    return (f"{rng.choice(NAMES[g]).title()} is a {rng.choice(JOBS)}; {pron} {rng.choice(VERBS)} "
            f"the {rng.choice(JOBS)} at the {rng.choice(PLACES)}.")


def make_stage_inputs(folder: Path, n_docs: int = 120, n_train: int = 160, n_test: int = 60, seed: int = 0) -> dict:
    """Write data/pretrain.parquet and data/classify.parquet (docs/contracts.md) under folder."""
    rng = random.Random(seed)
    docs = [" ".join(_sentence(rng) for _ in range(6)) for _ in range(n_docs)]
    n_val = max(2, n_docs // 10)
    pre = pa.table({
        "id": [f"doc-{i}" for i in range(n_docs)],
        "text": docs,
        "split": ["train"] * (n_docs - n_val) + ["validation"] * n_val,
    })
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            g = rng.choice(list(NAMES))
            label = rng.random() < 0.5
            word = rng.choice(GOOD if label else BAD)
            rows.append({"id": f"{split}-{i}", "text": f"{rng.choice(NAMES[g]).title()} the {rng.choice(JOBS)} was {word} today.",
                         "split": split, "label": int(label), "group": g})
    cls = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("text", pa.string()), ("split", pa.string()),
                                                       ("label", pa.int64()), ("group", pa.string())]))
    paths = {"pretrain": folder / "data" / "pretrain.parquet", "classify": folder / "data" / "classify.parquet"}
    write_parquet(pre, paths["pretrain"])
    write_parquet(cls, paths["classify"])
    return paths


TOKENIZE = {"tokenizer_path": None, "vocab_size": 200, "min_frequency": 2, "lowercase": True,
            "block_size": 32, "classify_max_length": 16, "batch_size": 50}


def tokenize_outputs(folder: Path) -> dict:
    return {"tokenizer": folder / "tokenizer", "pretrain_tokens": folder / "tokens" / "pretrain.parquet",
            "classify_tokens": folder / "tokens" / "classify.parquet"}


def run_tokenize(folder: Path, **overrides) -> dict:
    """make_stage_inputs + the tokenize stage; returns all paths."""
    inputs = make_stage_inputs(folder)
    outputs = tokenize_outputs(folder)
    run({"seed": 1, "tokenize": {**TOKENIZE, **overrides}, "experiment": "t", "work_dir": str(folder / "work"),
         "threads": 1}, inputs, outputs, None)
    return {**inputs, **outputs}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    return run_tokenize(tmp_path_factory.mktemp("tok"))


def test_tokenizer_loads_with_autotokenizer(tokenized):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenized["tokenizer"])
    assert 50 < len(tok) <= TOKENIZE["vocab_size"]
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert t in tok.get_vocab()
    enc = tok("Mary is a nurse.")["input_ids"]
    assert enc[0] == tok.cls_token_id and enc[-1] == tok.sep_token_id
    assert tok.convert_ids_to_tokens(enc[1:-1]) == ["mary", "is", "a", "nurse", "."]


def test_blocks_are_exact_and_start_with_cls(tokenized):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenized["tokenizer"])
    table = pq.read_table(tokenized["pretrain_tokens"])
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert set(table.column("split").to_pylist()) == {"train", "validation"}
    rows = table.column("input_ids").to_pylist()
    assert all(len(r) == TOKENIZE["block_size"] for r in rows)
    assert all(r[0] == tok.cls_token_id for r in rows)
    # the packed stream (without the leading [CLS]) is the documents joined by [SEP]
    pre = pq.read_table(tokenized["pretrain"]).to_pylist()
    train_docs = [d["text"] for d in pre if d["split"] == "train"]
    stream = []
    for d in train_docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    body = [t for r, s in zip(rows, table.column("split").to_pylist()) if s == "train" for t in r[1:]]
    assert body == stream[: len(body)]
    assert len(stream) - len(body) < TOKENIZE["block_size"] - 1  # only the short tail is dropped


def test_classify_truncated_with_specials(tokenized):
    table = pq.read_table(tokenized["classify_tokens"])
    assert table.column_names == ["id", "split", "label", "group", "input_ids"]
    assert table.schema.field("label").type == pa.int64()
    src = pq.read_table(tokenized["classify"])
    assert table.column("id").to_pylist() == src.column("id").to_pylist()
    lengths = [len(r) for r in table.column("input_ids").to_pylist()]
    assert max(lengths) <= TOKENIZE["classify_max_length"]
    assert min(lengths) > 3


def test_pack_blocks_small():
    blocks = pack_blocks([[5, 6, 7], [8, 9]], block_size=4, cls_id=2, sep_id=3)
    # stream 5 6 7 3 8 9 3 -> pieces of 3: [5 6 7] [3 8 9], tail [3] dropped
    assert blocks.tolist() == [[2, 5, 6, 7], [2, 3, 8, 9]]


def test_deterministic_bytes(tmp_path):
    a = run_tokenize(tmp_path / "a")
    b = run_tokenize(tmp_path / "b")
    for key in ("pretrain_tokens", "classify_tokens"):
        assert sha256_file(a[key]) == sha256_file(b[key])
    assert sha256_file(a["tokenizer"] / "tokenizer.json") == sha256_file(b["tokenizer"] / "tokenizer.json")


def test_tokenizer_trained_on_train_split_only(tmp_path):
    inputs = make_stage_inputs(tmp_path)
    table = pq.read_table(inputs["pretrain"]).to_pylist()
    for row in table:  # a word that occurs only in validation must not enter the vocabulary
        if row["split"] == "validation":
            row["text"] += " zyxwvut zyxwvut zyxwvut"
    write_parquet(pa.Table.from_pylist(table), inputs["pretrain"])
    out = tokenize_outputs(tmp_path)
    run({"seed": 1, "tokenize": TOKENIZE, "experiment": "t", "work_dir": str(tmp_path / "w"), "threads": 1}, inputs, out, None)
    from transformers import AutoTokenizer

    assert "zyxwvut" not in AutoTokenizer.from_pretrained(out["tokenizer"]).get_vocab()


def test_load_existing_tokenizer(tokenized, tmp_path):
    paths = run_tokenize(tmp_path, tokenizer_path=str(tokenized["tokenizer"]), vocab_size=64)
    assert sha256_file(paths["pretrain_tokens"]) == sha256_file(tokenized["pretrain_tokens"])


def test_bad_tokenizer_path(tmp_path):
    with pytest.raises(EcoevalError, match="tokenize.tokenizer_path"):
        run_tokenize(tmp_path, tokenizer_path=str(tmp_path / "missing"))


def test_too_little_text_for_a_block(tmp_path):
    with pytest.raises(EcoevalError, match="fewer tokens than one block"):
        run_tokenize(tmp_path, block_size=4096)


def test_real_wikitext_and_sst2(tmp_path):
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data / "wikitext-2" / "valid.txt").is_file() or not (data / "sst2" / "stsa.binary.dev").is_file():
        pytest.skip("shared real data not present")
    lines = (data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines()
    paras = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("=")][:400]
    pre = pa.table({"id": [str(i) for i in range(len(paras))], "text": paras,
                    "split": ["train" if i % 10 else "validation" for i in range(len(paras))]})
    lines = (data / "sst2" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()[:200]
    cls = pa.table({"id": [f"dev-{i}" for i in range(len(lines))], "text": [ln[2:] for ln in lines],
                    "split": ["train" if i % 4 else "test" for i in range(len(lines))],
                    "label": pa.array([int(ln[0]) for ln in lines], pa.int64()), "group": ["all"] * len(lines)})
    inputs = {"pretrain": tmp_path / "pre.parquet", "classify": tmp_path / "cls.parquet"}
    write_parquet(pre, inputs["pretrain"])
    write_parquet(cls, inputs["classify"])
    out = tokenize_outputs(tmp_path)
    run({"seed": 1, "tokenize": {**TOKENIZE, "vocab_size": 2000, "block_size": 64}, "experiment": "t",
         "work_dir": str(tmp_path / "w"), "threads": 1}, inputs, out, None)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out["tokenizer"])
    assert len(tok) > 1000
    blocks = pq.read_table(out["pretrain_tokens"])
    assert blocks.num_rows > 100
    unk = sum(r.count(tok.unk_token_id) for r in blocks.column("input_ids").to_pylist())
    assert unk / (blocks.num_rows * 64) < 0.05
