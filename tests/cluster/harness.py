"""Running the real workflow in a scratch folder, for the cluster, fault and bad-input tests.

Import it as `from cluster.harness import ...` (tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "tests" / "configs"
PROFILES = REPO / "workflow" / "profiles"

# options for the test cluster: no accounting database and no accounts; polled often
SLURM_ARGS = (
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-no-account",
)

# folders under results/ that describe the latest attempt rather than hold results
ATTEMPT_DIRS = {"logs", "benchmarks", ".ecoeval-snapshot"}


def load_config(name: str) -> dict:
    """A test config from tests/configs/<name>.yaml, as a dict to modify."""
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def snakemake_cmd(workdir: Path, *args: str, config: dict | Path, profile: str | None = None) -> list[str]:
    """The command line; a dict config is written to workdir/config.yaml first."""
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        config = path
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config)]
    if profile:
        cmd += ["--profile", str(PROFILES / profile)]
    else:
        cmd += ["--cores", "2"]
    return cmd + list(args)


def snakemake(workdir: Path, *args: str, config: dict | Path, profile: str | None = None,
              check: bool = True, timeout: float = 900, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, config=config, profile=profile)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(**(extra_env or {})), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{explain(proc, workdir)}")
    return proc


def explain(proc: subprocess.CompletedProcess, workdir: Path) -> str:
    """Snakemake's stderr tail and the stage logs, for assertion messages."""
    logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(workdir.glob("**/logs/*.log")))
    return f"{proc.stderr[-5000:]}\n{logs}"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ecoeval: error:")]


def digest(results: Path) -> dict[str, str]:
    """sha256 of every result file under `results` (logs and benchmarks left out)."""
    out = {}
    if not results.exists():
        return out
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if path.is_file() and not ATTEMPT_DIRS & set(rel.parts):
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
