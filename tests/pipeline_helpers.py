"""Running the real pipeline through Snakemake from tests (shared by the end-to-end tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, configfile: Path = TINY, check: bool = True) -> subprocess.CompletedProcess:
    """`snakemake` on the project's Snakefile in `workdir`; on failure the error names the stage logs."""
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", "2",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("results/**/logs/*.log"))
        )
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{logs}")
    return proc


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a pipeline run folder (results and Snakemake's metadata, times kept)."""
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst
