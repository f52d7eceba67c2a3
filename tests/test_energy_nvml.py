"""GPU paths of the monitor against a fake pynvml with the real module's names and error codes."""

from __future__ import annotations

import logging
import os
import time

import pynvml as real_pynvml
import pytest

from ecoeval import EcoevalError
from ecoeval.energy import EnergyMonitor
from fakes.nvml import FakeGpu, install


def gpu_rows(mon, index):
    return [r for r in mon.samples().to_pylist() if r["device"] == f"gpu:{index}"]


def test_fake_has_the_real_names():
    from fakes.nvml import build

    fake = build([FakeGpu()])
    for name in fake.FAKE_FUNCTIONS:
        assert hasattr(real_pynvml, name), name
    assert fake.NVMLError is real_pynvml.NVMLError
    assert isinstance(real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED), fake.NVMLError_NotSupported)


def test_counter_and_sampled_gpus(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    me = os.getpid()
    gpus = [
        FakeGpu(power_w=300.0, process_sm_util={me: 60, 999999: 40}),
        FakeGpu(name="Tesla P4", power_w=50.0, has_energy_counter=False),
    ]
    fake = install(monkeypatch, gpus)
    with EnergyMonitor(hz=20, powercap_root=tmp_path / "absent") as mon:
        time.sleep(0.8)
    g0, g1 = gpu_rows(mon, 0), gpu_rows(mon, 1)
    assert {r["method"] for r in g0} == {"counter"} and {r["method"] for r in g1} == {"sampled"}
    span0 = g0[-1]["t_s"] - g0[0]["t_s"]
    assert g0[-1]["energy_j"] == pytest.approx(300.0 * span0, rel=0.02)
    assert g1[-1]["energy_j"] == pytest.approx(50.0 * (g1[-1]["t_s"] - g1[0]["t_s"]), rel=1e-6)
    # our pid has 60% of the SM utilisation on GPU 0; no per-process data on GPU 1 -> none of ours
    assert g0[-1]["attributed_energy_j"] == pytest.approx(0.6 * g0[-1]["energy_j"], rel=1e-6)
    assert g1[-1]["attributed_energy_j"] == 0.0
    assert g0[-1]["utilization"] == pytest.approx(0.7)
    gpus_info = {g["index"]: g for g in mon.assumptions["gpus"]}
    assert "nvmlDeviceGetProcessUtilization" in gpus_info[0]["attribution"]
    assert gpus_info[1]["method"] == "sampled"
    lines = [r.getMessage() for r in caplog.records if "nvmlDeviceGetTotalEnergyConsumption" in r.getMessage()]
    assert len(lines) == 1 and "GPU 1" in lines[0] and "Not Supported" in lines[0]
    assert fake.state["init"] == 0  # nvmlShutdown called


def test_nvml_library_missing_is_one_line_and_no_rows(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    install(monkeypatch, [FakeGpu()], init_error=real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with EnergyMonitor(hz=20, powercap_root=tmp_path / "absent") as mon:
        time.sleep(0.1)
    assert not any(r["device"].startswith("gpu") for r in mon.samples().to_pylist())
    lines = [r.getMessage() for r in caplog.records if "nvmlInit" in r.getMessage()]
    assert len(lines) == 1 and "NVML Shared Library Not Found" in lines[0] and "driver" in lines[0]
    assert "nvmlInit" in mon.assumptions["gpu"]


def test_gpu_without_counter_or_power_is_skipped_loudly(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    gpus = [FakeGpu(has_energy_counter=False, errors={"nvmlDeviceGetPowerUsage": real_pynvml.NVML_ERROR_NO_PERMISSION})]
    install(monkeypatch, gpus)
    with EnergyMonitor(hz=20, powercap_root=tmp_path / "absent") as mon:
        time.sleep(0.1)
    assert not gpu_rows(mon, 0)
    warn = [r for r in caplog.records if r.levelno == logging.WARNING and "GPU 0" in r.getMessage()]
    assert len(warn) == 1 and "Insufficient Permissions" in warn[0].getMessage()


def test_counter_failing_mid_run_switches_to_sampled(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    gpu = FakeGpu(power_w=200.0, errors={"nvmlDeviceGetTotalEnergyConsumption": real_pynvml.NVML_ERROR_GPU_IS_LOST},
                  fail_after_calls={"nvmlDeviceGetTotalEnergyConsumption": 6})
    install(monkeypatch, [gpu])
    with EnergyMonitor(hz=20, powercap_root=tmp_path / "absent") as mon:
        time.sleep(0.8)
    rows = gpu_rows(mon, 0)
    methods = [r["method"] for r in rows]
    assert methods[0] == "counter" and methods[-1] == "sampled"
    assert rows[-1]["energy_j"] == pytest.approx(200.0 * (rows[-1]["t_s"] - rows[0]["t_s"]), rel=0.05)
    assert sum("failed mid-run" in r.getMessage() for r in caplog.records) == 1


def test_process_utilization_unsupported_uses_gpu_memory(monkeypatch, tmp_path):
    me = os.getpid()
    gpu = FakeGpu(process_sm_util={me: 1, 4242: 1, 4343: 1, 4444: 1},
                  errors={"nvmlDeviceGetProcessUtilization": real_pynvml.NVML_ERROR_NOT_SUPPORTED})
    install(monkeypatch, [gpu])
    with EnergyMonitor(hz=20, powercap_root=tmp_path / "absent") as mon:
        time.sleep(0.4)
    last = gpu_rows(mon, 0)[-1]
    assert last["attributed_energy_j"] == pytest.approx(0.25 * last["energy_j"], rel=1e-6)
    assert "GPU memory" in mon.assumptions["gpus"][0]["attribution"]


def test_gpu_index_out_of_range(monkeypatch, tmp_path):
    install(monkeypatch, [FakeGpu()])
    with pytest.raises(EcoevalError, match=r"energy.gpu_index: expected an index below 1.*found 3"):
        EnergyMonitor(gpu_index=3, powercap_root=tmp_path / "absent").start()
