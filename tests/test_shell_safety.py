"""Config strings never reach a shell unquoted.

Every free-text string field of the config schema (found by walking the schema, so a new field
is covered without touching this file) gets a value that would run `touch MARKER` if a rule's
shell command pasted it in unquoted. Fields that config validation rejects with such a value
never reach a rule; the others run through every rule of the real Snakefile, where `ecoeval`
is replaced on PATH by a recorder that checks each value arrived intact inside one argument.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from cluster.harness import error_lines, load_config, snakemake
from ecoeval import EcoevalError
from ecoeval.config import load_schema, validate

PAYLOADS = [
    "x; touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "x' ; touch {m} ; '",
    'x" ; touch {m} ; "',
    "x && touch {m} #",
    "x | touch {m}",
    "x\ntouch {m}",
]
IDS = ["semicolon", "dollar-paren", "backtick", "single-quote", "double-quote", "and", "pipe", "newline"]


def string_fields(schema: dict) -> list[tuple[str, ...]]:
    """Key paths of every free-text string in the schema (no enum, no pattern)."""

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            target: dict = schema
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    out: list[tuple[str, ...]] = []

    def walk(node: dict, path: tuple[str, ...]) -> None:
        node = resolve(node)
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if "string" in types and "enum" not in node and "pattern" not in node and path[-1:] != ("experiments",):
            out.append(path)
        for key, sub in node.get("properties", {}).items():
            if key != "experiments":
                walk(sub, path + (key,))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ("*",))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + ("[]",))

    walk(schema, ())
    return out


def put(cfg: dict, path: tuple[str, ...], value: str) -> None:
    node = cfg
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if key == "[]":
            continue
        if nxt == "[]":
            node = node.setdefault(key, [{}])[0]
        else:
            node = node.setdefault(key, {})
    last = path[-1]
    node["train" if last == "*" else last] = value


def injected_config(payload: str, local: bool = False) -> tuple[dict, list[str], list[str]]:
    """The test config with `payload` in every string field validation lets through.

    `local`: the datasets use a local source, so that their `splits` (file paths) take the
    payload too. Returns (config, accepted key paths, rejected key paths).
    """
    base = load_config("faults")
    if local:
        for kind in ("pretrain", "classify", "probe"):
            base.setdefault("data", {})[kind] = {"source": "local", "splits": {"train": "data.txt"}}
    fields = string_fields(load_schema())
    accepted, rejected = [], []
    for path in fields:
        trial = copy.deepcopy(base)
        put(trial, path, payload)
        try:
            validate(trial)
        except EcoevalError:
            rejected.append(".".join(path))
            continue
        base = trial
        accepted.append(".".join(path))
    return base, accepted, rejected


def test_schema_walk_finds_the_string_fields():
    fields = {".".join(p) for p in string_fields(load_schema())}
    assert {"results_dir", "data.pretrain.license", "data.classify.columns.text", "tokenize.tokenizer_path",
            "carbon.scenarios.[].region", "fairness.counterfactual_pairs"} <= fields


RECORDER = textwrap.dedent(
    """\
    #!{python}
    # stands in for `ecoeval`: records its arguments, then makes the rule's outputs
    import json, os, sys
    from pathlib import Path
    with open(os.environ["RECORD"], "a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\\n")
    io = json.loads(sys.argv[sys.argv.index("--io") + 1])
    for name, path in io["output"].items():
        p = Path(path)
        if not p.suffix:  # directory() outputs (model, tokenizer, figures, ...) have no suffix
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("recorded")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("template", PAYLOADS, ids=IDS)
def test_config_strings_reach_every_rule_as_one_argument(tmp_path, template):
    marker = tmp_path / "pwned"
    payload = template.format(m=marker)
    cfg, accepted, rejected = injected_config(payload, local=True)
    assert {"results_dir", "data.pretrain.license", "data.pretrain.splits.*"} <= set(accepted), (accepted, rejected)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    recorder = bindir / "ecoeval"
    recorder.write_text(RECORDER.format(python=os.path.realpath(os.sys.executable)))
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "argv.jsonl"
    work = tmp_path / "w"
    # the local data files exist (named by the payload; results_dir holds the bare payload, so
    # the files add a suffix): a missing local file stops the run at load
    for kind in ("pretrain", "classify", "probe"):
        cfg["data"][kind]["splits"]["train"] = payload + ".txt"
        f = work / (payload + ".txt")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("text\n")
    proc = snakemake(work, config=cfg, check=False,
                     extra_env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)})
    assert not marker.exists(), f"a config value was run by a shell ({payload!r})"
    assert proc.returncode == 0, proc.stderr[-4000:]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    stages = sorted(c[1] for c in calls)
    assert stages == sorted(["download", "tokenize", "pretrain", "finetune", "fairness", "energy", "carbon", "report"])
    for argv in calls:
        assert argv[0] == "stage" and argv[2] == "--params" and argv[4] == "--io" and len(argv) == 6, argv
        params, io = json.loads(argv[3]), json.loads(argv[5])
        # the results folder (with the payload in its name) is in every output path, intact
        assert all(payload in p for p in io["output"].values()), io
        if argv[1] == "download":
            assert params["data"]["pretrain"]["license"] == payload
            assert params["data"]["classify"]["splits"]["train"] == payload + ".txt"
        if argv[1] == "report":  # the report gets the whole validated config
            assert params["config"]["data"]["pretrain"]["license"] == payload


@pytest.mark.slow
@pytest.mark.parametrize("template", PAYLOADS, ids=IDS)
def test_real_download_stage_runs_nothing_from_config_strings(tmp_path, template):
    """The real download stage, with the payload in every field that passes validation."""
    marker = tmp_path / "pwned"
    payload = template.format(m=marker)
    cfg, accepted, _ = injected_config(payload)
    proc = snakemake(tmp_path / "w", "data", config=cfg, check=False)
    assert not marker.exists(), f"a config value was run by a shell ({payload!r})"
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads(next((tmp_path / "w").rglob("e1/data/provenance.json")).read_text())
    assert prov["pretrain"]["license"] == payload


@pytest.mark.parametrize("name", ["x; touch {m}", "$(touch {m})", "a b", "../up", ".hidden"])
def test_experiment_names_are_restricted(tmp_path, name):
    marker = tmp_path / "pwned"
    cfg = load_config("faults")
    cfg["experiments"] = {name.format(m=marker): {}}
    proc = snakemake(tmp_path / "w", "-n", config=cfg, check=False)
    assert proc.returncode != 0 and not marker.exists()
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "experiments" in lines[0], proc.stderr[-2000:]
