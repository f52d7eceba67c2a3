"""The config loader: schema defaults, experiment merging, one-line errors naming the key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from ecoeval import EcoevalError
from ecoeval.config import experiment_config, load_config, validate, validate_experiments


@pytest.fixture()
def default_config(repo):
    with open(repo / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_default_config_is_valid_and_filled(repo):
    cfg = load_config(repo / "config.yaml")
    assert list(cfg["experiments"]) == ["skewed", "balanced"]
    # a default from the schema that config.yaml does not set
    assert cfg["pretrain"]["mlm_probability"] == 0.15
    assert cfg["resources"]["pretrain"]["mem_mb"] == 4000
    assert cfg["carbon"]["scenarios"][0]["market_factor"] == 1.0


def test_experiments_differ_only_in_stereotype_rate(repo):
    cfg = load_config(repo / "config.yaml")
    skewed = experiment_config(cfg, "skewed")
    balanced = experiment_config(cfg, "balanced")
    assert skewed["data"]["builtin"]["stereotype_rate"] == 0.9
    assert balanced["data"]["builtin"]["stereotype_rate"] == 0.5
    for a, b in ((skewed, balanced),):
        a, b = copy.deepcopy(a), copy.deepcopy(b)
        for c in (a, b):
            del c["data"]["builtin"]["stereotype_rate"], c["experiment"]
        assert a == b


def test_validate_experiments_gives_each_experiments_full_config(default_config):
    """The configs built while validating (what the Snakefile uses) equal experiment_config's,
    for overrides of scalars, nested sections, lists and a section the base leaves out."""
    raw = copy.deepcopy(default_config)
    raw["experiments"] = {
        "plain": {},
        "deep": {"seed": 7, "pretrain": {"hidden_size": 32, "num_heads": 2}, "data": {"builtin": {"stereotype_rate": 0.7}}},
        "lists": {"carbon": {"scenarios": [{"name": "fr", "mode": "annual", "region": "FRA"}]}},
        "res": {"resources": {"pretrain": {"mem_mb": 1234}}},
    }
    base, configs = validate_experiments(raw)
    assert base == validate(raw)
    assert list(configs) == list(raw["experiments"])
    for name, cfg in configs.items():
        assert cfg == experiment_config(base, name), name
    assert configs["deep"]["pretrain"]["hidden_size"] == 32 and configs["deep"]["pretrain"]["num_layers"] == 2
    assert configs["lists"]["carbon"]["scenarios"][0]["market_factor"] == 1.0  # list item defaults filled
    assert configs["res"]["resources"]["pretrain"] == {**base["resources"]["pretrain"], "mem_mb": 1234}
    # an error inside one experiment's overrides names that experiment's key path
    raw["experiments"]["bad"] = {"pretrain": {"hidden_size": "big"}}
    with pytest.raises(EcoevalError, match=r"^config key experiments\.bad\.pretrain\.hidden_size: "):
        validate_experiments(raw)


def test_empty_config_gets_one_default_experiment():
    cfg = validate({})
    assert list(cfg["experiments"]) == ["default"]
    assert experiment_config(cfg, "default")["pretrain"]["hidden_size"] == 64


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"pretrian": {}}, "config key pretrian: unknown key 'pretrian'"),
        ({"pretrain": {"hidden_sise": 64}}, "config key pretrain.hidden_sise: unknown key"),
        ({"pretrain": {"hidden_size": "big"}}, "config key pretrain.hidden_size: expected integer"),
        ({"pretrain": {"max_steps": 0}}, "config key pretrain.max_steps: expected a value >= 1, got 0"),
        ({"pretrain": {"learning_rate": -1}}, "config key pretrain.learning_rate: expected a value > 0"),
        ({"pretrain": {"hidden_size": 65, "num_heads": 2}}, "config key pretrain.hidden_size: must be divisible by pretrain.num_heads"),
        ({"tokenize": {"block_size": 512}}, "config key tokenize.block_size: must be <= pretrain.max_position_embeddings"),
        ({"pretrain": {"precision": "fp8"}}, "config key pretrain.precision: expected one of"),
        ({"experiments": {"skewed": {"pretrain": {"hidden_size": -3}}}}, "config key experiments.skewed.pretrain.hidden_size: expected a value >= 8"),
        ({"experiments": {"skewed": {"pretrain": {"hidden_size": 33}}}}, "config key experiments.skewed.pretrain.hidden_size: must be divisible"),
        ({"experiments": {"bad name!": {}}}, "config key experiments"),
        ({"data": {"pretrain": {"source": "ftp"}}}, "config key data.pretrain.source: expected one of"),
        ({"data": {"pretrain": {"source": "url", "splits": {"train": "https://x/y.txt"}}}}, "config key data.pretrain.sha256.train: url sources need a sha256"),
        ({"carbon": {"scenarios": [{"name": "a", "region": "USA", "pue": 0.9}]}}, "config key carbon.scenarios.0.pue: expected a value >= 1"),
    ],
)
def test_bad_config_names_the_key(default_config, patch, expected):
    from ecoeval.config import deep_merge

    bad = deep_merge(default_config, patch)
    with pytest.raises(EcoevalError) as info:
        validate(bad)
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg


def test_unknown_experiment_is_an_error(repo):
    cfg = load_config(repo / "config.yaml")
    with pytest.raises(EcoevalError, match="experiment 'nope' is not in config key experiments"):
        experiment_config(cfg, "nope")


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(EcoevalError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(EcoevalError, match="not valid YAML"):
        load_config(bad)


def test_tiny_test_config_is_valid(repo):
    cfg = load_config(repo / "tests" / "configs" / "tiny.yaml")
    assert experiment_config(cfg, "skewed")["pretrain"]["max_steps"] == 20
