"""A fake RAPL powercap tree: the same files as /sys/class/powercap, with `energy_uj` counters
advancing in real time at known powers (a separate writer process rewrites them atomically,
so a busy test process holding the GIL cannot starve it),
wrapping at `max_energy_range_uj` like the hardware counters do."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Zone:
    dirname: str  # intel-rapl:0, intel-rapl:0:2, ...
    name: str  # package-0, core, uncore, dram, psys
    power_w: float
    max_range_uj: int = 262143328850  # a real package's range
    start_uj: int = 0  # counter value at the start (set near max_range_uj to wrap early)
    unreadable: str | None = None  # "dir": energy_uj is a folder; "missing": no energy_uj; "garbage"


class FakePowercap:
    def __init__(self, root: Path, zones: list[Zone], hz: float = 500.0) -> None:
        self.root = Path(root)
        self.zones = zones
        self.period = 1.0 / hz
        self._ctx = multiprocessing.get_context("fork")
        self._stop = self._ctx.Event()
        self._proc = None
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "intel-rapl").mkdir(exist_ok=True)  # the control-type folder (no energy_uj)
        (self.root / "intel-rapl" / "enabled").write_text("1\n")
        for z in zones:
            d = self.root / z.dirname
            d.mkdir()
            (d / "name").write_text(z.name + "\n")
            (d / "max_energy_range_uj").write_text(f"{z.max_range_uj}\n")
            if z.unreadable == "dir":
                (d / "energy_uj").mkdir()
            elif z.unreadable == "garbage":
                (d / "energy_uj").write_text("N/A\n")
        self.t0 = time.perf_counter()
        self._write()

    def value_uj(self, z: Zone, t: float) -> int:
        return (z.start_uj + int(z.power_w * (t - self.t0) * 1e6)) % z.max_range_uj

    def _write(self) -> None:
        t = time.perf_counter()
        for z in self.zones:
            if z.unreadable:
                continue
            path = self.root / z.dirname / "energy_uj"
            tmp = path.with_name(".energy_uj.tmp")
            tmp.write_text(f"{self.value_uj(z, t)}\n")
            os.replace(tmp, path)

    def _loop(self) -> None:
        try:  # stay ahead of busy test processes on a small machine (works as root; else no-op)
            os.nice(-15)
        except OSError:
            pass
        while not self._stop.wait(self.period):
            self._write()

    def __enter__(self) -> "FakePowercap":
        self._proc = self._ctx.Process(target=self._loop, daemon=True)
        self._proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._proc.join(timeout=10)


def server_tree(root: Path) -> FakePowercap:
    """Two sockets: package-0 with core, uncore (unreadable) and dram subzones; package-1 wraps
    after 0.04 s and then every 2.5 s (twice in the 6 s test). Real counters wrap after tens of
    minutes; 2.5 s is what a test can wait for while leaving a loaded 2-core CI machine room:
    a sampler stalled longer than one wrap period cannot tell one wrap from two (the 1.2 s
    period this tree first had lost a wrap once in CI)."""
    return FakePowercap(
        root,
        [
            Zone("intel-rapl:0", "package-0", 40.0),
            Zone("intel-rapl:0:0", "core", 30.0),
            Zone("intel-rapl:0:1", "uncore", 5.0, unreadable="dir"),
            Zone("intel-rapl:0:2", "dram", 8.0, max_range_uj=65712999613),
            Zone("intel-rapl:1", "package-1", 25.0, max_range_uj=62_500_000, start_uj=61_500_000),
            Zone("intel-rapl:1:0", "core", 20.0),
        ],
    )
