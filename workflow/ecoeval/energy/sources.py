"""Where joules come from: RAPL counters, NVML counters or power, and labelled estimates.

Each source turns one `Tick` (what the process tree and the machine did since the last
read) into `Reading`s: cumulative energy since the monitor started, for the whole device
(`energy_j`) and for the share attributed to our process tree (`attributed_j`).
A source that cannot read what it needs raises `Unavailable` with a one-line message that
names the file or call and the fix; the monitor logs it once and uses the next method.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger("ecoeval.energy")

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
# CodeCarbon's fallback when a CPU model is not in its table (codecarbon.core.cpu.DEFAULT_POWER_PER_CORE,
# applied per logical CPU); repeated here so that the monitor does not import codecarbon (slow).
CODECARBON_DEFAULT_W_PER_THREAD = 4.0


class Unavailable(Exception):
    """A source cannot measure; the message names the file or call and the fix."""


@dataclass
class Tick:
    """What happened since the previous read; computed once per read by the monitor."""

    t: float  # seconds since the monitor started
    dt: float  # seconds since the previous read (0 on the first)
    n_cpu: int
    sys_util: float  # busy fraction of all logical CPUs of the machine
    tree_util: float  # fraction of all logical CPUs used by our process tree
    cpu_share: float  # our tree's CPU time / the machine's busy CPU time, in [0, 1]
    mem_share: float  # our tree's resident memory / the machine's used memory
    tree_rss_gb: float
    mem_total_gb: float
    mem_util: float
    d_tree_cpu_s: float = 0.0  # CPU seconds our tree used since the previous read
    d_sys_cpu_s: float = 0.0  # busy CPU seconds of the whole machine since the previous read
    pids: frozenset = frozenset()
    first: bool = False  # the monitor's first read: sources take their baseline now


@dataclass
class Reading:
    device: str
    domain: str
    method: str
    energy_j: float  # cumulative since start, whole device
    power_w: float | None
    utilization: float | None
    attributed_j: float  # cumulative since start, our process tree's share


# -- process tree ----------------------------------------------------------------------


class ProcessTree:
    """CPU time and memory of a process, its descendants and registered extra pids.

    The list of processes is refreshed every `refresh_s` (listing children reads all of
    /proc); processes that exit keep the CPU time last seen, so the total never goes back.
    """

    def __init__(self, root_pid: int, extra_pids=lambda: (), refresh_s: float = 1.0) -> None:
        self.root_pid = root_pid
        self._extra = extra_pids
        self._refresh_s = refresh_s
        self._next_refresh = 0.0
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._last_cpu: dict[tuple[int, float], float] = {}
        self._dead_cpu = 0.0
        self._floor = 0.0

    def _refresh(self) -> None:
        found: dict[tuple[int, float], psutil.Process] = {}
        for pid in {self.root_pid, *self._extra()}:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    found[(p.pid, p.create_time())] = p
                except psutil.Error:
                    continue
        for key in list(self._procs):
            if key not in found:
                self._procs.pop(key)  # its last CPU time stays in _last_cpu (moved on next read)
        self._procs.update(found)
        self._next_refresh = time.monotonic() + self._refresh_s

    def set_floor(self, cpu_s: float) -> None:
        """Exact CPU time known from elsewhere (for example wait4 on an exited child)."""
        self._floor = max(self._floor, cpu_s)

    def read(self) -> tuple[float, float, frozenset]:
        """(cpu seconds, resident bytes, pids) of the tree now."""
        if time.monotonic() >= self._next_refresh:
            self._refresh()
        cpu_live, rss = 0.0, 0
        for key, p in list(self._procs.items()):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    rss += p.memory_info().rss
                self._last_cpu[key] = t.user + t.system
                cpu_live += t.user + t.system
            except psutil.Error:
                self._procs.pop(key, None)
        for key in [k for k in self._last_cpu if k not in self._procs]:
            self._dead_cpu += self._last_cpu.pop(key)
        total = max(cpu_live + self._dead_cpu, self._floor)
        return total, float(rss), frozenset(k[0] for k in self._procs)


def system_busy_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- CPU TDP ------------------------------------------------------------------------


def cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or None


def cpu_sockets() -> int:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 1
    ids = set(re.findall(r"^physical id\s*:\s*(\d+)", text, flags=re.M))
    return max(len(ids), 1)


def codecarbon_cpu_table() -> tuple[Path, dict[str, float]]:
    """CodeCarbon's shipped CPU table (Name -> TDP W), found without importing codecarbon."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution("codecarbon").locate_file("codecarbon/data/hardware/cpu_power.csv"))
    except PackageNotFoundError:
        raise Unavailable("codecarbon is not installed: no CPU TDP table (pip install codecarbon==3.3.2)") from None
    table: dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    table[row["Name"]] = float(row["TDP"])
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError as exc:
        raise Unavailable(f"{path}: CodeCarbon's CPU table is unreadable ({exc.strerror})") from None
    return path, table


def match_cpu_model(model_raw: str, names) -> str | None:
    """CodeCarbon's matching rule (codecarbon.core.cpu.TDP._get_matching_cpu, non-greedy):
    an exact case-insensitive name, then the same after dropping "(R)", " CPU @ ..." and
    clock speeds, then a unique 100% token-set match."""
    from rapidfuzz import fuzz, process, utils

    names = list(names)
    hit = process.extractOne(model_raw, names, processor=lambda s: s.lower(), scorer=fuzz.ratio, score_cutoff=100)
    if hit:
        return hit[0]
    cleaned = model_raw.replace("(R)", "")
    at = cleaned.find(" CPU @ ")
    if at > 0:
        cleaned = cleaned[:at]
    cleaned = re.sub(r" @\s*\d+\.\d+GHz", "", cleaned.replace(" CPU", ""))
    hit = process.extractOne(cleaned, names, processor=lambda s: s.lower(), scorer=fuzz.ratio, score_cutoff=100)
    if hit:
        return hit[0]
    hits = process.extract(cleaned, names, processor=utils.default_process, scorer=fuzz.token_set_ratio, score_cutoff=100, limit=2)
    if len(hits) == 1 or (len(hits) > 1 and hits[0][1] != hits[1][1]):
        return hits[0][0]
    return None


def cpu_tdp(config_tdp_w: float | None, n_cpu: int) -> dict:
    """The CPU power assumption: config value, CodeCarbon table match, or CodeCarbon's default."""
    model = cpu_model_name()
    info: dict = {"cpu_model": model, "logical_cpus": n_cpu}
    if config_tdp_w:
        info.update(cpu_tdp_w=float(config_tdp_w), cpu_tdp_source="config energy.cpu_tdp_w", cpu_tdp_matched_model=None)
        return info
    try:
        path, table = codecarbon_cpu_table()
    except Unavailable as exc:
        log.warning("%s; assuming %.0f W per logical CPU", exc, CODECARBON_DEFAULT_W_PER_THREAD)
        path, table = None, {}
    matched = match_cpu_model(model, table) if (model and table) else None
    if matched is not None:
        sockets = cpu_sockets()
        info.update(
            cpu_tdp_w=table[matched] * sockets,
            cpu_tdp_source=f"CodeCarbon CPU table {path} ({table[matched]:g} W x {sockets} socket(s))",
            cpu_tdp_matched_model=matched,
        )
    else:
        info.update(
            cpu_tdp_w=CODECARBON_DEFAULT_W_PER_THREAD * n_cpu,
            cpu_tdp_source=(
                f"model {model!r} not matched in CodeCarbon's CPU table; CodeCarbon's default "
                f"{CODECARBON_DEFAULT_W_PER_THREAD:g} W per logical CPU x {n_cpu} (set energy.cpu_tdp_w to override)"
            ),
            cpu_tdp_matched_model=None,
        )
    return info


# -- estimates ----------------------------------------------------------------------


class CpuEstimate:
    """CPU power = TDP x utilisation: the machine's for the device, our tree's for the share.

    Energy per read is TDP / logical CPUs x CPU seconds used, so nothing is lost when a
    process's CPU time shows up late (a child that exited between two reads)."""

    method = "estimate"

    def __init__(self, tdp_w: float) -> None:
        self.tdp_w = tdp_w
        self.energy_j = 0.0
        self.attributed_j = 0.0

    def read(self, tick: Tick) -> list[Reading]:
        w_per_cpu_s = self.tdp_w / tick.n_cpu
        self.energy_j += w_per_cpu_s * tick.d_sys_cpu_s
        self.attributed_j += w_per_cpu_s * tick.d_tree_cpu_s
        # our tree is part of the machine: the device total is never below our share
        self.energy_j = max(self.energy_j, self.attributed_j)
        p_dev = w_per_cpu_s * tick.d_sys_cpu_s / tick.dt if tick.dt > 0 else None
        return [Reading("cpu", "package", "estimate", self.energy_j, p_dev, tick.sys_util, self.attributed_j)]


class RamEstimate:
    """Memory power = W/GB x installed GB for the device, x our resident GB for the share."""

    method = "estimate"

    def __init__(self, w_per_gb: float) -> None:
        self.w_per_gb = w_per_gb
        self.energy_j = 0.0
        self.attributed_j = 0.0

    def read(self, tick: Tick) -> list[Reading]:
        p_dev = self.w_per_gb * tick.mem_total_gb
        p_ours = self.w_per_gb * tick.tree_rss_gb
        self.energy_j += p_dev * tick.dt
        self.attributed_j += p_ours * tick.dt
        return [Reading("ram", "dram", "estimate", self.energy_j, p_dev, tick.mem_util, self.attributed_j)]


# -- RAPL through powercap -------------------------------------------------------------

_FIX_PERMISSION = (
    "fix: `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` (root-only since Linux 5.10) or run as root"
)
_FIX_MISSING = "fix: `sudo modprobe intel_rapl_msr` on bare-metal Linux (VMs rarely expose RAPL), or set ECOEVAL_POWERCAP_ROOT"


def _why(exc: Exception) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied; {_FIX_PERMISSION}"
    if isinstance(exc, FileNotFoundError):
        return f"missing; {_FIX_MISSING}"
    if isinstance(exc, ValueError):
        return f"not an integer ({exc}); check the powercap driver"
    return f"unreadable ({getattr(exc, 'strerror', None) or exc}); {_FIX_MISSING}"


@dataclass
class _Zone:
    path: Path
    kind: str  # package, dram, psys
    socket: int
    max_range_uj: int
    last_uj: int = 0
    total_uj: int = 0
    failed: bool = False
    attr_j: float = 0.0  # our share, cumulative J
    prev_j: float = 0.0  # total at the previous read, J

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())

    def advance(self, baseline: bool = False) -> None:
        now = self.read_uj()
        if baseline:
            self.last_uj, self.total_uj = now, 0
            return
        delta = now - self.last_uj
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += self.max_range_uj
        self.total_uj += delta
        self.last_uj = now


@dataclass
class RaplSource:
    """package-N, dram and psys zones of the powercap tree (core/uncore are inside package).

    Rows: `cpu:N/package` and `ram:N/dram` per socket; with a psys zone also
    `platform/psys-rest` = psys - packages - drams, so every row adds up to psys without
    counting anything twice. `covers_cpu` / `covers_ram` say which estimates it replaces.
    """

    root: Path
    warn: object = print
    zones: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.covers_cpu = self.covers_ram = self.psys_only = False
        self._rest_j = self._rest_attr_j = 0.0
        if not self.root.is_dir():
            raise Unavailable(f"no RAPL powercap tree at {self.root} (CPU and memory energy are estimated); {_FIX_MISSING}")
        found: list[_Zone] = []
        names = sorted(p for p in self.root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+(:\d+)*", p.name))
        for zdir in names:
            ids = [int(x) for x in zdir.name.split(":")[1:]]
            try:
                name = (zdir / "name").read_text().strip()
            except OSError as exc:
                self.warn(f"RAPL zone {zdir / 'name'}: {_why(exc)}; zone skipped")
                continue
            if name.startswith("package"):
                kind, socket = "package", int(name.split("-")[1]) if "-" in name else ids[0]
            elif name in ("dram", "psys"):
                kind, socket = name, ids[0]
            else:  # core, uncore: parts of the package, never added to it
                self.ignored.append(f"{zdir.name}={name}")
                continue
            try:
                zone = _Zone(zdir, kind, socket, int((zdir / "max_energy_range_uj").read_text().strip()))
                zone.last_uj = zone.read_uj()
            except (OSError, ValueError) as exc:
                bad = zdir / "energy_uj" if (zdir / "max_energy_range_uj").is_file() else zdir / "max_energy_range_uj"
                what = {"package": "CPU energy is estimated", "dram": "memory energy is estimated"}.get(kind, "not used")
                self.warn(f"RAPL counter {bad}: {_why(exc)}; {what}")
                zone = _Zone(zdir, kind, socket, 0, failed=True)
            found.append(zone)
        packages = [z for z in found if z.kind == "package"]
        drams = [z for z in found if z.kind == "dram"]
        psys = [z for z in found if z.kind == "psys" and not z.failed]
        # a half-readable set of packages would mix counter and estimate for the same CPUs
        self.covers_cpu = bool(packages) and not any(z.failed for z in packages)
        self.covers_ram = self.covers_cpu and bool(drams) and not any(z.failed for z in drams)
        if not self.covers_cpu and psys:
            # psys alone covers the whole platform (CPU and memory included)
            self.zones = psys
            self.covers_cpu = self.covers_ram = True
            self.psys_only = True
            return
        self.zones = (packages if self.covers_cpu else []) + (drams if self.covers_ram else []) + (psys if self.covers_cpu else [])
        if not self.zones:
            if not found:
                raise Unavailable(f"no RAPL package zone under {self.root} (CPU and memory energy are estimated); {_FIX_MISSING}")
            raise Unavailable(f"RAPL zones under {self.root} are unreadable (see above)")

    def zone_names(self) -> list[str]:
        return [f"{z.path.name}={z.kind}" for z in self.zones]

    def read(self, tick: Tick) -> list[Reading]:
        out: list[Reading] = []
        for z in self.zones:
            if z.failed:
                continue
            before = z.total_uj
            try:
                z.advance(baseline=tick.first)
            except (OSError, ValueError) as exc:
                z.failed = True
                self.warn(f"RAPL counter {z.path / 'energy_uj'}: {_why(exc)}; this zone's rows stop here")
                continue
            z.attr_j += (z.total_uj - before) / 1e6 * (
                tick.mem_share if z.kind == "dram" else tick.cpu_share
            )
        ok = [z for z in self.zones if not z.failed]
        power = lambda j, prev: (j - prev) / tick.dt if tick.dt > 0 else None  # noqa: E731
        for z in ok:
            if z.kind == "psys" and not self.psys_only:
                continue
            device = {"package": f"cpu:{z.socket}", "dram": f"ram:{z.socket}", "psys": "platform"}[z.kind]
            j = z.total_uj / 1e6
            prev = z.prev_j
            util = tick.sys_util if z.kind != "dram" else tick.mem_util
            out.append(Reading(device, z.kind, "counter", j, power(j, prev), util, z.attr_j))
            z.prev_j = j
        psys = [z for z in ok if z.kind == "psys"]
        if psys and not self.psys_only:
            rest = sum(z.total_uj for z in psys) / 1e6 - sum(z.total_uj for z in ok if z.kind != "psys") / 1e6
            d = rest - self._rest_j
            self._rest_attr_j += d * tick.cpu_share
            out.append(Reading("platform", "psys-rest", "counter", rest, power(rest, self._rest_j), tick.sys_util, self._rest_attr_j))
            self._rest_j = rest
        return out


# -- NVIDIA GPUs through NVML ------------------------------------------------------------


def _nvml_fix(pynvml, exc) -> str:
    code = getattr(exc, "value", None)
    if code in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
        return "install or load the NVIDIA driver (libnvidia-ml.so.1) if this machine has an NVIDIA GPU"
    if code == pynvml.NVML_ERROR_NO_PERMISSION:
        return "run with access to the GPU (device permissions, container --gpus)"
    if code == pynvml.NVML_ERROR_NOT_SUPPORTED:
        return "this GPU does not offer it"
    return "check `nvidia-smi`"


@dataclass
class _Gpu:
    index: int
    handle: object
    name: str
    method: str  # counter or sampled
    e0_mj: int = 0
    energy_j: float = 0.0
    attributed_j: float = 0.0
    last_power_w: float | None = None
    share: float = 1.0
    share_basis: str = "whole device"
    proc_util_ok: bool = True
    last_seen_us: int = 0
    failed: bool = False


class NvmlSource:
    """NVIDIA GPUs: nvmlDeviceGetTotalEnergyConsumption (counter) where supported, else
    nvmlDeviceGetPowerUsage integrated over time (sampled). Our share: per-process SM
    utilisation (nvmlDeviceGetProcessUtilization), else per-process GPU memory."""

    def __init__(self, gpu_index: int | None, warn=print, info=print) -> None:
        try:
            import pynvml
        except ImportError:
            raise Unavailable("import pynvml failed: no GPU energy; pip install nvidia-ml-py==13.615.71") from None
        self.nv = nv = pynvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            msg = f"nvmlInit(): {exc}; no GPU energy measured; {_nvml_fix(nv, exc)}"
            quiet = gpu_index is None and exc.value in (nv.NVML_ERROR_LIBRARY_NOT_FOUND, nv.NVML_ERROR_DRIVER_NOT_LOADED)
            raise Unavailable(msg, "info" if quiet else "warning") from None
        self.warn = warn
        self.gpus: list[_Gpu] = []
        try:
            count = nv.nvmlDeviceGetCount()
            if gpu_index is not None and gpu_index >= count:
                from ecoeval import EcoevalError

                nv.nvmlShutdown()
                raise EcoevalError(f"energy.gpu_index: expected an index below {count} (GPUs NVML sees), found {gpu_index}")
            for i in [gpu_index] if gpu_index is not None else range(count):
                self._add(i)
        except nv.NVMLError as exc:
            warn(f"nvmlDeviceGetCount/nvmlDeviceGetHandleByIndex: {exc}; no GPU energy measured; {_nvml_fix(nv, exc)}")
        if not self.gpus:
            self.close()
            raise Unavailable("NVML: no GPU to measure", "info")

    def _add(self, i: int) -> None:
        nv = self.nv
        h = nv.nvmlDeviceGetHandleByIndex(i)
        name = nv.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            gpu = _Gpu(i, h, name, "counter", e0_mj=nv.nvmlDeviceGetTotalEnergyConsumption(h))
        except nv.NVMLError as exc:
            try:
                p = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            except nv.NVMLError as exc2:
                self.warn(
                    f"GPU {i} ({name}): nvmlDeviceGetTotalEnergyConsumption: {exc} and nvmlDeviceGetPowerUsage: {exc2}; "
                    f"its energy is not measured; {_nvml_fix(nv, exc2)}"
                )
                return
            self.warn(f"GPU {i} ({name}): nvmlDeviceGetTotalEnergyConsumption: {exc}; integrating nvmlDeviceGetPowerUsage (method sampled)")
            gpu = _Gpu(i, h, name, "sampled", last_power_w=p)
        self.gpus.append(gpu)

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass

    def _share(self, g: _Gpu, pids: frozenset) -> None:
        nv = self.nv
        if g.proc_util_ok:
            try:
                samples = nv.nvmlDeviceGetProcessUtilization(g.handle, g.last_seen_us)
                total = sum(s.smUtil for s in samples)
                if samples:
                    g.last_seen_us = max(s.timeStamp for s in samples)
                if total > 0:
                    g.share = sum(s.smUtil for s in samples if s.pid in pids) / total
                    g.share_basis = "per-process SM utilisation (nvmlDeviceGetProcessUtilization)"
                    return
            except nv.NVMLError as exc:
                # NOT_FOUND: no samples since last_seen (nothing ran): fall through to memory
                if exc.value != nv.NVML_ERROR_NOT_FOUND:
                    g.proc_util_ok = False
        try:
            procs = nv.nvmlDeviceGetComputeRunningProcesses(g.handle)
        except nv.NVMLError:
            g.share, g.share_basis = 1.0, "whole device (NVML gives no per-process data)"
            return
        mem = lambda p: p.usedGpuMemory or 0  # noqa: E731
        total = sum(mem(p) for p in procs)
        g.share = (sum(mem(p) for p in procs if p.pid in pids) / total) if total else 0.0
        g.share_basis = "per-process GPU memory (nvmlDeviceGetComputeRunningProcesses)"

    def read(self, tick: Tick) -> list[Reading]:
        nv = self.nv
        out = []
        for g in self.gpus:
            if g.failed:
                continue
            prev = g.energy_j
            try:
                if tick.first and g.method == "counter":
                    g.e0_mj = nv.nvmlDeviceGetTotalEnergyConsumption(g.handle)
                    power = None
                elif tick.first:
                    g.last_power_w = power = nv.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                elif g.method == "counter":
                    try:
                        g.energy_j = (nv.nvmlDeviceGetTotalEnergyConsumption(g.handle) - g.e0_mj) / 1000.0
                        power = (g.energy_j - prev) / tick.dt if tick.dt > 0 else None
                    except nv.NVMLError as exc:
                        self.warn(f"GPU {g.index}: nvmlDeviceGetTotalEnergyConsumption failed mid-run ({exc}); integrating power from now (method sampled)")
                        g.method = "sampled"
                        g.last_power_w = power = nv.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                        g.energy_j += power * tick.dt  # the interval since the last counter read
                else:
                    power = nv.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                    if g.last_power_w is not None:
                        g.energy_j += 0.5 * (g.last_power_w + power) * tick.dt
                    g.last_power_w = power
            except nv.NVMLError as exc:
                g.failed = True
                self.warn(f"GPU {g.index}: nvmlDeviceGetPowerUsage failed ({exc}); its rows stop here; {_nvml_fix(nv, exc)}")
                continue
            try:
                util = nv.nvmlDeviceGetUtilizationRates(g.handle).gpu / 100.0
            except nv.NVMLError:
                util = None
            self._share(g, tick.pids)
            g.attributed_j += (g.energy_j - prev) * g.share
            out.append(Reading(f"gpu:{g.index}", "gpu", g.method, g.energy_j, power, util, g.attributed_j))
        return out

    def describe(self) -> list[dict]:
        return [{"index": g.index, "name": g.name, "method": g.method, "attribution": g.share_basis} for g in self.gpus]


def powercap_root() -> Path:
    return Path(os.environ.get("ECOEVAL_POWERCAP_ROOT", DEFAULT_POWERCAP_ROOT))
