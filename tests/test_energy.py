"""The energy monitor on a fake RAPL powercap tree, the estimate path, windows and steps."""

from __future__ import annotations

import logging
import os
import time

import pytest

from ecoeval import EcoevalError
from ecoeval.energy import EnergyMonitor, SAMPLE_SCHEMA
from ecoeval.energy import sources
from fakes.powercap import FakePowercap, Zone, server_tree

os.environ.setdefault("OMP_NUM_THREADS", "1")


def busy(seconds: float) -> None:
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        sum(i * i for i in range(1000))


def energy_by(table, device, domain):
    rows = [r for r in table.to_pylist() if r["device"] == device and r["domain"] == domain]
    assert rows, f"no rows for {device}/{domain}"
    return rows


def span(rows):
    return rows[-1]["t_s"] - rows[0]["t_s"]


def test_server_tree_within_2_percent_with_wrap_dram_and_subzones(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    with server_tree(tmp_path / "powercap") as fake:
        mon = EnergyMonitor(hz=20, powercap_root=fake.root)
        with mon:
            busy(6.0)
    table = mon.samples()
    assert table.schema == SAMPLE_SCHEMA
    truth = {("cpu:0", "package"): 40.0, ("cpu:1", "package"): 25.0, ("ram:0", "dram"): 8.0}
    for (device, domain), power in truth.items():
        rows = energy_by(table, device, domain)
        assert {r["method"] for r in rows} == {"counter"}
        true_j = power * span(rows)
        assert rows[-1]["energy_j"] == pytest.approx(true_j, rel=0.02), (device, domain)
        assert rows[0]["energy_j"] == 0.0
        assert all(b["energy_j"] >= a["energy_j"] for a, b in zip(rows, rows[1:]))  # wrap handled
    # core/uncore are inside the package: never rows of their own, never added
    assert {(r["device"], r["domain"]) for r in table.to_pylist()} == set(truth)
    assert mon.assumptions["rapl_ignored_subzones"] == ["intel-rapl:0:0=core", "intel-rapl:0:1=uncore", "intel-rapl:1:0=core"]
    # no estimate needed: RAPL covers CPU and memory
    assert "cpu_tdp_w" not in mon.assumptions and "ram_w_per_gb" not in mon.assumptions
    # package-1 wrapped at least twice during the run (range 62.5 J at 25 W, starting 1 J short)
    assert energy_by(table, "cpu:1", "package")[-1]["energy_j"] > 2 * 62.5
    # attributed share is part of the device energy
    for key in truth:
        last = energy_by(table, *key)[-1]
        assert 0.0 <= last["attributed_energy_j"] <= last["energy_j"] + 1e-9


def test_psys_rows_add_up_to_platform_without_double_counting(tmp_path):
    zones = [
        Zone("intel-rapl:0", "package-0", 15.0),
        Zone("intel-rapl:0:0", "core", 10.0),
        Zone("intel-rapl:0:1", "uncore", 2.0),
        Zone("intel-rapl:1", "psys", 28.0),
    ]
    with FakePowercap(tmp_path / "pc", zones) as fake:
        with EnergyMonitor(hz=20, powercap_root=fake.root) as mon:
            time.sleep(1.2)
    table = mon.samples()
    pkg = energy_by(table, "cpu:0", "package")
    rest = energy_by(table, "platform", "psys-rest")
    assert pkg[-1]["energy_j"] == pytest.approx(15.0 * span(pkg), rel=0.02)
    assert rest[-1]["energy_j"] == pytest.approx(13.0 * span(rest), rel=0.05)
    # every row is additive: the counters sum to psys, memory has no RAPL zone -> estimate
    assert pkg[-1]["energy_j"] + rest[-1]["energy_j"] == pytest.approx(28.0 * span(pkg), rel=0.02)
    methods = {(r["device"], r["method"]) for r in table.to_pylist()}
    assert methods == {("cpu:0", "counter"), ("platform", "counter"), ("ram", "estimate")}


@pytest.mark.parametrize("how", ["dir", "garbage"])
def test_unreadable_dram_falls_back_to_estimate_with_one_line(tmp_path, caplog, how):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    zones = [Zone("intel-rapl:0", "package-0", 30.0), Zone("intel-rapl:0:2", "dram", 5.0, unreadable=how)]
    with FakePowercap(tmp_path / "pc", zones) as fake:
        with EnergyMonitor(hz=20, powercap_root=fake.root, ram_w_per_gb=0.5) as mon:
            time.sleep(0.8)
    table = mon.samples()
    assert {r["method"] for r in energy_by(table, "cpu:0", "package")} == {"counter"}
    ram = energy_by(table, "ram", "dram")
    assert {r["method"] for r in ram} == {"estimate"}
    assert ram[-1]["energy_j"] > 0
    lines = [r.getMessage() for r in caplog.records if "intel-rapl:0:2" in r.getMessage()]
    assert len(lines) == 1, lines
    assert str(tmp_path / "pc" / "intel-rapl:0:2" / "energy_uj") in lines[0]
    assert "memory energy is estimated" in lines[0]
    assert mon.assumptions["ram_w_per_gb"] == 0.5


def test_unreadable_package_falls_back_to_cpu_estimate(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    zones = [Zone("intel-rapl:0", "package-0", 30.0, unreadable="dir"), Zone("intel-rapl:0:2", "dram", 5.0)]
    with FakePowercap(tmp_path / "pc", zones) as fake:
        with EnergyMonitor(hz=20, cpu_tdp_w=50, powercap_root=fake.root) as mon:
            busy(0.5)
    devices = {(r["device"], r["domain"], r["method"]) for r in mon.samples().to_pylist()}
    # a dram counter without its package would leave CPU to the estimate: both estimated
    assert devices == {("cpu", "package", "estimate"), ("ram", "dram", "estimate")}
    assert mon.assumptions["cpu_tdp_w"] == 50 and mon.assumptions["cpu_tdp_source"] == "config energy.cpu_tdp_w"
    assert sum("intel-rapl:0/energy_uj" in r.getMessage() and "CPU energy is estimated" in r.getMessage() for r in caplog.records) == 1


def test_why_names_the_fix_for_permission_denied():
    msg = sources._why(PermissionError(13, "Permission denied"))
    assert "permission denied" in msg and "chmod" in msg


def test_no_powercap_tree_logs_one_line_and_estimates(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ecoeval.energy")
    with EnergyMonitor(hz=50, cpu_tdp_w=20.0, powercap_root=tmp_path / "absent") as mon:
        busy(0.6)
    lines = [r.getMessage() for r in caplog.records if "absent" in r.getMessage()]
    assert len(lines) == 1 and "estimated" in lines[0]
    cpu = energy_by(mon.samples(), "cpu", "package")
    assert {r["method"] for r in cpu} == {"estimate"}
    # attributed CPU energy = TDP / logical CPUs x CPU seconds of this process in the window
    n = mon.assumptions["logical_cpus"]
    assert cpu[-1]["attributed_energy_j"] > 0
    assert cpu[-1]["attributed_energy_j"] <= 20.0 / n * (mon.wall_s * n) + 1e-6
    assert cpu[-1]["energy_j"] >= cpu[-1]["attributed_energy_j"]


def test_estimate_attribution_matches_cpu_time(tmp_path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    with EnergyMonitor(hz=20, cpu_tdp_w=40.0, powercap_root=tmp_path / "absent") as mon:
        busy(0.8)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    n = mon.assumptions["logical_cpus"]
    got = energy_by(mon.samples(), "cpu", "package")[-1]["attributed_energy_j"]
    assert got == pytest.approx(40.0 / n * cpu_s, rel=0.1)


def test_cpu_tdp_lookup_uses_codecarbon_table(monkeypatch):
    monkeypatch.setattr(sources, "cpu_model_name", lambda: "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz")
    monkeypatch.setattr(sources, "cpu_sockets", lambda: 2)
    info = sources.cpu_tdp(None, 160)
    assert info["cpu_tdp_matched_model"] == "Intel Xeon Platinum 8380"
    assert info["cpu_tdp_w"] == 2 * 270.0
    assert "cpu_power.csv" in info["cpu_tdp_source"]
    monkeypatch.setattr(sources, "cpu_model_name", lambda: "AMD EPYC")  # ambiguous: many EPYCs
    info = sources.cpu_tdp(None, 2)
    assert info["cpu_tdp_matched_model"] is None
    assert info["cpu_tdp_w"] == 2 * sources.CODECARBON_DEFAULT_W_PER_THREAD
    assert "not matched" in info["cpu_tdp_source"]


def test_windows_read_counters_exactly_at_boundaries(tmp_path):
    zones = [Zone("intel-rapl:0", "package-0", 50.0)]
    with FakePowercap(tmp_path / "pc", zones, hz=1000) as fake:
        with EnergyMonitor(hz=1, powercap_root=fake.root) as mon:  # the sampler barely runs
            mon.begin_window("work")
            time.sleep(0.5)
            m = mon.end_window("work")
            with pytest.raises(EcoevalError, match="without begin_window"):
                mon.end_window("work")
    assert m.method["cpu:0/package"] == "counter"
    assert m.energy_j["cpu:0/package"] == pytest.approx(50.0 * m.time_s, rel=0.02)
    assert mon.windows()[0]["name"] == "work"
    assert mon.metadata()["windows"][0]["energy_j"]["cpu:0/package"] == m.energy_j["cpu:0/package"]


def test_steps_are_marked_on_samples(tmp_path):
    with EnergyMonitor(hz=50, powercap_root=tmp_path / "absent") as mon:
        for step in (1, 2, 3):
            mon.step_begin(step)
            busy(0.12)
            mon.step_end(step, tokens=100)
        time.sleep(0.05)
    steps = mon.steps().to_pylist()
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["tokens"] == 100 for s in steps)
    assert all(s["t_end_s"] > s["t_begin_s"] for s in steps)
    marked = {r["step"] for r in mon.samples().to_pylist()}
    assert {1, 2, 3} <= marked and -1 in marked
    # replayed windows from another process (absolute perf_counter) label samples too
    mon2 = EnergyMonitor(hz=50, powercap_root=tmp_path / "absent").start()
    t0 = time.perf_counter()
    time.sleep(0.2)
    t1 = time.perf_counter()
    time.sleep(0.05)
    mon2.stop()
    mon2.add_step(7, t0, t1, 64)
    assert mon2.steps().to_pylist()[0]["step"] == 7
    assert 7 in {r["step"] for r in mon2.samples().to_pylist()}


def test_bad_rate_is_one_line_error():
    with pytest.raises(EcoevalError, match="energy.sample_hz"):
        EnergyMonitor(hz=0)
