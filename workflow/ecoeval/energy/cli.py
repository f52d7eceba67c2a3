"""`ecoeval energy run [--hz N] [--out FILE.parquet] [--json] -- COMMAND ARGS...`: measure a
command's energy like `perf stat` measures its cycles; exits with the command's exit code."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

USAGE = "ecoeval energy run [--hz N] [--out FILE.parquet] [--json] -- COMMAND ARGS..."


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("energy", help="measure energy (see docs/energy.md)")
    sub = p.add_subparsers(dest="energy_command", required=True)
    r = sub.add_parser("run", help="run a command and measure its energy", usage=USAGE, description=__doc__)
    r.add_argument("--hz", type=float, default=10.0, help="sampling rate (default 10)")
    r.add_argument("--out", help="write the samples to this Parquet file")
    r.add_argument("--json", action="store_true", help="stdout: one JSON object (the command's stdout goes to stderr)")
    r.add_argument("--cpu-tdp-w", type=float, default=None, help="CPU TDP in W instead of CodeCarbon's table")
    r.add_argument("--ram-w-per-gb", type=float, default=0.375)
    r.add_argument("--gpu-index", type=int, default=None)
    r.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    r.set_defaults(func=run_command)


def _wait(child) -> tuple[int, float]:
    """Wait for `child`; (exit code as a shell reports it, CPU seconds of it and its reaped descendants)."""
    while True:
        try:
            _pid, status, ru = os.wait4(child.pid, 0)
            break
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    return (128 - code if code < 0 else code), ru.ru_utime + ru.ru_stime


def _table(wall_s: float, rows: list[dict], assumptions: dict) -> str:
    lines = [f"ecoeval energy: {wall_s:.2f} s wall", f"{'device':<10} {'domain':<10} {'method':<9} {'energy_j':>12} {'ours_j':>12} {'mean_w':>9}"]
    for r in rows:
        ours = r["attributed_energy_j"]
        mean = r["mean_power_w"]
        lines.append(
            f"{r['device']:<10} {r['domain']:<10} {r['method']:<9} {r['energy_j']:>12.2f} "
            f"{'-' if ours is None else f'{ours:12.2f}':>12} {'-' if mean is None else f'{mean:9.2f}':>9}"
        )
    for key in ("cpu_tdp_w", "cpu_tdp_source", "ram_w_per_gb"):
        if key in assumptions:
            lines.append(f"  assumption {key}: {assumptions[key]}")
    lines.append("  energy_j: whole device; ours_j: share of the measured command's process tree")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    import subprocess

    from ecoeval import EcoevalError
    from ecoeval.energy.monitor import EnergyMonitor
    from ecoeval.energy.summary import integrate
    from ecoeval.io import write_parquet

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise EcoevalError(f"energy run: expected a command after --  (usage: {USAGE})")
    monitor = EnergyMonitor(args.hz, args.cpu_tdp_w, args.ram_w_per_gb, args.gpu_index, node_group=None).prepare()
    try:
        child = subprocess.Popen(cmd, stdout=sys.stderr.fileno() if args.json else None)
    except OSError as exc:
        print(f"ecoeval energy run: {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    monitor.pid = child.pid
    monitor.start()
    try:
        code, cpu_s = _wait(child)
        monitor.note_exit_cpu(cpu_s)
    finally:
        monitor.stop()
    samples = monitor.samples()
    rows = integrate(samples)
    if args.out:
        write_parquet(samples, args.out, metadata=monitor.metadata(command=cmd, exit_code=code, stage="energy-run"))
    print(_table(monitor.wall_s, rows, monitor.assumptions), file=sys.stderr)
    if args.json:
        devices = [{k: r[k] for k in ("device", "domain", "method", "energy_j", "attributed_energy_j")} for r in rows]
        sys.stdout.write(json.dumps({"wall_s": monitor.wall_s, "devices": devices}) + "\n")
        sys.stdout.flush()
    return code
