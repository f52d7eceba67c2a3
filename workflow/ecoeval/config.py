"""The one config loader: schema validation with defaults, experiment merging, key-path errors."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ecoeval import EcoevalError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The config schema (cached; callers must not mutate it)."""
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**node, **merged}
    return schema


def _fill_defaults(value: Any, schema: dict, root: dict) -> Any:
    """Fill missing keys with schema defaults, recursively (objects only)."""
    schema = _resolve(schema, root)
    if not isinstance(value, dict):
        return value
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key not in value and "default" in sub_r:
            value[key] = copy.deepcopy(sub_r["default"])
        if key in value:
            value[key] = _fill_defaults(value[key], sub_r, root)
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(value, list):
        return [_fill_defaults(v, items, root) for v in value]
    return value


def _fill_list_defaults(value: Any, schema: dict, root: dict) -> Any:
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = _fill_list_defaults(value[key], sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(v, schema["items"], root) for v in value]
    return value


def _describe(err: jsonschema.ValidationError) -> str:
    v = err.validator
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"unknown key {extra[0]!r} (allowed: {allowed})", extra[0]
    if v == "type":
        return f"expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}", None
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"expected a value {sign} {err.validator_value}, got {err.instance!r}", None
    if v == "enum":
        return f"expected one of {err.validator_value}, got {err.instance!r}", None
    if v == "required":
        return err.message, None
    if v == "pattern":
        friendly = {
            "^[0-9a-f]{64}$": "64 lowercase hex digits (a sha256)",
            "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a name of letters, digits, '_', '.' and '-', starting with a letter or digit",
        }
        return f"expected {friendly.get(err.validator_value, 'text matching ' + err.validator_value)}, got {err.instance!r}", None
    if v == "not":
        return f"{err.instance!r} is reserved (results/report holds the report)", None
    return f"{err.message}", None


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


def _first_error(instance: dict) -> str | None:
    """The first schema error (shallowest key path first) as `config key <path>: <what>`."""
    errors = sorted(_validator().iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    err = errors[0]
    msg, extra_key = _describe(err)
    parts = [str(p) for p in err.absolute_path]
    if extra_key:
        parts.append(extra_key)
    path = ".".join(parts) or "<config>"
    return f"config key {path}: {msg}"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _semantic_checks(cfg: dict, prefix: str) -> None:
    def fail(path: str, msg: str) -> None:
        full = f"{prefix}.{path}" if prefix else path
        raise EcoevalError(f"config key {full}: {msg}")

    p, t = cfg["pretrain"], cfg["tokenize"]
    if p["hidden_size"] % p["num_heads"]:
        fail("pretrain.hidden_size", f"must be divisible by pretrain.num_heads ({p['num_heads']}), got {p['hidden_size']}")
    if t["block_size"] > p["max_position_embeddings"]:
        fail("tokenize.block_size", f"must be <= pretrain.max_position_embeddings ({p['max_position_embeddings']}), got {t['block_size']}")
    if t["classify_max_length"] > p["max_position_embeddings"]:
        fail("tokenize.classify_max_length", f"must be <= pretrain.max_position_embeddings ({p['max_position_embeddings']}), got {t['classify_max_length']}")
    for section in ("pretrain", "finetune"):
        s = cfg[section]
        if s.get("gpus", 0) > 0 and s.get("nproc", 1) > 1:
            fail(f"{section}.nproc", f"must be 1 when {section}.gpus is set (gpus = {s['gpus']} already sets the process count), got {s['nproc']}")
    from ecoeval.data import KINDS, dataset_problems

    for kind in KINDS:
        for path, msg in dataset_problems(kind, cfg["data"][kind]):
            fail(path, msg)
    for i, sc in enumerate(cfg["carbon"]["scenarios"]):
        if sc["mode"] == "fixed" and "intensity_g_per_kwh" not in sc:
            fail(f"carbon.scenarios.{i}.intensity_g_per_kwh", "mode 'fixed' needs intensity_g_per_kwh")
        if sc["mode"] == "hourly" and "hourly_csv" not in sc:
            fail(f"carbon.scenarios.{i}.hourly_csv", "mode 'hourly' needs hourly_csv")
        if sc["mode"] == "hourly" and not Path(sc["hourly_csv"]).is_file():
            fail(f"carbon.scenarios.{i}.hourly_csv", f"input file {sc['hourly_csv']} not found")
        if sc["mode"] in ("annual", "hourly") and "region" not in sc:
            fail(f"carbon.scenarios.{i}.region", f"mode {sc['mode']!r} needs a region")
        if sc["name"] in [s["name"] for s in cfg["carbon"]["scenarios"][:i]]:
            fail(f"carbon.scenarios.{i}.name", f"scenario names must be unique, {sc['name']!r} is used twice")
        if sc["mode"] in ("annual", "hourly"):
            from ecoeval.carbon import region_intensity  # lazy: reads CodeCarbon's data files

            region_intensity(sc["region"], f"config key {prefix + '.' if prefix else ''}carbon.scenarios.{i}.region")


def validate(config: dict) -> dict:
    """Validate a raw config; return it with defaults filled. Raises EcoevalError naming the key path."""
    return validate_experiments(config)[0]


def validate_experiments(config: dict) -> tuple[dict, dict[str, dict]]:
    """`validate`, and every experiment's full config (base merged with its overrides,
    defaults filled, `experiment` set: what `experiment_config` gives), built once while
    validating them (a 1,000-experiment grid should not merge everything twice)."""
    if not isinstance(config, dict):
        raise EcoevalError("config: expected a mapping at the top level")
    schema = load_schema()
    raw = copy.deepcopy(config)
    experiments = raw.get("experiments")
    base_raw = {k: v for k, v in raw.items() if k != "experiments"}
    err = _first_error(raw if experiments is not None else base_raw)
    if err is None:
        err = _first_error(_filled(base_raw, schema))
    if err:
        raise EcoevalError(err)
    base = _filled(base_raw, schema)
    _semantic_checks(base, "")
    exps = experiments if experiments is not None else copy.deepcopy(schema["properties"]["experiments"]["default"])
    merged_all = {}
    for name, overrides in exps.items():
        if "experiments" in overrides:
            raise EcoevalError(f"config key experiments.{name}.experiments: experiments cannot be nested")
        sections = _overridden_sections(base, overrides)
        # errors in the overrides themselves name experiments.<name>.<path>
        err = _first_error(sections)
        if err:
            raise EcoevalError(err.replace("config key ", f"config key experiments.{name}.", 1))
        merged = _with_sections(base, sections, name, schema)
        _semantic_checks(merged, f"experiments.{name}")
        merged_all[name] = merged
    base["experiments"] = exps
    return base, merged_all


def _filled(raw: dict, schema: dict) -> dict:
    """A copy of `raw` with every default filled."""
    return _fill(copy.deepcopy(raw), schema, schema)


def _fill(value: Any, node: dict, schema: dict) -> Any:
    """`value` (owned by the caller, changed in place) with the defaults of schema `node`."""
    return _fill_list_defaults(_fill_defaults(value, node, schema), node, schema)


def _overridden_sections(base: dict, overrides: dict) -> dict:
    """The top-level sections an experiment overrides, merged into the filled base's. Only
    these can differ from the base (the root schema has no cross-section keywords), so only
    these need validating and filling."""
    return {key: deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
            else copy.deepcopy(value) for key, value in overrides.items()}


def _with_sections(base: dict, sections: dict, name: str, schema: dict) -> dict:
    """Experiment `name`'s config: the base with its overridden `sections` filled; the other
    sections are the base's own objects (read-only)."""
    merged = {key: value for key, value in base.items() if key != "experiments"}
    for key, section in sections.items():
        merged[key] = _fill(section, schema["properties"][key], schema)  # sections are fresh copies
    merged["experiment"] = name
    return merged


def experiment_config(config: dict, name: str) -> dict:
    """The full, validated config of one experiment: base merged with its overrides, defaults filled."""
    if name not in config["experiments"]:
        raise EcoevalError(f"experiment {name!r} is not in config key experiments (have: {', '.join(config['experiments'])})")
    sections = _overridden_sections(config, config["experiments"][name])
    return _with_sections(config, sections, name, load_schema())


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EcoevalError(f"config file {path}: not found")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise EcoevalError(f"config file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate(raw)
