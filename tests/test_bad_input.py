"""Bad input: each case exits non-zero with ONE line naming the key, file or value and what was
expected, and leaves the results of an earlier good run exactly as they were.

Cases run the way a user meets them: config mistakes through `ecoeval validate` and through
`snakemake` (the Snakefile validates the config before planning), bad data files through the
download stage, and later-stage inputs through the stage that reads them, each in a copy of a
folder that already holds earlier results.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from cluster.harness import digest, env, error_lines, explain, load_config, snakemake

CONFIG = "config"  # caught by config validation (workflow/ecoeval/config.py, data.dataset_problems)
DATA = "data"  # caught by the download stage (workflow/ecoeval/data.py)
STAGE = "stage"  # caught by a later stage; needs a complete earlier run


@dataclass
class Case:
    id: str
    edit: Callable[[dict, Path], None]  # changes the config; may write input files into the folder
    expect: tuple[str, ...]  # fragments the one error line must contain (case-insensitive)
    kind: str = CONFIG
    target: str = "data"
    may_change: tuple[str, ...] = field(default=())  # result prefixes that jobs which succeeded may rewrite


def setp(path: str, value) -> Callable[[dict, Path], None]:
    """An edit that sets a dotted key path (list items by index) to `value`."""

    def edit(cfg: dict, _: Path) -> None:
        node = cfg
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def both(*edits: Callable[[dict, Path], None]) -> Callable[[dict, Path], None]:
    def edit(cfg: dict, folder: Path) -> None:
        for e in edits:
            e(cfg, folder)

    return edit


def local(kind: str, name: str, content: bytes | str, fmt: str = "auto", split: str = "train", **extra):
    """An edit that points data.<kind> at a local file with `content`."""

    def edit(cfg: dict, folder: Path) -> None:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        cfg["data"][kind] = {"source": "local", "format": fmt, "splits": {split: str(path)}, **extra}

    return edit


def url(kind: str, location: str, sha256: str, **extra):
    def edit(cfg: dict, folder: Path) -> None:
        cfg["data"][kind] = {"source": "url", "splits": {"train": location.format(folder=folder)},
                             "sha256": {"train": sha256}, **extra}

    return edit


def file_url(kind: str, name: str, content: str, sha256: str):
    def edit(cfg: dict, folder: Path) -> None:
        (folder / name).write_text(content)
        url(kind, (folder / name).as_uri(), sha256, retries=0)(cfg, folder)

    return edit


GOOD_TEXT = "the nurse said she would help .\nthe engineer said he fixed the bridge .\n" * 20
GOOD_CSV = "text,label\n" + "".join(f"review number {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
SHA_OF_NOTHING = hashlib.sha256(b"").hexdigest()
CROWS_HEADER = "sent_more,sent_less,stereo_antistereo,bias_type\n"

CASES = [
    # --- config keys, types and values ------------------------------------------------------
    Case("misspelled-key", setp("pretrain.hiden_size", 64), ("pretrain.hiden_size", "unknown key", "hidden_size")),
    Case("unknown-top-level-key", setp("epochs", 3), ("epochs", "unknown key")),
    Case("unknown-key-in-experiment", setp("experiments.e1.finetune.lr", 0.1), ("experiments.e1.finetune.lr", "unknown key")),
    Case("string-for-integer", setp("pretrain.max_steps", "ten"), ("pretrain.max_steps", "integer", "'ten'")),
    Case("string-for-boolean", setp("tokenize.lowercase", "yes"), ("tokenize.lowercase", "boolean")),
    Case("float-for-integer", setp("data.builtin.n_documents", 1.5), ("data.builtin.n_documents", "integer", "1.5")),
    Case("mapping-for-list", setp("carbon.scenarios", {"name": "us"}), ("carbon.scenarios", "array")),
    Case("wrong-type-in-experiment", setp("experiments.e1.pretrain.num_layers", "two"), ("experiments.e1.pretrain.num_layers", "integer")),
    Case("negative-hidden-size", setp("pretrain.hidden_size", -32), ("pretrain.hidden_size", ">=", "-32")),
    Case("zero-batch-size", setp("pretrain.batch_size", 0), ("pretrain.batch_size", ">= 1", "0")),
    Case("zero-vocab-size", setp("tokenize.vocab_size", 0), ("tokenize.vocab_size", ">=")),
    Case("zero-learning-rate", setp("finetune.learning_rate", 0), ("finetune.learning_rate", "> 0")),
    Case("negative-seed", setp("seed", -1), ("seed", ">= 0", "-1")),
    Case("probability-above-1", setp("data.builtin.stereotype_rate", 1.5), ("data.builtin.stereotype_rate", "<= 1")),
    Case("hidden-not-divisible-by-heads", both(setp("pretrain.hidden_size", 30), setp("pretrain.num_heads", 4)),
         ("pretrain.hidden_size", "divisible", "num_heads", "30")),
    Case("block-size-above-positions", setp("tokenize.block_size", 128), ("tokenize.block_size", "max_position_embeddings", "128")),
    Case("classify-length-above-positions", setp("tokenize.classify_max_length", 65),
         ("tokenize.classify_max_length", "max_position_embeddings", "65")),
    Case("pue-below-1", setp("carbon.scenarios.0.pue", 0.9), ("carbon.scenarios.0.pue", ">= 1", "0.9")),
    Case("unknown-carbon-region", setp("carbon.scenarios.0.region", "XYZ"), ("carbon.scenarios.0.region", "XYZ")),
    Case("fixed-intensity-missing", setp("carbon.scenarios.0.mode", "fixed"), ("carbon.scenarios.0.intensity_g_per_kwh", "fixed")),
    Case("no-experiments", setp("experiments", {}), ("experiments",)),
    Case("url-scheme-not-allowed", url("pretrain", "ftp://example.org/corpus.txt", SHA_OF_NOTHING),
         ("data.pretrain.splits.train", "http, https or file", "ftp://")),
    Case("url-without-sha256", both(url("pretrain", "https://example.org/corpus.txt", SHA_OF_NOTHING),
                                    lambda cfg, _: cfg["data"]["pretrain"].pop("sha256")),
         ("data.pretrain.sha256.train", "sha256")),
    Case("sha256-not-hex", url("pretrain", "https://example.org/corpus.txt", "abc"), ("data.pretrain.sha256.train", "abc")),
    Case("hf-without-revision", setp("data.classify", {"source": "hf", "hf": {"name": "glue"}, "splits": {"train": "train"}}),
         ("data.classify.hf.revision", "revision")),
    # --- data files ---------------------------------------------------------------------------
    Case("missing-input-file", lambda cfg, d: setp("data.pretrain", {"source": "local", "splits": {"train": str(d / "nope.txt")}})(cfg, d),
         ("nope.txt", "data.pretrain.splits.train", "not found"), kind=DATA),
    Case("empty-input-file", local("pretrain", "empty.txt", b""), ("empty.txt", "empty"), kind=DATA),
    Case("whitespace-only-file", local("pretrain", "blank.txt", "\n   \n\t\n\n"), ("blank.txt", "empty"), kind=DATA),
    Case("no-text-after-cleaning", local("pretrain", "blank.jsonl", '{"text": "   "}\n{"text": ""}\n{"text": "\\t"}\n'),
         ("blank.jsonl", "no text left"), kind=DATA),
    Case("csv-missing-text-column", local("classify", "c.csv", GOOD_CSV.replace("text,label", "review,label")),
         ("c.csv", "missing column 'text'", "data.classify.columns.text"), kind=DATA),
    Case("jsonl-missing-label-column", local("classify", "c.jsonl", "".join(json.dumps({"text": f"t {i}", "stars": i % 2}) + "\n" for i in range(10))),
         ("c.jsonl", "missing column 'label'", "data.classify.columns.label"), kind=DATA),
    Case("csv-ragged-row", local("classify", "r.csv", GOOD_CSV + "one,too,many\n"), ("r.csv", "fields"), kind=DATA),
    Case("non-utf8-text", local("pretrain", "latin1.txt", "caf\u00e9 cr\u00e8me\n".encode("latin-1") * 5), ("latin1.txt", "utf-8"), kind=DATA),
    Case("labels-not-binary", local("classify", "l.csv", GOOD_CSV + "a third kind of review,2\n"),
         ("l.csv", "binary label 0 or 1", "'2'"), kind=DATA),
    Case("one-label-only", local("classify", "one.csv", "text,label\n" + "".join(f"review {i},1\n" for i in range(10))),
         ("data.classify.splits.train", "both labels 0 and 1"), kind=DATA),
    Case("probe-missing-column", local("probe", "p.csv", "sent_more,stereo_antistereo,bias_type\nshe cooks,stereo,gender\n"),
         ("p.csv", "missing column 'sent_less'"), kind=DATA),
    Case("parquet-not-parquet", local("pretrain", "x.parquet", gzip.compress(b"not a parquet file")), ("x.parquet", "parquet"), kind=DATA),
    Case("url-wrong-sha256", file_url("pretrain", "corpus.txt", GOOD_TEXT, "0" * 64), ("corpus.txt", "sha256", "0" * 64), kind=DATA),
    Case("url-unreachable", url("pretrain", "http://127.0.0.1:9/corpus.txt", "0" * 64, retries=0, timeout_s=2),
         ("127.0.0.1:9/corpus.txt", "could not download"), kind=DATA),
    # --- inputs that later stages read ------------------------------------------------------
    Case("tokenizer-path-missing", lambda cfg, d: setp("tokenize.tokenizer_path", str(d / "no-tokenizer"))(cfg, d),
         ("no-tokenizer",), kind=STAGE, target="tokenize"),
    Case("init-checkpoint-missing", lambda cfg, d: setp("pretrain.init_checkpoint", str(d / "no-model"))(cfg, d),
         ("no-model",), kind=STAGE, target="pretrain"),
    Case("counterfactual-pairs-missing", lambda cfg, d: setp("fairness.counterfactual_pairs", str(d / "no-pairs.tsv"))(cfg, d),
         ("no-pairs.tsv",), kind=STAGE, target="fairness"),
    Case("hourly-csv-missing", lambda cfg, d: setp("carbon.scenarios", [{"name": "h", "region": "USA", "mode": "hourly", "hourly_csv": str(d / "no-hours.csv")}])(cfg, d),
         ("no-hours.csv",), kind=STAGE, target="carbon"),
    Case("probe-words-unknown-to-vocabulary",
         local("probe", "greek.csv", CROWS_HEADER + "".join(f"Ο γιατρός {i} είναι καλός,Η γιατρός {i} είναι καλή,stereo,gender\n" for i in range(8))),
         ("probe", "vocabulary"), kind=STAGE, target="fairness",
         may_change=("e1/data/", "e1/tokens/", "e1/tokenizer/", "e1/pretrain/", "e1/finetune/", "e1/energy/samples/")),
]
BY_ID = {c.id: c for c in CASES}


def test_suite_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


def check_one_line(stderr: str, case: Case) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one 'ecoeval: error:' line, got {lines}\n{stderr[-3000:]}"
    missing = [frag for frag in case.expect if frag.lower() not in lines[0].lower()]
    assert not missing, f"{lines[0]!r} does not mention {missing}"
    return lines[0]


# --- config mistakes through the ecoeval command (fast) -------------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if c.kind == CONFIG], ids=lambda c: c.id)
def test_config_mistake_via_ecoeval_validate(tmp_path, case):
    cfg = load_config("faults")
    case.edit(cfg, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(["ecoeval", "validate", str(path)], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    check_one_line(proc.stderr, case)


def test_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("pretrain:\n  hidden_size: [64\n")
    proc = subprocess.run(["ecoeval", "validate", str(path)], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 2
    check_one_line(proc.stderr, Case("yaml", setp("x", 0), ("config.yaml", "yaml")))


# --- everything through snakemake, next to earlier results -----------------------------------
@pytest.fixture(scope="module")
def earlier_data(tmp_path_factory) -> Path:
    """A folder where `snakemake data` ran with the good test config."""
    work = tmp_path_factory.mktemp("earlier-data")
    snakemake(work, "data", config=load_config("faults"))
    return work


@pytest.fixture(scope="module")
def earlier_full(tmp_path_factory) -> Path:
    """A folder where the whole pipeline ran with the good test config."""
    work = tmp_path_factory.mktemp("earlier-full")
    snakemake(work, config=load_config("faults"), timeout=1500)
    return work


def run_case(case: Case, earlier: Path, tmp_path: Path) -> str:
    work = tmp_path / "w"
    shutil.copytree(earlier, work, symlinks=True)
    before = digest(work / "results")
    assert before, "the earlier run left no results"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cfg = load_config("faults")
    case.edit(cfg, inputs)
    proc = snakemake(work, case.target, config=cfg, check=False, timeout=1200)
    assert proc.returncode != 0, f"snakemake accepted bad input {case.id}"
    line = check_one_line(proc.stderr, case) if error_lines(proc.stderr) else pytest.fail(
        f"no 'ecoeval: error:' line for {case.id}:\n{explain(proc, work)}")
    after = digest(work / "results")
    redone = case.may_change or ("\0",)  # outputs of jobs that succeeded in the failed run
    lost = sorted(k for k in set(before) - set(after) if not k.startswith(redone))
    assert not lost, f"earlier results lost: {lost}"
    changed = sorted(k for k in before if k in after and before[k] != after[k] and not k.startswith(redone))
    assert not changed, f"earlier results changed: {changed}"
    return line


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.kind in (CONFIG, DATA)], ids=lambda c: c.id)
def test_bad_input_via_snakemake_keeps_earlier_results(earlier_data, tmp_path, case):
    run_case(case, earlier_data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.kind == STAGE], ids=lambda c: c.id)
def test_bad_stage_input_keeps_earlier_results(earlier_full, tmp_path, case):
    run_case(case, earlier_full, tmp_path)


def _immutable(path: Path, on: bool) -> bool:
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_unwritable_results_folder(earlier_data, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(earlier_data, work, symlinks=True)
    results = work / "results"
    before = digest(results)
    cfg = load_config("faults")
    cfg["data"]["builtin"]["n_documents"] = 61  # something to do
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or not _immutable(results, True):
            pytest.skip("running as root on a filesystem without the immutable attribute")
    else:
        results.chmod(0o555)
    try:
        proc = snakemake(work, "data", config=cfg, check=False)
    finally:
        _immutable(results, False) if os.geteuid() == 0 else results.chmod(0o755)
    assert proc.returncode != 0
    check_one_line(proc.stderr, Case("unwritable", setp("x", 0), ("results_dir", "not writable", str(results))))
    assert digest(results) == before
