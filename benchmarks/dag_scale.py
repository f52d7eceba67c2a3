"""How planning time grows with the number of experiments: `snakemake -n` on grids of 10, 100, 1000.

    python benchmarks/dag_scale.py                 # 10, 100, 1000 experiments
    python benchmarks/dag_scale.py --sizes 10 100  # other grid sizes
    python benchmarks/dag_scale.py --profile 1000  # also cProfile one size: where the time goes

Each grid is the embedded default config with N experiments that differ in seed and one
model size (a realistic sweep). The run is a dry run in an empty scratch folder, so every job
of every experiment is planned. Prints seconds per size, seconds per experiment, and the
growth factor between sizes against the factor in experiments (linear growth = same factor).
Target: 1000 experiments plan in under 30 s on the 2-core development machine.

Baseline in the same run (`--floor`, on by default): Snakemake alone on a minimal workflow of
the same shape -- 7 rules per experiment in a chain, each with one input and one output and the
directives every ecoeval rule must have (log, benchmark, conda, threads, resources, two params
functions) -- so the table shows how much of the time is ecoeval's and how much Snakemake's
own per-job cost. A second baseline, `bare`, is the same chain with nothing but one input, one
output and a shell command per rule: the least Snakemake itself needs to plan that many jobs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_S = {1000: 30.0}


def grid_config(n: int) -> dict:
    base = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    base["experiments"] = {
        f"e{i:04d}": {"seed": i, "pretrain": {"hidden_size": (32, 64, 128)[i % 3]}} for i in range(n)
    }
    return base


FLOOR_STAGES = ("download", "tokenize", "pretrain", "finetune", "fairness", "energy", "carbon")


def floor_snakefile(bare: bool = False) -> str:
    """The minimal workflow with ecoeval's shape and mandatory directives (see the docstring);
    `bare`: the same chain without the directives."""
    lines = [
        "import json",
        "EXPS = list(config['experiments'])",
        "wildcard_constraints:",
        "    experiment=r'[A-Za-z0-9][A-Za-z0-9_.-]*',",
        "def cfg(wildcards):",
        "    return json.dumps(config['experiments'][wildcards.experiment], sort_keys=True)",
        "def io(wildcards, input, output, threads):",
        "    return json.dumps({'input': dict(input.items()), 'output': dict(output.items()), 'threads': threads})",
        "rule all:",
        f"    input: expand('results/{{e}}/{FLOOR_STAGES[-1]}.out', e=EXPS)",
    ]
    prev = None
    for stage in FLOOR_STAGES:
        lines += [f"rule {stage}:"]
        if prev:
            lines += [f"    input: 'results/{{experiment}}/{prev}.out'"]
        lines += [f"    output: 'results/{{experiment}}/{stage}.out'"]
        if bare:
            lines += ["    shell: 'touch {output}'"]
        else:
            lines += [
                f"    log: 'results/{{experiment}}/logs/{stage}.log'",
                f"    benchmark: 'results/{{experiment}}/benchmarks/{stage}.tsv'",
                f"    conda: '{REPO / 'environment.yml'}'",
                "    threads: 1",
                "    resources: mem_mb=4000, runtime=60",
                "    params: cfg=cfg, io=io",
                "    shell: 'touch {output} --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1'",
            ]
        prev = stage
    return "\n".join(lines) + "\n"


def command(workdir: Path, configfile: Path, snakefile: Path = REPO / "Snakefile") -> list[str]:
    return ["--snakefile", str(snakefile), "--directory", str(workdir), "--configfile", str(configfile),
            "--cores", "1", "-n", "--quiet", "all"]


def plan(n: int, profile_top: int = 0, floor: str = "") -> tuple[float, int]:
    """Seconds for `snakemake -n` on an n-experiment grid, and the number of planned jobs
    (`floor`: "floor" or "bare", a minimal same-shape workflow instead of ecoeval's)."""
    with tempfile.TemporaryDirectory(prefix=f"dag{n}-") as tmp:
        work = Path(tmp)
        cfg = work / "grid.yaml"
        cfg.write_text(yaml.safe_dump(grid_config(n)), encoding="utf-8")
        snakefile = REPO / "Snakefile"
        if floor:
            snakefile = work / "Snakefile.floor"
            snakefile.write_text(floor_snakefile(bare=floor == "bare"), encoding="utf-8")
        args = command(work, cfg, snakefile)
        if profile_top:
            return _profiled(args, profile_top)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"snakemake -n failed for {n} experiments:\n{proc.stderr[-3000:]}")
        return elapsed, _jobs(proc.stdout + proc.stderr)


def _jobs(text: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return -1


def _profiled(args: list[str], top: int) -> tuple[float, int]:
    """Run snakemake in this process under cProfile; print the slowest functions."""
    from snakemake.cli import main

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        main(args)
    except SystemExit:
        pass
    prof.disable()
    elapsed = time.perf_counter() - t0
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
    stats.print_stats(top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(r"common\.smk|ecoeval", top)
    print("--- rules/common.smk and ecoeval only ---\n" + out.getvalue())
    return elapsed, -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile the dry run of an N-experiment grid")
    ap.add_argument("--top", type=int, default=25, help="functions to list with --profile")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the minimal-workflow baselines")
    args = ap.parse_args(argv)

    rows, ok = [], True
    print(f"{'experiments':>11} {'jobs':>6} {'seconds':>8} {'ms/exp':>7} {'growth':>7} {'x exps':>7}"
          + (f" {'bare s':>7} {'floor s':>8} {'x floor':>7}" if args.floor else ""))
    for n in args.sizes:
        seconds, jobs = plan(n)
        floor = ""
        if args.floor:
            bare_s, _ = plan(n, floor="bare")
            floor_s, _ = plan(n, floor="floor")
            floor = f" {bare_s:>7.2f} {floor_s:>8.2f} {seconds / floor_s:>6.2f}x"
        growth = exp_factor = ""
        if rows:
            growth = f"{seconds / rows[-1][1]:.1f}x"
            exp_factor = f"{n / rows[-1][0]:.0f}x"
        rows.append((n, seconds))
        target = TARGET_S.get(n)
        verdict = "" if target is None else (" ok" if seconds < target else f" SLOW (target < {target:.0f} s)")
        ok &= seconds < target if target else True
        print(f"{n:>11} {jobs:>6} {seconds:>8.2f} {1000 * seconds / n:>7.1f} {growth:>7} {exp_factor:>7}{floor}{verdict}")
    if len(rows) >= 2:
        (n0, t0), (n1, t1) = rows[0], rows[-1]
        # fixed start-up cost and per-experiment cost from the smallest and largest grid
        per_exp = (t1 - t0) / (n1 - n0)
        print(f"fit: {t0 - per_exp * n0:.2f} s start-up + {1000 * per_exp:.1f} ms per experiment")
    if args.profile:
        plan(args.profile, profile_top=args.top)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
