"""Check the NVML energy counter against integrated NVML power on a GPU matmul loop.

    python benchmarks/gpu_nvml_check.py [--seconds 20] [--gpu 0] [--hz 20]

Needs an NVIDIA GPU, its driver and torch with CUDA; without them it says so in one line
and exits 2. Runs in well under 2 minutes:
1. idle phase (3 s), then a bf16 matmul loop for `--seconds`, then idle again (3 s);
2. during all of it, a thread integrates nvmlDeviceGetPowerUsage at `--hz` (trapezoid) while
   nvmlDeviceGetTotalEnergyConsumption is read at the start and end of each phase;
3. the same run is also measured by ecoeval's EnergyMonitor (its counter path) with a
   begin_window/end_window around the loop; the raw integrator in 2. is what the
   monitor's `sampled` path computes on GPUs without a counter;
4. prints per-phase energies, the relative differences, and the attributed share.

Agreement within a few percent is expected on the loaded phase (NVML power on recent
GPUs is a 1 s moving average on some models, which lags at phase edges; the counter is exact).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time


def fail(msg: str) -> int:
    print(f"gpu_nvml_check: {msg}", file=sys.stderr)
    return 2


class PowerIntegrator(threading.Thread):
    def __init__(self, nv, handle, hz: float) -> None:
        super().__init__(daemon=True)
        self.nv, self.h, self.period = nv, handle, 1.0 / hz
        self.stop_evt = threading.Event()
        self.lock = threading.Lock()
        self.energy_j = 0.0
        self.n = 0
        self.max_w = 0.0

    def run(self) -> None:
        t_prev, p_prev = time.perf_counter(), self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
        while not self.stop_evt.wait(self.period):
            t, p = time.perf_counter(), self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
            with self.lock:
                self.energy_j += 0.5 * (p + p_prev) * (t - t_prev)
                self.n += 1
                self.max_w = max(self.max_w, p)
            t_prev, p_prev = t, p

    def read(self) -> float:
        with self.lock:
            return self.energy_j


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=8192)
    args = ap.parse_args()
    try:
        import pynvml as nv
    except ImportError:
        return fail("pynvml is not installed (pip install nvidia-ml-py)")
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return fail(f"nvmlInit(): {exc}: no NVIDIA GPU/driver on this machine")
    try:
        import torch
    except ImportError:
        return fail("torch is not installed")
    if not torch.cuda.is_available():
        return fail("torch.cuda.is_available() is False (CPU-only torch build or no GPU)")
    h = nv.nvmlDeviceGetHandleByIndex(args.gpu)
    name = nv.nvmlDeviceGetName(h)
    try:
        nv.nvmlDeviceGetTotalEnergyConsumption(h)
        has_counter = True
    except nv.NVMLError as exc:
        has_counter = False
        print(f"GPU {args.gpu} has no energy counter ({exc}); only the sampled path is checked")
    print(f"GPU {args.gpu}: {name}; driver {nv.nvmlSystemGetDriverVersion()}; counter: {has_counter}")

    from ecoeval.energy import EnergyMonitor

    dev = torch.device("cuda", args.gpu)
    a = torch.randn(args.size, args.size, device=dev, dtype=torch.bfloat16)
    b = torch.randn(args.size, args.size, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()

    integ = PowerIntegrator(nv, h, args.hz)
    mon = EnergyMonitor(hz=10, gpu_index=args.gpu).prepare()
    counter = lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 if has_counter else float("nan")  # noqa: E731
    phases = []
    integ.start()
    mon.start()

    def phase(label: str, fn) -> None:
        e0, s0, t0 = counter(), integ.read(), time.perf_counter()
        if label == "load":
            mon.begin_window("load")
        fn()
        if label == "load":
            phases.append(("monitor window", mon.end_window("load")))
        phases.append((label, time.perf_counter() - t0, counter() - e0, integ.read() - s0))

    def load() -> None:
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < args.seconds:
            for _ in range(20):
                torch.mm(a, b)
            torch.cuda.synchronize()
            n += 20
        flops = 2 * args.size**3 * n / (time.perf_counter() - t)
        print(f"matmul loop: {n} matmuls, {flops / 1e12:.0f} TFLOP/s")

    phase("idle-before", lambda: time.sleep(3))
    phase("load", load)
    phase("idle-after", lambda: time.sleep(3))
    mon.stop()
    integ.stop_evt.set()
    integ.join()
    nv.nvmlShutdown()

    print(f"\n{'phase':<14}{'seconds':>9}{'counter J':>12}{'sampled J':>12}{'sampled/counter':>17}")
    worst = 0.0
    for p in phases:
        if p[0] == "monitor window":
            continue
        label, secs, ej, sj = p
        ratio = sj / ej if ej and ej == ej else float("nan")
        if label == "load" and ratio == ratio:
            worst = abs(ratio - 1)
        print(f"{label:<14}{secs:9.2f}{ej:12.1f}{sj:12.1f}{ratio:17.4f}")
    window = next(p[1] for p in phases if p[0] == "monitor window")
    key = f"gpu:{args.gpu}/gpu"
    print(f"\necoeval EnergyMonitor window 'load': {window.energy_j.get(key, float('nan')):.1f} J "
          f"(method {window.method.get(key)}), attributed to this process {window.attributed_energy_j.get(key, float('nan')):.1f} J")
    rows = [r for r in mon.samples().to_pylist() if r["device"] == f"gpu:{args.gpu}"]
    if rows:
        print(f"ecoeval whole run: {rows[-1]['energy_j']:.1f} J over {rows[-1]['t_s'] - rows[0]['t_s']:.1f} s, "
              f"attributed {rows[-1]['attributed_energy_j']:.1f} J; attribution basis: "
              f"{mon.assumptions.get('gpus', [{}])[0].get('attribution')}")
    print(f"power samples: {integ.n} at {args.hz:g} Hz, max {integ.max_w:.0f} W")
    load_phase = next(p for p in phases if p[0] == "load")
    if has_counter:
        w = window.energy_j.get(key, float("nan"))
        print(f"monitor window vs raw counter on the loaded phase: {w / load_phase[2]:.4f}")
        print(f"RESULT: sampled/counter on the loaded phase differs by {100 * worst:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
