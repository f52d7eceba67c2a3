"""The shared stage runner: every rule calls one stage through here, under the energy monitor."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from ecoeval import EcoevalError
from ecoeval.energy import EnergyMonitor
from ecoeval.io import write_parquet

# stage name -> "module:function"; every function has the signature
#   fn(params: dict, inputs: dict[str, Path], outputs: dict[str, Path], monitor) -> None
STAGES: dict[str, str] = {
    "download": "ecoeval.data:run",
    "tokenize": "ecoeval.tokenize:run",
    "pretrain": "ecoeval.pretrain:run",
    "finetune": "ecoeval.finetune:run",
    "energy": "ecoeval.energy:summarize_stage",
    "carbon": "ecoeval.carbon:run",
    "fairness": "ecoeval.fairness:run",
    "report": "ecoeval.report:run",
}

log = logging.getLogger("ecoeval")


def stage_function(name: str) -> Callable:
    if name not in STAGES:
        raise EcoevalError(f"stage {name!r}: unknown (known: {', '.join(STAGES)})")
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


def make_monitor(params: dict) -> EnergyMonitor:
    e = params.get("energy", {})
    return EnergyMonitor(
        hz=e.get("sample_hz", 10.0),
        cpu_tdp_w=e.get("cpu_tdp_w"),
        ram_w_per_gb=e.get("ram_w_per_gb", 0.375),
        gpu_index=e.get("gpu_index"),
    )


def run_stage(name: str, params: dict, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Run stage `name`; outputs["energy"], if given, receives the stage's energy samples."""
    fn = stage_function(name)
    inputs_p = {k: [Path(x) for x in v] if isinstance(v, list) else Path(v) for k, v in inputs.items()}
    outputs_p = {k: Path(v) for k, v in outputs.items()}
    energy_out = outputs_p.pop("energy", None)
    monitor = make_monitor(params)
    t0 = time.perf_counter()
    log.info("stage %s (experiment %s) starting", name, params.get("experiment", "-"))
    with monitor:
        fn(params, inputs_p, outputs_p, monitor)
    log.info("stage %s done in %.1f s", name, time.perf_counter() - t0)
    if energy_out is not None and monitor.is_collector:
        # one collector per node: a follower rank (same job, same node) holds no samples
        meta = monitor.metadata(stage=name, experiment=params.get("experiment"), argv=sys.argv[1:2])
        write_parquet(monitor.samples(), energy_out, metadata=meta)
