"""The one-node SLURM cluster fixture (tests/cluster/slurm_up.sh), for any test that submits jobs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SLURM_UP = Path(__file__).resolve().parent / "slurm_up.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    """Bring the test cluster up (installing SLURM as root if needed); yield `sinfo`'s line.
    A cluster this fixture started is stopped (and its slurm.conf removed) at the end."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it needs root")
    proc = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{SLURM_UP} failed:\n{proc.stdout}\n{proc.stderr}"
    started_here = "cluster already up" not in proc.stderr
    yield proc.stderr.strip().splitlines()[-1]
    if started_here:
        subprocess.run(["bash", str(SLURM_UP), "--stop"], capture_output=True, text=True, timeout=120)
