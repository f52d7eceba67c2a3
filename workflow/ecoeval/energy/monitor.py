"""The one energy monitor, used by every stage through `ecoeval.runner`.

A background thread reads every source at `hz`; `begin_window` / `end_window` (Zeus-style)
and `start` / `stop` read them exactly at their boundaries. Training loops mark steps with
`step_begin` / `step_end` (timestamps only, so a step costs nothing measurable); energy per
step comes from the cumulative series (`ecoeval.energy.summary.step_energy`).

Sources, per kind of device, in this order (each row says which one it is in `method`):
RAPL counters (`counter`) else a TDP estimate (`estimate`) for CPU and memory; NVML's
energy counter (`counter`) else integrated NVML power (`sampled`) for NVIDIA GPUs.

Several processes of one job on one node (torchrun ranks: LOCAL_RANK set) elect one
collector with a node-local lock file; the others only mark steps, and register their pid
so that the collector attributes their CPU/GPU use to the job.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pyarrow as pa

from ecoeval.energy import sources as src

log = logging.getLogger("ecoeval.energy")

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
        # our process tree's share of energy_j (cumulative); energy_j is the whole device
        ("attributed_energy_j", pa.float64()),
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


@dataclass
class Measurement:
    """One window's result: seconds and joules per `device/domain` (whole device and our share)."""

    name: str
    time_s: float
    energy_j: dict[str, float] = field(default_factory=dict)
    attributed_energy_j: dict[str, float] = field(default_factory=dict)
    method: dict[str, str] = field(default_factory=dict)

    @property
    def total_energy_j(self) -> float:
        return sum(self.energy_j.values())


# -- one collector per node ----------------------------------------------------------


def _job_group() -> str | None:
    """An id shared by the processes of one distributed job (torchrun / torch.distributed env)."""
    if "LOCAL_RANK" not in os.environ:
        return None
    e = os.environ
    return "|".join([e.get("TORCHELASTIC_RUN_ID", ""), e.get("MASTER_ADDR", ""), e.get("MASTER_PORT", ""), e.get("SLURM_JOB_ID", "")])


class NodeRole:
    """Collector (holds the node lock) or follower (registers its pid for the collector)."""

    def __init__(self, group: str | None, lock_dir: str | None = None) -> None:
        self.group = group
        self.collector = True
        self._fh = None
        self._pidfile: Path | None = None
        if group is None:
            return
        base = Path(lock_dir or os.environ.get("ECOEVAL_NODE_LOCK_DIR") or tempfile.gettempdir())
        key = hashlib.sha1(group.encode()).hexdigest()[:16]
        self.lock_path = base / f"ecoeval-energy-{key}.lock"
        self.pid_dir = base / f"ecoeval-energy-{key}.pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fh = fh
        except BlockingIOError:
            fh.close()
            self.collector = False
            self._pidfile = self.pid_dir / str(os.getpid())
            self._pidfile.touch()

    def peer_pids(self) -> list[int]:
        if self.group is None or not self.collector:
            return []
        try:
            return [int(p.name) for p in self.pid_dir.iterdir() if p.name.isdigit()]
        except OSError:
            return []

    def release(self) -> None:
        if self._pidfile is not None:
            self._pidfile.unlink(missing_ok=True)
            self._pidfile = None
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class EnergyMonitor:
    """Measure energy of this process tree (or of `pid`'s) by device, method and step."""

    def __init__(
        self,
        hz: float = 10.0,
        cpu_tdp_w: float | None = None,
        ram_w_per_gb: float = 0.375,
        gpu_index: int | None = None,
        *,
        pid: int | None = None,
        powercap_root: str | os.PathLike | None = None,
        node_group: str | None = "auto",
    ) -> None:
        if not hz or hz <= 0:
            from ecoeval import EcoevalError

            raise EcoevalError(f"energy.sample_hz: expected a number above 0, found {hz!r}")
        self.hz = float(hz)
        self.cpu_tdp_w = cpu_tdp_w
        self.ram_w_per_gb = float(ram_w_per_gb)
        self.gpu_index = gpu_index
        self.pid = pid or os.getpid()
        self._powercap_root = Path(powercap_root) if powercap_root else None
        self._node_group = _job_group() if node_group == "auto" else node_group
        self.assumptions: dict = {}
        self.wall_s = 0.0
        self.read_busy_s = 0.0  # time spent reading sources (the monitor's own cost)
        self.n_reads = 0
        self._rows: list[tuple] = []
        self._steps: list[list] = []
        self._windows: dict[str, tuple[float, dict]] = {}
        self._window_log: list[dict] = []
        self._step = -1
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()
        self._started = False
        self.role: NodeRole | None = None

    # -- logging: one line per problem --------------------------------------------------
    def _say(self, msg: str, level: int = logging.WARNING) -> None:
        if msg not in self._logged:
            self._logged.add(msg)
            log.log(level, msg)

    @property
    def is_collector(self) -> bool:
        return self.role is None or self.role.collector

    # -- lifecycle --------------------------------------------------------------------
    def _setup_sources(self) -> None:
        n_cpu = psutil.cpu_count(logical=True) or 1
        self._n_cpu = n_cpu
        self._sources: list = []
        a: dict = {"sample_hz": self.hz, "logical_cpus": n_cpu, "collector_pid": os.getpid(), "measured_root_pid": self.pid}
        root = self._powercap_root or src.powercap_root()
        rapl = None
        try:
            rapl = src.RaplSource(root, warn=self._say)
            self._sources.append(rapl)
            a["rapl_zones"] = rapl.zone_names()
            a["rapl_ignored_subzones"] = rapl.ignored
        except src.Unavailable as exc:
            self._say(str(exc), logging.INFO)
            a["rapl"] = str(exc)
        if rapl is None or not rapl.covers_cpu:
            tdp = src.cpu_tdp(self.cpu_tdp_w, n_cpu)
            a.update(tdp)
            a["cpu_power_model"] = "cpu_tdp_w x utilisation (machine's for energy_j, our tree's for attributed_energy_j); idle power not modelled"
            self._sources.append(src.CpuEstimate(tdp["cpu_tdp_w"]))
        if rapl is None or not rapl.covers_ram:
            a["ram_w_per_gb"] = self.ram_w_per_gb
            a["ram_power_model"] = "ram_w_per_gb x installed GB for energy_j, x our resident GB for attributed_energy_j"
            self._sources.append(src.RamEstimate(self.ram_w_per_gb))
        try:
            nvml = src.NvmlSource(self.gpu_index, warn=self._say)
            self._sources.append(nvml)
            self._nvml = nvml
        except src.Unavailable as exc:
            level = logging.INFO if (len(exc.args) > 1 and exc.args[1] == "info") else logging.WARNING
            self._say(exc.args[0], level)
            a["gpu"] = exc.args[0]
            self._nvml = None
        self.assumptions = a

    def prepare(self) -> "EnergyMonitor":
        """Elect the node role and open the sources (NVML init, TDP lookup) without starting
        the clock; `start` calls it. Call it early to keep that time out of the measurement."""
        if self.role is not None:
            return self
        self.role = NodeRole(self._node_group)
        if not self.role.collector:
            self.assumptions = {"role": "follower", "node_group": self._node_group, "note": "energy collected by another process on this node"}
            return self
        self._setup_sources()
        self.assumptions["role"] = "collector" if self._node_group else "standalone"
        self._mem_total = psutil.virtual_memory().total
        return self

    def start(self) -> "EnergyMonitor":
        if self._started:
            return self
        self.prepare()
        self._started = True
        self._t0 = time.perf_counter()
        self._wall0 = time.time()
        if not self.role.collector:
            return self
        self._tree = src.ProcessTree(self.pid, extra_pids=self.role.peer_pids)
        self._pids_seen: set[int] = set()
        self._vm_next = 0.0
        self._read(first=True)
        self._thread = threading.Thread(target=self._loop, name="ecoeval-energy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.is_collector:
            self._read()
            self.assumptions["measured_pids"] = sorted(self._pids_seen)
            self.assumptions["monitor_read_busy_s"] = round(self.read_busy_s, 6)
            self.assumptions["monitor_reads"] = self.n_reads
            if getattr(self, "_nvml", None) is not None:
                self.assumptions["gpus"] = self._nvml.describe()
                self._nvml.close()
        self.wall_s = time.perf_counter() - self._t0
        self.role.release()

    def __enter__(self) -> "EnergyMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def note_exit_cpu(self, cpu_s: float) -> None:
        """Exact CPU seconds of the measured tree once it has exited (from wait4)."""
        if self.is_collector and self._started:
            self._tree.set_floor(cpu_s)

    # -- steps and windows ------------------------------------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def step_begin(self, step: int) -> None:
        self._step = step
        self._steps.append([step, self._now(), None, 0])

    def step_end(self, step: int, tokens: int = 0) -> None:
        if self._steps and self._steps[-1][0] == step:
            self._steps[-1][2] = self._now()
            self._steps[-1][3] = int(tokens)
        self._step = -1

    def add_step(self, step: int, t_begin: float, t_end: float, tokens: int = 0) -> None:
        """A step window measured elsewhere (another process on this node), in absolute
        `time.perf_counter()` seconds (CLOCK_MONOTONIC, shared by the node's processes)."""
        self._steps.append([int(step), t_begin - self._t0, t_end - self._t0, int(tokens)])

    def begin_window(self, name: str) -> None:
        if name in self._windows:
            from ecoeval import EcoevalError

            raise EcoevalError(f"energy window {name!r}: already open")
        snap = self._read() if self.is_collector else {}
        self._windows[name] = (self._now(), snap)

    def end_window(self, name: str) -> Measurement:
        if name not in self._windows:
            from ecoeval import EcoevalError

            raise EcoevalError(f"energy window {name!r}: end_window without begin_window")
        t_begin, before = self._windows.pop(name)
        after = self._read() if self.is_collector else {}
        t_end = self._now()
        m = Measurement(name, t_end - t_begin)
        for key, (e, attr, method) in after.items():
            e0, a0, _ = before.get(key, (0.0, 0.0, method))
            m.energy_j[key] = e - e0
            m.attributed_energy_j[key] = attr - a0
            m.method[key] = method
        self._window_log.append(
            {"name": name, "t_begin_s": t_begin, "t_end_s": t_end, "energy_j": m.energy_j, "attributed_energy_j": m.attributed_energy_j, "method": m.method}
        )
        return m

    # -- sampling ---------------------------------------------------------------------
    def _loop(self) -> None:
        period = 1.0 / self.hz
        while not self._stop_evt.wait(period):
            try:
                self._read()
            except Exception as exc:  # the sampler must never take the stage down
                self._say(f"energy sampler: {type(exc).__name__}: {exc}; sampling continues")

    def _tick(self, first: bool) -> src.Tick:
        tree_cpu, rss, pids = self._tree.read()
        sys_busy = src.system_busy_s()
        now = time.monotonic()
        if now >= self._vm_next:  # memory moves slowly; /proc/meminfo is the costliest read
            self._vm, self._vm_next = psutil.virtual_memory(), now + 1.0
        vm = self._vm
        # the time stamp of this read is taken right before the sources read their counters
        # (listing the process tree can take a while on a loaded machine)
        t = self._now()
        if first:
            self._last_tree_cpu, self._last_sys, self._last_t = tree_cpu, sys_busy, t
        dt = 0.0 if first else max(t - self._last_t, 1e-9)
        d_tree = max(tree_cpu - self._last_tree_cpu, 0.0)
        d_sys = max(sys_busy - self._last_sys, 0.0)
        cap = dt * self._n_cpu
        used = max(vm.total - vm.available, 1)
        tick = src.Tick(
            t=t,
            dt=dt,
            n_cpu=self._n_cpu,
            sys_util=min(d_sys / cap, 1.0) if cap > 0 else 0.0,
            tree_util=min(d_tree / cap, 1.0) if cap > 0 else 0.0,
            cpu_share=min(d_tree / d_sys, 1.0) if d_sys > 0 else (1.0 if d_tree > 0 else 0.0),
            d_tree_cpu_s=d_tree,
            d_sys_cpu_s=d_sys,
            mem_share=min(rss / used, 1.0),
            tree_rss_gb=rss / 1e9,
            mem_total_gb=self._mem_total / 1e9,
            mem_util=used / vm.total,
            pids=pids,
            first=first,
        )
        self._pids_seen |= pids
        self._last_tree_cpu, self._last_sys, self._last_t = tree_cpu, sys_busy, t
        return tick

    def _read(self, first: bool = False) -> dict:
        """Read every source now; append rows; return {device/domain: (energy, attributed, method)}."""
        with self._lock:
            t_read = time.perf_counter()
            tick = self._tick(first)
            t = tick.t
            ts = datetime.fromtimestamp(self._wall0 + t, tz=timezone.utc)
            snap = {}
            for s in self._sources:
                for r in s.read(tick):
                    self._rows.append((t, ts, r.device, r.domain, r.energy_j, r.power_w, r.utilization, r.method, self._step, r.attributed_j))
                    snap[f"{r.device}/{r.domain}"] = (r.energy_j, r.attributed_j, r.method)
            self.read_busy_s += time.perf_counter() - t_read
            self.n_reads += 1
            return snap

    # -- results ----------------------------------------------------------------------
    def samples(self) -> pa.Table:
        with self._lock:
            rows = list(self._rows)
        windows = sorted((r[1], r[2], r[0]) for r in self._steps if r[2] is not None)
        if windows and any(r[8] == -1 for r in rows):
            # label samples that fall inside a step window added afterwards (add_step)
            import bisect

            begins = [w[0] for w in windows]
            for i, r in enumerate(rows):
                if r[8] == -1:
                    k = bisect.bisect_right(begins, r[0]) - 1
                    if k >= 0 and r[0] <= windows[k][1]:
                        rows[i] = (*r[:8], windows[k][2], r[9])
        cols = list(zip(*rows)) if rows else [[] for _ in SAMPLE_SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, SAMPLE_SCHEMA)], schema=SAMPLE_SCHEMA)

    def steps(self) -> pa.Table:
        rows = [r for r in self._steps if r[2] is not None]
        cols = list(zip(*rows)) if rows else [[] for _ in STEP_SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, STEP_SCHEMA)], schema=STEP_SCHEMA)

    def windows(self) -> list[dict]:
        return list(self._window_log)

    def totals(self) -> list[dict]:
        """Last cumulative value per device/domain/method: what the stage used."""
        last: dict[tuple, dict] = {}
        for _t, _ts, device, domain, e, _p, _u, method, _s, attr in self._rows:
            key = (device, domain)
            last[key] = {"device": device, "domain": domain, "method": method, "energy_j": e, "attributed_energy_j": attr}
        return [last[k] for k in sorted(last)]

    def metadata(self, **extra) -> dict:
        """What the runner stores in the samples Parquet's `ecoeval` metadata."""
        return {
            **extra,
            "wall_s": self.wall_s,
            "assumptions": self.assumptions,
            "steps": self.steps().to_pylist(),
            "windows": self.windows(),
        }
