"""The one energy monitor (first version: CPU-time based estimate).

Used by every stage through `ecoeval.runner`. A background thread samples the process
tree's CPU time at `hz`; energy is estimated as TDP x utilisation (labelled `estimate`,
assumptions recorded). Training loops mark steps with `step_begin` / `step_end`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psutil
import pyarrow as pa

SAMPLE_SCHEMA = pa.schema(
    [
        ("t_s", pa.float64()),
        ("timestamp_utc", pa.timestamp("us", tz="UTC")),
        ("device", pa.string()),
        ("domain", pa.string()),
        ("energy_j", pa.float64()),
        ("power_w", pa.float64()),
        ("utilization", pa.float64()),
        ("method", pa.string()),
        ("step", pa.int64()),
    ]
)

STEP_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("t_begin_s", pa.float64()),
        ("t_end_s", pa.float64()),
        ("tokens", pa.int64()),
    ]
)


def _tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        procs = [proc]
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


@dataclass
class EnergyMonitor:
    hz: float = 10.0
    cpu_tdp_w: float | None = None
    ram_w_per_gb: float = 0.375
    gpu_index: int | None = None
    _rows: list = field(default_factory=list, init=False, repr=False)
    _steps: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._n_cpu = psutil.cpu_count(logical=True) or 1
        self._tdp = float(self.cpu_tdp_w) if self.cpu_tdp_w else 10.0 * self._n_cpu
        self._step = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._energy = {"cpu": 0.0, "dram": 0.0}
        self.assumptions = {
            "cpu_tdp_w": self._tdp,
            "cpu_tdp_source": "config" if self.cpu_tdp_w else "default 10 W per logical CPU",
            "ram_w_per_gb": self.ram_w_per_gb,
            "logical_cpus": self._n_cpu,
        }

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "EnergyMonitor":
        self._t0 = time.perf_counter()
        self._wall0 = time.time()
        self._last_t = 0.0
        self._last_cpu = _tree_cpu_s(self._proc)
        self._record()
        self._thread = threading.Thread(target=self._loop, name="ecoeval-energy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()
        self.wall_s = time.perf_counter() - self._t0

    def __enter__(self) -> "EnergyMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- training steps --------------------------------------------------------
    def step_begin(self, step: int) -> None:
        self._step = step
        self._steps.append([step, time.perf_counter() - self._t0, None, 0])

    def step_end(self, step: int, tokens: int = 0) -> None:
        if self._steps and self._steps[-1][0] == step:
            self._steps[-1][2] = time.perf_counter() - self._t0
            self._steps[-1][3] = int(tokens)

    # -- sampling --------------------------------------------------------------
    def _loop(self) -> None:
        period = 1.0 / self.hz
        while not self._stop.wait(period):
            self._record()

    def _record(self) -> None:
        with self._lock:
            t = time.perf_counter() - self._t0
            cpu = _tree_cpu_s(self._proc)
            dt = max(t - self._last_t, 1e-9)
            util = min(max((cpu - self._last_cpu) / dt / self._n_cpu, 0.0), 1.0) if t > 0 else 0.0
            try:
                rss_gb = self._proc.memory_info().rss / 1e9
            except psutil.Error:
                rss_gb = 0.0
            p_cpu = self._tdp * util
            p_ram = self.ram_w_per_gb * rss_gb
            if t > 0:
                self._energy["cpu"] += p_cpu * (t - self._last_t)
                self._energy["dram"] += p_ram * (t - self._last_t)
            ts = datetime.fromtimestamp(self._wall0 + t, tz=timezone.utc)
            self._rows.append([t, ts, "cpu", "package", self._energy["cpu"], p_cpu, util, "estimate", self._step])
            self._rows.append([t, ts, "ram", "dram", self._energy["dram"], p_ram, None, "estimate", self._step])
            self._last_t, self._last_cpu = t, cpu

    # -- results ---------------------------------------------------------------
    def samples(self) -> pa.Table:
        cols = list(zip(*self._rows)) if self._rows else [[] for _ in SAMPLE_SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, SAMPLE_SCHEMA)], schema=SAMPLE_SCHEMA)

    def steps(self) -> pa.Table:
        rows = [r for r in self._steps if r[2] is not None]
        cols = list(zip(*rows)) if rows else [[] for _ in STEP_SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, STEP_SCHEMA)], schema=STEP_SCHEMA)
