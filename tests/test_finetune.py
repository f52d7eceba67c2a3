"""finetune stage: outputs per contract, metrics agree with predictions, learning, determinism."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecoeval import EcoevalError
from ecoeval.finetune import cut_batch, pad_examples, run
from ecoeval.io import sha256_file
from test_pretrain import run_pretrain
from test_tokenize import run_tokenize

FINETUNE = dict(batch_size=16, max_steps=60, learning_rate=3e-3, weight_decay=0.01, warmup_steps=6, precision="fp32",
                log_every=20, checkpoint_every=0, gpus=0, nproc=1, grad_accum=1, max_grad_norm=1.0)


def finetune_outputs(folder):
    f = folder / "finetune"
    return {"model": f / "model", "log": f / "log.parquet", "metrics": f / "metrics.parquet",
            "predictions": f / "predictions.parquet"}


def finetune_params(folder, seed: int = 1, **overrides) -> dict:
    return {"seed": seed, "finetune": {**FINETUNE, **overrides}, "tokenize": {}, "energy": {}, "experiment": "t",
            "work_dir": str(folder / "work" / "finetune"), "threads": 1}


def run_finetune(folder, model, tokens, seed: int = 1, monitor=None, **overrides) -> dict:
    outputs = finetune_outputs(folder)
    run(finetune_params(folder, seed, **overrides), {"model": model, "tokens": tokens}, outputs, monitor)
    return outputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft")
    tok = run_tokenize(folder)
    pre = run_pretrain(folder, tok, max_steps=30)
    return {"model": pre["model"], "tokens": tok["classify_tokens"], "folder": folder}


@pytest.fixture(scope="module")
def finetuned(setup):
    return run_finetune(setup["folder"], setup["model"], setup["tokens"])


def test_outputs_follow_the_contract(finetuned, setup):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(finetuned["model"])
    assert model.config.num_labels == 2
    AutoTokenizer.from_pretrained(finetuned["model"])
    preds = pq.read_table(finetuned["predictions"])
    assert preds.schema == pa.schema([("id", pa.string()), ("split", pa.string()), ("group", pa.string()),
                                      ("label", pa.int64()), ("pred", pa.int64()), ("prob", pa.float64())])
    src = pq.read_table(setup["tokens"])
    assert preds.column("id").to_pylist() == src.column("id").to_pylist()
    assert preds.column("group").to_pylist() == src.column("group").to_pylist()
    p = preds.to_pandas()
    assert ((p.prob >= 0) & (p.prob <= 1)).all()
    assert ((p.prob > 0.5) == (p.pred == 1)).all()
    log = pq.read_table(finetuned["log"])
    assert log.column("step").to_pylist() == list(range(1, 61))


def test_metrics_match_predictions_and_model_learns(finetuned):
    from sklearn.metrics import f1_score

    p = pq.read_table(finetuned["predictions"]).to_pandas()
    m = {(r["metric"], r["split"]): r["value"] for r in pq.read_table(finetuned["metrics"]).to_pylist()}
    for split in ("train", "test"):
        s = p[p.split == split]
        assert m[("accuracy", split)] == pytest.approx((s.label == s.pred).mean())
        assert m[("macro_f1", split)] == pytest.approx(f1_score(s.label, s.pred, average="macro"))
    assert m[("train_steps", "train")] == 60
    # the label is carried by one sentiment word: a working loop learns it
    assert m[("accuracy", "train")] > 0.8
    assert m[("accuracy", "test")] > 0.75


def test_deterministic(tmp_path, setup, finetuned):
    again = run_finetune(tmp_path, setup["model"], setup["tokens"])
    assert sha256_file(again["predictions"]) == sha256_file(finetuned["predictions"])


def test_batches_cut_to_longest():
    ids, lengths = pad_examples([[2, 7, 3], [2, 7, 8, 9, 3], [2, 3]], pad_id=0)
    assert ids.shape == (3, 5)
    import torch

    b, mask, ntok = cut_batch(ids, lengths, torch.tensor([0, 2]))
    assert b.tolist() == [[2, 7, 3], [2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ntok == 5


def test_negative_labels_refused(tmp_path, setup):
    t = pq.read_table(setup["tokens"])
    labels = t.column("label").to_numpy().copy()
    labels[0] = -1
    bad = t.set_column(t.column_names.index("label"), "label", pa.array(labels, pa.int64()))
    path = tmp_path / "cls.parquet"
    pq.write_table(bad, path)
    with pytest.raises(EcoevalError, match="labels must be >= 0"):
        run_finetune(tmp_path, setup["model"], path)
    assert not finetune_outputs(tmp_path)["predictions"].exists()
