"""Never lose results: a failed run puts back the results that Snakemake removed.

Snakemake deletes a job's old outputs before it reruns the job, and deletes whatever the job
wrote when it fails. A rerun that fails (a bad config, a killed or preempted job, a full
disk) would therefore destroy results the user already had. The Snakefile's handlers call:

- `on_start` (`onstart:`, after the DAG is built, before any job runs): hard-links every
  finished result under ``results_dir`` into ``results_dir/.ecoeval-snapshot/`` together with
  a copy of Snakemake's metadata record of each result, then writes a manifest. Hard links
  cost no space and no copying: ecoeval writes every output to a temporary name and renames
  it into place (`ecoeval.io`), so a new result is a new inode and the old one lives on in
  the snapshot untouched. Where hard links are impossible the file is copied.
- `on_error` (`onerror:`): every result in the manifest that is now missing, or is marked
  incomplete by Snakemake, is moved back into place with its old metadata record, so that
  Snakemake sees it exactly as before the run (a changed config still reruns it next time).
  Results that the run did produce successfully are kept. Then the snapshot is removed.
- `on_success` (`onsuccess:`): removes the snapshot.

If Snakemake itself is killed (SIGKILL, a node failure), no handler runs: the next run's
`on_start` first restores from the stale snapshot, then takes a new one.

A result is a file, or a folder that is a Snakemake ``directory()`` output (it has a metadata
record or a ``.snakemake_timestamp``). Logs, benchmarks and the ``work/`` scratch folders are
not results: a failed job's log is the one to read, and checkpoints are written atomically.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
from pathlib import Path

from ecoeval import EcoevalError

SNAPSHOT = ".ecoeval-snapshot"
MANIFEST = "manifest.json"
NOT_RESULTS = frozenset({"logs", "benchmarks", "work", SNAPSHOT, ".snakemake"})

log = logging.getLogger("ecoeval.safety")


_TEMP = re.compile(r"^\..+\.(tmp(\.\w+)?|old)$")


def _is_temp(name: str) -> bool:
    """Temporary names of `ecoeval.io` (``.name.XXXX.tmp``) and its ``.name.old`` folders."""
    return _TEMP.match(name) is not None


def _decode_record_name(rel: str) -> str | None:
    """The key (output path) a Snakemake metadata record file stands for, from its path."""
    parts = rel.split(os.sep)
    b64 = "".join(p[1:] if p.startswith("@") else p for p in parts)
    try:
        return base64.urlsafe_b64decode(b64.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _records(folder: Path) -> dict[str, str]:
    """Absolute output path -> record path relative to `folder`, for every record in it."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for root, _, files in os.walk(folder):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), folder)
            key = _decode_record_name(rel)
            if key is not None:
                out[os.path.normpath(os.path.abspath(key))] = rel
    return out


def _results(results_dir: Path, dir_outputs: set[str]) -> list[tuple[str, str]]:
    """(relative path, "file" | "dir") of every result under `results_dir`."""
    units: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(results_dir):
        rootp = Path(root)
        keep = []
        for d in sorted(dirs):
            path = rootp / d
            if d in NOT_RESULTS or _is_temp(d) or path.is_symlink():
                continue
            if str(path.resolve()) in dir_outputs or (path / ".snakemake_timestamp").exists():
                units.append((str(path.relative_to(results_dir)), "dir"))
            else:
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if not _is_temp(f):
                units.append((str((rootp / f).relative_to(results_dir)), "file"))
    return units


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link `src` (a file or a folder) to `dst`; copy where linking is impossible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy, symlinks=True)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Snapshot:
    """The snapshot of one results folder, and the Snakemake metadata folder that goes with it."""

    def __init__(self, results_dir: str | Path, persistence_dir: str | Path = ".snakemake"):
        self.results = Path(results_dir).absolute()
        self.root = self.results / SNAPSHOT
        self.meta = Path(persistence_dir).absolute() / "metadata"
        self.incomplete = Path(persistence_dir).absolute() / "incomplete"

    # -- taking one -----------------------------------------------------------------------
    def take(self) -> int:
        """Snapshot every finished result; return how many. Raises EcoevalError if unwritable."""
        if self.root.exists():
            self.discard()
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            (self.root / "files").mkdir(parents=True)
        except OSError as exc:
            raise EcoevalError(
                f"config key results_dir: folder {self.results} is not writable ({exc.strerror or exc})"
            ) from None
        records = _records(self.meta)
        incomplete = _records(self.incomplete)
        dir_outputs = {p for p in records if os.path.isdir(p)}
        manifest = []
        for rel, kind in _results(self.results, dir_outputs):
            abspath = os.path.normpath(str(self.results / rel))
            if abspath in incomplete:
                continue  # a half-done result from a killed job is nothing to keep
            _link_tree(self.results / rel, self.root / "files" / rel)
            record = records.get(abspath)
            if record is not None:
                dst = self.root / "metadata" / record
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.meta / record, dst)
            manifest.append({"path": rel, "kind": kind, "record": record})
        # the manifest comes last: a snapshot without one was interrupted and is not used
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp, self.root / MANIFEST)
        return len(manifest)

    # -- using one ------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Put back every snapshotted result that is missing or marked incomplete; return them."""
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            return []
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        incomplete = _records(self.incomplete)
        restored = []
        for unit in manifest:
            rel, record = unit["path"], unit["record"]
            target = self.results / rel
            abspath = os.path.normpath(str(target))
            if target.exists() and abspath not in incomplete:
                continue  # untouched, or rewritten by a job that succeeded: keep it
            src = self.root / "files" / rel
            if not src.exists():
                continue
            if target.exists() or target.is_symlink():
                _remove(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
            if record is not None:
                (self.meta / record).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.root / "metadata" / record, self.meta / record)
            if abspath in incomplete:
                (self.incomplete / incomplete[abspath]).unlink(missing_ok=True)
            restored.append(rel)
        return restored

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- the Snakefile's handlers ---------------------------------------------------------------
def sweep_temp(results_dir: str | Path) -> list[Path]:
    """Remove the temporary names (``.name.XXXX.tmp``, ``.name.old``) that killed jobs left.

    Called at the start of a run, when Snakemake holds the working directory's lock, so no
    job of this workflow is writing. Returns what was removed.
    """
    removed = []
    for root, dirs, files in os.walk(results_dir):
        if SNAPSHOT in dirs:
            dirs.remove(SNAPSHOT)
        for name in [d for d in dirs if _is_temp(d)] + [f for f in files if _is_temp(f)]:
            path = Path(root) / name
            _remove(path)
            removed.append(path)
        dirs[:] = [d for d in dirs if not _is_temp(d)]
    return removed


def on_start(results_dir: str | Path, persistence_dir: str | Path) -> int:
    snap = Snapshot(results_dir, persistence_dir)
    restored = snap.restore()  # a run before this one was killed before its onerror ran
    if restored:
        log.warning("restored %d results that a killed earlier run had removed: %s", len(restored), ", ".join(restored))
    sweep_temp(snap.results)
    return snap.take()


def on_error(results_dir: str | Path, persistence_dir: str | Path) -> list[str]:
    snap = Snapshot(results_dir, persistence_dir)
    restored = snap.restore()
    snap.discard()
    return restored


def on_success(results_dir: str | Path, persistence_dir: str | Path) -> None:
    Snapshot(results_dir, persistence_dir).discard()


def failed_job_errors(results_dir: str | Path, since: float) -> list[str]:
    """The `ecoeval: error:` lines of the stage logs written at or after `since` (epoch s)."""
    lines = []
    for logfile in sorted(Path(results_dir).glob("**/logs/*.log")):
        try:
            if logfile.stat().st_mtime < since:
                continue
            text = logfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        lines += [l for l in text.splitlines() if l.startswith("ecoeval: error:")]
    return lines
