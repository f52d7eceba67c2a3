"""pretrain stage: outputs per contract, masking, determinism, continued pretraining, safe loading."""

from __future__ import annotations

import math
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ecoeval import EcoevalError
from ecoeval.pretrain import mask_tokens, run
from test_tokenize import run_tokenize

PRETRAIN = dict(init_checkpoint=None, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                max_position_embeddings=64, dropout=0.1, batch_size=8, grad_accum=1, max_steps=20,
                learning_rate=2e-3, weight_decay=0.01, warmup_steps=4, mlm_probability=0.15, precision="fp32",
                log_every=5, checkpoint_every=0, gpus=0, nproc=1, max_grad_norm=1.0)


def pretrain_outputs(folder):
    return {"model": folder / "pretrain" / "model", "log": folder / "pretrain" / "log.parquet",
            "metrics": folder / "pretrain" / "metrics.parquet"}


def pretrain_params(folder, seed: int = 1, **overrides) -> dict:
    return {"seed": seed, "pretrain": {**PRETRAIN, **overrides}, "energy": {}, "experiment": "t",
            "work_dir": str(folder / "work" / "pretrain"), "threads": 1}


def run_pretrain(folder, tokenized, seed: int = 1, monitor=None, **overrides) -> dict:
    outputs = pretrain_outputs(folder)
    run(pretrain_params(folder, seed, **overrides),
        {"tokenizer": tokenized["tokenizer"], "tokens": tokenized["pretrain_tokens"]}, outputs, monitor)
    return outputs


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    return run_tokenize(tmp_path_factory.mktemp("pt-tok"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tokenized):
    return run_pretrain(tmp_path_factory.mktemp("pt-run"), tokenized)


class StepRecorder:
    def __init__(self):
        self.events = []

    def step_begin(self, step):
        self.events.append(("begin", step))

    def step_end(self, step, tokens):
        self.events.append(("end", step, tokens))


def test_outputs_follow_the_contract(pretrained, tokenized):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(pretrained["model"])
    tok = AutoTokenizer.from_pretrained(pretrained["model"])
    assert model.config.vocab_size == len(tok)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert list((pretrained["model"]).glob("*.safetensors")) and not list(pretrained["model"].glob("*.bin"))

    log = pq.read_table(pretrained["log"])
    assert log.schema == pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                                    ("tokens", pa.int64()), ("wall_s", pa.float64())])
    rows = log.to_pydict()
    assert rows["step"] == list(range(1, 21))
    block = pq.read_table(tokenized["pretrain_tokens"]).column("input_ids")[0].as_py()
    assert rows["tokens"] == [8 * len(block) * s for s in range(1, 21)]
    # transformers' linear schedule: step k runs at peak * (k-1)/warmup, then decays linearly
    lr = rows["lr"]
    assert lr[0] == 0.0 and lr[1] == pytest.approx(2e-3 / 4) and lr[4] == pytest.approx(2e-3)
    assert lr[5] == pytest.approx(2e-3 * 15 / 16)
    assert all(a > b for a, b in zip(lr[4:], lr[5:]))
    assert all(math.isfinite(x) for x in rows["loss"])
    assert sum(rows["loss"][-5:]) < sum(rows["loss"][:5])  # it learns
    assert all(b >= a for a, b in zip(rows["wall_s"], rows["wall_s"][1:]))

    m = {(r["metric"], r["split"]): r["value"] for r in pq.read_table(pretrained["metrics"]).to_pylist()}
    assert m[("perplexity", "validation")] == pytest.approx(math.exp(m[("eval_loss", "validation")]))
    assert m[("train_steps", "train")] == 20 and m[("train_tokens", "train")] == rows["tokens"][-1]
    assert m[("model_params", "train")] == sum(p.numel() for p in model.parameters())
    assert m[("step_time_s", "train")] > 0 and m[("train_wall_s", "train")] > 0
    # eval_loss is well below the uniform-guess loss log(V)
    assert m[("eval_loss", "validation")] < math.log(len(tok))


def test_same_seed_same_loss_curve(tmp_path, tokenized, pretrained):
    again = run_pretrain(tmp_path / "a", tokenized)
    assert pq.read_table(again["log"]).column("loss").to_pylist() == pq.read_table(pretrained["log"]).column("loss").to_pylist()
    other = run_pretrain(tmp_path / "b", tokenized, seed=2)
    assert pq.read_table(other["log"]).column("loss").to_pylist() != pq.read_table(pretrained["log"]).column("loss").to_pylist()


def test_masking_is_bert_recipe():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (400, 128))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    special = torch.tensor([0, 1, 2, 3, 4])
    inputs, labels = mask_tokens(ids, g, 0.15, special, 4, 1000)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert chosen.float().mean().item() == pytest.approx(0.15 * 126 / 128, abs=0.005)
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    n = chosen.sum().item()
    masked = (inputs[chosen] == 4).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)
    again = mask_tokens(ids, torch.Generator().manual_seed(0), 0.15, special, 4, 1000)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_monitor_sees_every_step(tmp_path, tokenized):
    rec = StepRecorder()
    run_pretrain(tmp_path, tokenized, monitor=rec, max_steps=3, grad_accum=2)
    tokens = 2 * 8 * 32
    assert rec.events == [("begin", 1), ("end", 1, tokens), ("begin", 2), ("end", 2, tokens), ("begin", 3), ("end", 3, tokens)]


def test_bf16_autocast_trains(tmp_path, tokenized):
    out = run_pretrain(tmp_path, tokenized, precision="bf16", max_steps=6)
    assert all(math.isfinite(x) for x in pq.read_table(out["log"]).column("loss").to_pylist())


def test_continued_pretraining_from_checkpoint(tmp_path, tokenized, pretrained):
    scratch = pq.read_table(pretrained["log"]).column("loss").to_pylist()
    cont = run_pretrain(tmp_path, tokenized, init_checkpoint=str(pretrained["model"]), max_steps=4)
    losses = pq.read_table(cont["log"]).column("loss").to_pylist()
    assert losses[0] < scratch[0] - 0.5  # starts from the trained weights, not from scratch


def test_init_checkpoint_pickle_is_refused(tmp_path, tokenized, pretrained):
    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "config.json").write_bytes((pretrained["model"] / "config.json").read_bytes())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (bad / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(EcoevalError, match="safetensors"):
        run_pretrain(tmp_path, tokenized, init_checkpoint=str(bad))
    assert not marker.exists()


def test_missing_validation_split(tmp_path, tokenized):
    table = pq.read_table(tokenized["pretrain_tokens"])
    only_train = table.filter(pa.compute.equal(table.column("split"), "train"))
    path = tmp_path / "tokens.parquet"
    pq.write_table(only_train, path)
    with pytest.raises(EcoevalError, match="validation"):
        run(pretrain_params(tmp_path), {"tokenizer": tokenized["tokenizer"], "tokens": path}, pretrain_outputs(tmp_path), None)
    assert not pretrain_outputs(tmp_path)["model"].exists()
