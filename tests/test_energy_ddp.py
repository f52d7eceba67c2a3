"""One collector per node: two CPU ranks on the gloo backend count the node's energy once."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

import pytest

from fakes.powercap import FakePowercap, Zone

PACKAGE_W = 40.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, root: str, port: int, out: str) -> None:
    # what torchrun sets for each worker
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_RUN_ID="energy-test", ECOEVAL_NODE_LOCK_DIR=out, OMP_NUM_THREADS="1")
    import torch
    import torch.distributed as dist

    from ecoeval.energy import EnergyMonitor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mon = EnergyMonitor(hz=20, powercap_root=root).prepare()
    dist.barrier()  # both ranks have taken their role
    mon.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    x = torch.randn(128, 128)
    for step in range(1, 11):
        mon.step_begin(step)
        t = time.perf_counter()
        while time.perf_counter() - t < 0.15:
            x = torch.tanh(x @ x.T / 128)
        dist.all_reduce(x)
        mon.step_end(step, tokens=128)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    dist.barrier()
    mon.stop()
    table = mon.samples().to_pylist()
    result = {
        "rank": rank, "pid": os.getpid(), "collector": mon.is_collector, "rows": len(table),
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "assumptions": mon.assumptions, "steps": len(mon.steps()),
        "package": [r for r in table if r["device"] == "cpu:0"],
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result, default=str))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_count_node_energy_once(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "out"
    out.mkdir()
    with FakePowercap(tmp_path / "pc", [Zone("intel-rapl:0", "package-0", PACKAGE_W)]) as fake:
        mp.spawn(_rank, args=(2, str(fake.root), _free_port(), str(out)), nprocs=2, join=True)
    res = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    collectors = [r for r in res if r["collector"]]
    followers = [r for r in res if not r["collector"]]
    assert len(collectors) == 1 and len(followers) == 1
    c, f = collectors[0], followers[0]
    assert f["rows"] == 0 and f["assumptions"]["role"] == "follower"
    assert c["assumptions"]["role"] == "collector" and c["rows"] > 0
    assert f["steps"] == c["steps"] == 10  # every rank marks its steps
    # the node's package energy appears once: the sum over ranks equals the true energy
    pkg = c["package"]
    total = sum(r["package"][-1]["energy_j"] for r in res if r["package"])
    assert total == pytest.approx(PACKAGE_W * (pkg[-1]["t_s"] - pkg[0]["t_s"]), rel=0.02)
    # and the collector attributes the follower's process to the job
    assert f["pid"] in c["assumptions"]["measured_pids"] and c["pid"] in c["assumptions"]["measured_pids"]
    assert 0 < pkg[-1]["attributed_energy_j"] <= pkg[-1]["energy_j"]
    # no lock or pid file is left behind held
    assert not list(out.glob("*.pids/*"))
