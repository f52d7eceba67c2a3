"""Resumable checkpoints, safe loading and DDP of the training stages (issue 7)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from ecoeval import EcoevalError
from ecoeval.io import read_metadata
from ecoeval.training import Sampler, safe_torch_load
from test_finetune import run_finetune
from test_pretrain import pretrain_outputs, pretrain_params, run_pretrain
from test_tokenize import run_tokenize

CKPT = dict(max_steps=30, checkpoint_every=5, log_every=1)


class Interrupt(Exception):
    pass


class InterruptAt:
    """A monitor that stops the run when step `step` begins (an in-process 'kill')."""

    def __init__(self, step):
        self.step = step

    def step_begin(self, step):
        if step == self.step:
            raise Interrupt(step)

    def step_end(self, step, tokens):
        pass


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    return run_tokenize(tmp_path_factory.mktemp("ck-tok"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenized):
    """An uninterrupted pretraining run."""
    return run_pretrain(tmp_path_factory.mktemp("ck-ref"), tokenized, **CKPT)


DRIVER = """
import json, sys
from pathlib import Path
from ecoeval.pretrain import run
spec = json.loads(sys.argv[1])
run(spec["params"], {k: Path(v) for k, v in spec["inputs"].items()}, {k: Path(v) for k, v in spec["outputs"].items()}, None)
"""


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~15-35 s
def test_sigkill_at_random_step_then_resume_equals_uninterrupted(tmp_path, tokenized, reference, caplog):
    kill_at = random.randint(CKPT["checkpoint_every"] + 1, CKPT["max_steps"] - 5)
    params = pretrain_params(tmp_path, **CKPT)
    inputs = {"tokenizer": tokenized["tokenizer"], "tokens": tokenized["pretrain_tokens"]}
    outputs = pretrain_outputs(tmp_path)
    spec = json.dumps({"params": params, "inputs": {k: str(v) for k, v in inputs.items()},
                       "outputs": {k: str(v) for k, v in outputs.items()}})
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, spec], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"pretrain step {kill_at}/"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"not killed at step {kill_at}: {''.join(seen[-5:])}"
    assert (tmp_path / "work" / "pretrain" / "checkpoint" / "meta.json").is_file()
    assert not outputs["model"].exists() and not outputs["log"].exists()

    with caplog.at_level(logging.INFO, logger="ecoeval.training"):
        run_pretrain(tmp_path, tokenized, **CKPT)
    expect_from = (kill_at - 1) // CKPT["checkpoint_every"] * CKPT["checkpoint_every"]
    assert f"at step {expect_from}" in caplog.text, f"killed at {kill_at}"
    assert read_metadata(outputs["log"])["resumed_from_step"] == expect_from
    assert_same_weights(outputs["model"], reference["model"])
    assert pq.read_table(outputs["log"]).column("loss").to_pylist() == pq.read_table(reference["log"]).column("loss").to_pylist()
    assert not (tmp_path / "work" / "pretrain" / "checkpoint").exists()  # done: the checkpoint is dropped


def _interrupted_pretrain(folder, tokenized, at=8):
    with pytest.raises(Interrupt):
        run_pretrain(folder, tokenized, monitor=InterruptAt(at), **CKPT)
    ckpt = folder / "work" / "pretrain" / "checkpoint"
    assert (ckpt / "state.pt").is_file()
    return ckpt


def test_checkpoint_of_other_parameters_is_ignored(tmp_path, tokenized, caplog):
    _interrupted_pretrain(tmp_path, tokenized)
    with caplog.at_level(logging.INFO, logger="ecoeval.training"):
        out = run_pretrain(tmp_path, tokenized, **{**CKPT, "learning_rate": 1e-3, "max_steps": 6})
    assert "made with other parameters" in caplog.text
    assert read_metadata(out["log"])["resumed_from_step"] == 0


def test_malicious_pickle_checkpoint_is_refused(tmp_path, tokenized):
    ckpt = _interrupted_pretrain(tmp_path, tokenized)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (ckpt / "state.pt").write_bytes(pickle.dumps({"step": Evil()}, protocol=2))
    with pytest.raises(EcoevalError, match="refused"):
        run_pretrain(tmp_path, tokenized, **CKPT)
    assert not marker.exists()
    assert not pretrain_outputs(tmp_path)["model"].exists()


def test_safe_torch_load_refuses_code_and_reads_tensors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.arange(3), "b": [1, 2.5, None], "c": (3, "x")}, good)
    assert torch.equal(safe_torch_load(good)["a"], torch.arange(3))
    bad = tmp_path / "bad.pt"
    torch.save({"obj": Interrupt("x")}, bad)
    with pytest.raises(EcoevalError, match="refused"):
        safe_torch_load(bad)


def test_finetune_resumes_to_the_same_weights(tmp_path, tokenized, reference):
    tokens = tokenized["classify_tokens"]
    ref = run_finetune(tmp_path / "ref", reference["model"], tokens, max_steps=20, checkpoint_every=4)
    with pytest.raises(Interrupt):
        run_finetune(tmp_path / "cut", reference["model"], tokens, monitor=InterruptAt(11), max_steps=20, checkpoint_every=4)
    out = run_finetune(tmp_path / "cut", reference["model"], tokens, max_steps=20, checkpoint_every=4)
    assert read_metadata(out["log"])["resumed_from_step"] == 8
    assert_same_weights(out["model"], ref["model"])
    assert pq.read_table(out["predictions"]).equals(pq.read_table(ref["predictions"]))


def test_sampler_resumes_mid_epoch():
    a = Sampler(10, 4, seed=3)
    first = [a.next().tolist() for _ in range(5)]
    b = Sampler(10, 4, seed=3)
    [b.next() for _ in range(2)]
    c = Sampler(10, 4, seed=3)
    c.load(b.state())
    assert [c.next().tolist() for _ in range(3)] == first[2:]
    epoch0 = first[0] + first[1] + first[2][:2]
    assert sorted(epoch0) == list(range(10))  # each epoch is a permutation
    r0, r1 = Sampler(10, 2, seed=3, rank=0, world_size=2), Sampler(10, 2, seed=3, rank=1, world_size=2)
    assert r0.next().tolist() + r1.next().tolist() == first[0]


@pytest.mark.slow
def test_ddp_two_cpu_ranks(tmp_path, tokenized, reference):
    out = run_pretrain(tmp_path, tokenized, nproc=2, max_steps=6, log_every=2, checkpoint_every=3)
    log = pq.read_table(out["log"]).to_pydict()
    assert log["step"] == list(range(1, 7))
    single = pq.read_table(reference["log"]).column("tokens")[0].as_py()
    assert log["tokens"][0] == 2 * single  # two ranks, each a full batch
    assert read_metadata(out["log"])["world_size"] == 2
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(out["model"])
    assert not (tmp_path / "work" / "pretrain" / "checkpoint").exists()

