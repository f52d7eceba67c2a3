"""A fake `pynvml` (nvidia-ml-py) module: the real module's constants and `NVMLError`
classes, with the device functions the monitor calls answered by simulated GPUs whose
energy counters advance in real time. Install with `install(monkeypatch, gpus)`."""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field

import pynvml as real


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float = 100.0
    has_energy_counter: bool = True
    util_percent: int = 70
    boot_energy_mj: int = 123_456_789
    # pid -> SM utilisation %, answered by nvmlDeviceGetProcessUtilization
    process_sm_util: dict = field(default_factory=dict)
    # function name -> NVML error code it fails with (from the call number given, 0 = always)
    errors: dict = field(default_factory=dict)
    fail_after_calls: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    calls: dict = field(default_factory=dict)

    def energy_mj(self) -> int:
        return self.boot_energy_mj + int(self.power_w * (time.perf_counter() - self.t0) * 1000)


@dataclass
class _Handle:
    gpu: FakeGpu


@dataclass
class _ProcessSample:  # fields of pynvml.c_nvmlProcessUtilizationSample_t
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int = 0
    encUtil: int = 0
    decUtil: int = 0


@dataclass
class _ProcessInfo:  # fields of pynvml.c_nvmlProcessInfo_t
    pid: int
    usedGpuMemory: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class _Utilization:  # pynvml.c_nvmlUtilization_t
    gpu: int
    memory: int


def build(gpus: list[FakeGpu], init_error: int | None = None) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    for k in dir(real):
        if k.startswith("NVML_") or k.startswith("NVMLError"):
            setattr(mod, k, getattr(real, k))
    state = {"init": 0}

    def check(h: _Handle, fn: str) -> FakeGpu:
        if state["init"] <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        g = h.gpu
        g.calls[fn] = g.calls.get(fn, 0) + 1
        if fn in g.errors and g.calls[fn] > g.fail_after_calls.get(fn, 0):
            raise real.NVMLError(g.errors[fn])
        return g

    def nvmlInit():
        if init_error is not None:
            raise real.NVMLError(init_error)
        state["init"] += 1

    def nvmlShutdown():
        if state["init"] <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        state["init"] -= 1

    def nvmlDeviceGetCount():
        if state["init"] <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index):
        if state["init"] <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(gpus):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(gpus[index])

    def nvmlDeviceGetName(h):
        return check(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetTotalEnergyConsumption(h):
        g = check(h, "nvmlDeviceGetTotalEnergyConsumption")
        if not g.has_energy_counter:  # pre-Volta GPUs
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return g.energy_mj()

    def nvmlDeviceGetPowerUsage(h):
        return int(check(h, "nvmlDeviceGetPowerUsage").power_w * 1000)  # milliwatts

    def nvmlDeviceGetUtilizationRates(h):
        return _Utilization(check(h, "nvmlDeviceGetUtilizationRates").util_percent, 10)

    def nvmlDeviceGetProcessUtilization(h, timeStamp):
        g = check(h, "nvmlDeviceGetProcessUtilization")
        now_us = int(time.time() * 1e6)
        if not g.process_sm_util:
            raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)
        return [_ProcessSample(pid, now_us, util) for pid, util in g.process_sm_util.items()]

    def nvmlDeviceGetComputeRunningProcesses(h):
        g = check(h, "nvmlDeviceGetComputeRunningProcesses")
        return [_ProcessInfo(pid, 1 << 30) for pid in g.process_sm_util]

    for f in (
        nvmlInit, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName,
        nvmlDeviceGetTotalEnergyConsumption, nvmlDeviceGetPowerUsage, nvmlDeviceGetUtilizationRates,
        nvmlDeviceGetProcessUtilization, nvmlDeviceGetComputeRunningProcesses,
    ):
        setattr(mod, f.__name__, f)
    mod.FAKE_FUNCTIONS = [n for n in vars(mod) if n.startswith("nvml")]
    mod.state = state
    return mod


def install(monkeypatch, gpus: list[FakeGpu], init_error: int | None = None) -> types.ModuleType:
    mod = build(gpus, init_error)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    return mod
