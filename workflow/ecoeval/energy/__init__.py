"""Energy measurement: the one monitor, the `energy` rule's summary, `ecoeval energy run`.

Public API (imported lazily so that `ecoeval --help` stays fast):
`EnergyMonitor`, `Measurement`, `SAMPLE_SCHEMA`, `STEP_SCHEMA` (ecoeval.energy.monitor),
`summarize_stage`, `integrate`, `step_energy`, `SUMMARY_SCHEMA` (ecoeval.energy.summary),
`add_cli` (ecoeval.energy.cli). See docs/energy.md.
"""

from __future__ import annotations

import importlib

from ecoeval.energy.cli import add_cli

_LAZY = {
    "EnergyMonitor": "monitor",
    "Measurement": "monitor",
    "SAMPLE_SCHEMA": "monitor",
    "STEP_SCHEMA": "monitor",
    "summarize_stage": "summary",
    "integrate": "summary",
    "step_energy": "summary",
    "SUMMARY_SCHEMA": "summary",
}

__all__ = ["add_cli", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ecoeval.energy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ecoeval.energy' has no attribute {name!r}")
