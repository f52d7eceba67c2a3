"""The one place that writes files: atomic Parquet, JSON, text and folders, plus checksums.

Every writer writes to a temporary name next to the target and renames it into place, so a
killed process never leaves a partial file or folder that a later run would accept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ecoeval import EcoevalError


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success fsync and rename it onto `path`, else remove it."""
    path = Path(path)
    try:
        tmp = _tmp_sibling(path)
    except OSError as exc:
        raise EcoevalError(f"output folder {path.parent}: not writable ({exc.strerror})") from None
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success rename it onto `path` (replacing an old one)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise EcoevalError(f"output folder {path.parent}: not writable ({exc.strerror})") from None
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(table: "pa.Table | object", path: str | Path, metadata: dict | None = None) -> Path:
    """Write a pyarrow Table or pandas DataFrame to Parquet atomically and reproducibly.

    `metadata` (JSON-serialisable) is stored under the schema key ``ecoeval``; read it back
    with `read_metadata`. Pandas' own metadata is dropped.
    """
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    meta = {b"ecoeval": json.dumps(metadata, sort_keys=True, default=str).encode()} if metadata else None
    table = table.replace_schema_metadata(meta)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    return Path(path)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise EcoevalError(f"input file {path}: not found")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EcoevalError(f"input file {path}: not a readable Parquet file ({exc})") from None
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise EcoevalError(f"input file {path}: missing columns {missing}")
    return table


def read_metadata(path: str | Path) -> dict:
    """The ``ecoeval`` metadata stored by `write_parquet`, or {}."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[b"ecoeval"]) if b"ecoeval" in meta else {}


def write_json(obj: object, path: str | Path) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
