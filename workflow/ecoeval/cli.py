"""The `ecoeval` command. Stage modules add their own subcommands through `add_cli(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from ecoeval import EcoevalError, __version__

# modules that may contribute subcommands (each defines add_cli(subparsers))
CLI_MODULES = ["ecoeval.energy", "ecoeval.carbon", "ecoeval.fairness", "ecoeval.report"]


def _json_arg(what: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{what}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{what}: expected a JSON object")
        return value

    return parse


def _cmd_stage(args: argparse.Namespace) -> int:
    from ecoeval.runner import run_stage

    params = dict(args.params)
    params.setdefault("threads", int(args.io.get("threads", 1)))
    run_stage(args.name, params, args.io.get("input", {}), args.io.get("output", {}))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ecoeval.config import load_config

    cfg = load_config(args.configfile)
    print(f"{args.configfile}: valid ({len(cfg['experiments'])} experiments: {', '.join(cfg['experiments'])})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecoeval", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ecoeval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stage", help="run one pipeline stage (what the Snakemake rules call)")
    p.add_argument("name")
    p.add_argument("--params", type=_json_arg("--params"), required=True, help="stage parameters as JSON")
    p.add_argument("--io", type=_json_arg("--io"), required=True, help='{"input": {...}, "output": {...}} paths as JSON')
    p.set_defaults(func=_cmd_stage)

    p = sub.add_parser("validate", help="validate a config file against the schema")
    p.add_argument("configfile")
    p.set_defaults(func=_cmd_validate)

    for mod in CLI_MODULES:
        try:
            module = importlib.import_module(mod)
        except ImportError:
            continue
        if hasattr(module, "add_cli"):
            module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EcoevalError as exc:
        print(f"ecoeval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
