"""Shared test fixtures: repository paths, the real-data folder, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# keep test runs light on the 2-core machine and fully offline
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the project in the dev setup)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """One real run of the whole pipeline on tests/configs/tiny.yaml, shared by the
    end-to-end tests. Tests must not change it; copy it (copy_run) to change things."""
    from pipeline_helpers import snakemake

    work = tmp_path_factory.mktemp("tiny_pipeline")
    snakemake(work)
    return work

