"""The fairness stage end to end on built-in data and tiny models: outputs, names, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecoeval import EcoevalError
from ecoeval.builtin import generate_classify, generate_probe
from ecoeval.fairness import run
from ecoeval.fairness.tiny import build_bert, train_tokenizer
from ecoeval.io import read_metadata, write_parquet

FAIRNESS = {"bootstrap": 50, "confidence": 0.95, "batch_size": 64, "max_pairs": None, "stereoset_path": None,
            "seat_path": None, "counterfactual_pairs": None, "permutations": 100}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair")
    probe = pd.DataFrame(generate_probe({"n_probe_pairs": 12}, seed=1))
    classify = pd.DataFrame(generate_classify({"n_classify_train": 4, "n_classify_test": 40, "label_skew": 0.5,
                                               "neutral_fraction": 0.2}, seed=1))
    write_parquet(probe, root / "probe.parquet")
    write_parquet(classify, root / "classify.parquet")
    tok = train_tokenizer(list(probe["sent_more"]) + list(probe["sent_less"]) + list(classify["text"]), 400)
    build_bert([], root / "pretrained", kind="mlm", seed=1, tokenizer=tok)
    build_bert([], root / "finetuned", kind="classifier", seed=2, tokenizer=tok)
    (root / "finetuned" / "tokenizer.json").unlink()  # a classifier folder without tokenizer uses the pretrained one
    rng = np.random.default_rng(0)
    preds = classify[["id", "split", "group", "label"]].assign(pred=rng.integers(0, 2, len(classify)))
    preds["prob"] = preds["pred"].astype(float)
    write_parquet(preds, root / "predictions.parquet")
    return root


def run_stage(root, out, **overrides):
    params = {"seed": 1234, "fairness": {**FAIRNESS, **overrides}, "energy": {}, "experiment": "t",
              "work_dir": str(root / "work"), "threads": 1}
    ins = {"pretrained": root / "pretrained", "probe": root / "probe.parquet", "finetuned": root / "finetuned",
           "predictions": root / "predictions.parquet", "classify": root / "classify.parquet"}
    outs = {"intrinsic": out / "intrinsic.parquet", "extrinsic": out / "extrinsic.parquet", "per_item": out / "items.parquet"}
    run(params, ins, outs, None)
    return outs


def test_stage_outputs_names_and_determinism(inputs, tmp_path):
    outs = run_stage(inputs, tmp_path / "a")
    intrinsic = pd.read_parquet(outs["intrinsic"])
    extrinsic = pd.read_parquet(outs["extrinsic"])
    items = pd.read_parquet(outs["per_item"])
    cols = ["metric", "subset", "value", "ci_low", "ci_high", "n", "p_value"]
    assert list(intrinsic.columns) == cols and list(extrinsic.columns) == cols
    key_in = intrinsic.set_index(["metric", "subset"])
    key_ex = extrinsic.set_index(["metric", "subset"])
    crows = key_in.loc[("crows_pairs", "all")]
    assert 0 <= crows["ci_low"] <= crows["value"] <= crows["ci_high"] <= 100 and crows["n"] == 12
    assert crows["value"] == pytest.approx(100 * items["hit"].mean())
    for name in ("weat_occupation_gender", "seat_occupation_gender"):
        assert 0 < key_in.loc[("weat_effect_size", name), "p_value"] <= 1
    assert key_in.loc[("vocab_unk_word_share", "probe"), "value"] == 0.0
    for metric in ("demographic_parity_difference", "equalized_odds_difference", "counterfactual_flip_rate"):
        assert np.isfinite(key_ex.loc[(metric, "all"), "value"])
    assert key_ex.loc[("counterfactual_flip_rate", "all"), "n"] == 40
    assert len(items) == 12 and items["bias_type"].eq("gender").all()
    assert read_metadata(outs["intrinsic"])["fairness"]["bootstrap"] == 50
    again = run_stage(inputs, tmp_path / "b")
    for name in outs:
        assert outs[name].read_bytes() == again[name].read_bytes(), name


def test_stage_rejects_probe_unknown_to_the_vocabulary(inputs, tmp_path):
    greek = pd.DataFrame({"id": ["0"], "sent_more": ["αβγ δεζ"], "sent_less": ["ηθι δεζ"], "stereo_antistereo": ["stereo"],
                          "bias_type": ["gender"]})
    root = tmp_path / "in"
    root.mkdir()
    for f in ("pretrained", "finetuned", "predictions.parquet", "classify.parquet"):
        (root / f).symlink_to(inputs / f)
    write_parquet(greek, root / "probe.parquet")
    with pytest.raises(EcoevalError, match=r"probe file .*probe.parquet: every one of its 3 words is unknown"):
        run_stage(root, tmp_path / "out")
    assert not (tmp_path / "out" / "intrinsic.parquet").exists()


@pytest.mark.parametrize(("loader", "what"), [("load_masked_lm", "masked LM folder"), ("load_classifier", "classifier folder")])
def test_unloadable_model_folder_is_one_line_naming_it(inputs, tmp_path, loader, what):
    from ecoeval.fairness import models

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = inputs / "pretrained" / name
        if src.is_file():
            (broken / name).write_bytes(src.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EcoevalError) as err:
        getattr(models, loader)(broken)
    msg = str(err.value)
    assert msg.startswith(f"{what} {broken}: cannot be loaded (") and "\n" not in msg
    (broken / "model.safetensors").unlink()
    (broken / "pytorch_model.bin").write_bytes(b"pickle")  # pickle checkpoints are refused, never unpickled
    with pytest.raises(EcoevalError, match=r"expected model weights as \*\.safetensors"):
        getattr(models, loader)(broken)
