"""What pretraining and finetuning share: seeding, devices, DDP, the training loop, checkpoints.

One copy of each, read top to bottom:

- `setup_run` seeds Python, NumPy and torch, sets the thread count, picks the device and,
  inside a `torchrun` worker, joins the process group (gloo on CPU, nccl on GPU).
- `launch_ddp` re-runs a stage under `python -m torch.distributed.run` when the config asks
  for more than one process (`gpus` > 1 or `nproc` > 1); only rank 0 writes outputs.
- `train` is the loop: AdamW (fused where the build has it) with linear warmup and linear
  decay, gradient accumulation, optional clipping, bf16 autocast, a progress line on stderr
  every `log_every` steps, no host syncs between log steps, `monitor.step_begin/step_end`
  around every optimizer step, and a resumable checkpoint every `checkpoint_every` steps.
- `Checkpointer` writes `work_dir/checkpoint/` atomically (`ecoeval.io.atomic_dir`): the
  model as safetensors, the optimizer, scheduler, RNG states (Python, NumPy, torch, data
  generator, per rank), the data position and the log so far as a tensors-only `state.pt`
  that is read back with `torch.load(..., weights_only=True)`, and `meta.json` with a hash
  of the parameters that shaped the run. A checkpoint whose hash differs is ignored (logged).
- `load_pretrained` opens a local `save_pretrained` folder as safetensors only, never with
  remote code; a pickle (`pytorch_model.bin`) is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ecoeval import EcoevalError
from ecoeval.io import atomic_dir, sha256_file, write_json

log = logging.getLogger("ecoeval.training")

# Waiting OpenMP threads sleep instead of spinning. On a shared or oversubscribed machine
# spinning threads made training several times slower (docs/training.md, "Threads"); libgomp
# reads this once when torch loads it, so it is set here, before any stage imports torch.
# An OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHECKPOINT_FORMAT = 1
# set in the environment of the processes that launch_ddp starts
WORKER_ENV = "ECOEVAL_DDP_WORKER"


# -- run setup -------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process runs: device, rank and world size (1 outside torchrun)."""

    device: "object"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size_wanted(section: dict, key: str) -> int:
    """Processes the config asks for: `gpus` when > 0, else `nproc` (CPU processes)."""
    gpus, nproc = int(section.get("gpus", 0)), int(section.get("nproc", 1))
    if gpus > 0 and nproc > 1:
        raise EcoevalError(f"config key {key}.nproc: must be 1 when {key}.gpus is set, got {nproc}")
    return gpus if gpus > 0 else nproc


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_run(params: dict, section: str) -> Dist:
    """Seed, set threads, choose the device, and join the process group inside torchrun."""
    import torch

    cfg = params[section]
    world = world_size_wanted(cfg, section)
    in_worker = os.environ.get(WORKER_ENV) == "1"
    rank = int(os.environ.get("RANK", 0)) if in_worker else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if in_worker else 0
    threads = max(1, int(params.get("threads", 1)) // (world if in_worker else 1))
    torch.set_num_threads(threads)
    if int(cfg.get("gpus", 0)) > 0:
        if not torch.cuda.is_available() or torch.cuda.device_count() < int(cfg["gpus"]):
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise EcoevalError(f"config key {section}.gpus: {cfg['gpus']} GPUs requested, {have} available")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist = Dist(device=device, rank=rank, world_size=world if in_worker else 1, local_rank=local_rank)
    if dist.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    # every rank starts from the same weights; data and masking streams differ per rank
    seed_everything(int(params["seed"]))
    return dist


def teardown(dist: Dist) -> None:
    import torch

    if dist.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(dist: Dist) -> None:
    import torch

    if dist.distributed:
        torch.distributed.barrier()


def launch_ddp(stage: str, params: dict, inputs: dict, outputs: dict, nproc: int, monitor) -> None:
    """Run `stage` in `nproc` processes with torchrun; rank 0 writes the outputs.

    Arguments travel as a JSON file in work_dir, never through a shell. Rank 0 writes its
    step windows to work_dir/steps.json; they are handed to `monitor` afterwards.
    """
    work = Path(params["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    args_file = work / "ddp_args.json"
    write_json({"stage": stage, "params": params, "inputs": {k: str(v) for k, v in inputs.items()},
                "outputs": {k: str(v) for k, v in outputs.items()}}, args_file)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc_per_node={nproc}", "-m", "ecoeval.training", str(args_file)]
    env = {**os.environ, WORKER_ENV: "1", "OMP_NUM_THREADS": str(max(1, int(params.get("threads", 1)) // nproc))}
    log.info("%s: launching %d processes with torchrun", stage, nproc)
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise EcoevalError(f"{stage}: torchrun with {nproc} processes failed (exit {proc.returncode}); see the log above")
    steps_file = work / "steps.json"
    if monitor is not None and steps_file.is_file():
        _replay_steps(monitor, json.loads(steps_file.read_text()))


def _replay_steps(monitor, steps: list) -> None:
    """Hand rank 0's step windows (absolute perf_counter times) to the parent's monitor."""
    add = getattr(monitor, "add_step", None)
    if add is None:
        log.info("energy monitor has no add_step(); step windows of the DDP run are not recorded")
        return
    for step, t0, t1, tokens in steps:
        add(step, t0, t1, tokens)


def _worker_main(args_file: str) -> None:
    import importlib

    spec = json.loads(Path(args_file).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(name)s %(levelname)s %(message)s")
    module = importlib.import_module(f"ecoeval.{spec['stage']}")
    try:
        module.run(spec["params"], {k: Path(v) for k, v in spec["inputs"].items()},
                   {k: Path(v) for k, v in spec["outputs"].items()}, None)
    except EcoevalError as exc:
        print(f"ecoeval: error: {exc}", file=sys.stderr)
        sys.exit(2)


# -- data order ------------------------------------------------------------------------------


class Sampler:
    """An endless stream of shuffled example indices, one permutation per epoch.

    Epoch `e` is `randperm(n)` from a generator seeded with (seed, e), so the position
    (epoch, pos) is all a checkpoint needs. Each optimizer micro-step takes a global batch of
    batch_size x world_size indices; rank r keeps its slice.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise EcoevalError("training data: no examples")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = None

    def _permutation(self):
        import torch

        if self._perm is None or self._perm[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = (self.epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def next(self):
        import torch

        need, parts = self.batch_size * self.world_size, []
        while need:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
            take = min(need, self.n - self.pos)
            parts.append(self._permutation()[self.pos:self.pos + take])
            self.pos += take
            need -= take
        idx = parts[0] if len(parts) == 1 else torch.cat(parts)
        return idx[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


# -- optimizer and schedule ------------------------------------------------------------------


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW without decay on biases and LayerNorm weights (as BERT and HF Trainer do)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is one call for all parameters; CPU builds have it since torch 2.4
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


def make_scheduler(optimizer, warmup_steps: int, max_steps: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)


# -- safe loading ----------------------------------------------------------------------------


def safe_torch_load(path: Path) -> dict:
    """torch.load with weights_only=True; anything else (a pickle with code) is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EcoevalError(f"checkpoint file {path}: refused, not a weights-only torch file ({first})") from None


def load_pretrained(auto_class, folder: str | Path, what: str, **kwargs):
    """Load a local save_pretrained folder: safetensors only, no remote code, no hub access."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EcoevalError(f"{what} {folder}: not a folder")
    if not any(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.iterdir())
        raise EcoevalError(f"{what} {folder}: expected model weights as *.safetensors (pickle checkpoints are refused), found {found}")
    if not (folder / "config.json").is_file():
        raise EcoevalError(f"{what} {folder}: config.json not found")
    from safetensors import SafetensorError

    try:
        return auto_class.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                          trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # SafetensorError: a corrupt file
        raise EcoevalError(f"{what} {folder}: cannot be loaded ({str(exc).splitlines()[0]})") from None


# -- checkpoints -----------------------------------------------------------------------------


def config_hash(stage: str, relevant: dict, input_files: list[Path], world_size: int) -> str:
    """Hash of everything that shapes the run's trajectory: a checkpoint is reused only if equal."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "params": relevant,
        "inputs": [sha256_file(p) for p in input_files],
        "world_size": world_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _rng_state(data_gen) -> dict:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "data": data_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, data_gen) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """The latest resumable checkpoint of one stage, in `work_dir/checkpoint/` (atomic)."""

    def __init__(self, work_dir: str | Path, chash: str, every: int, dist: Dist):
        self.dir = Path(work_dir) / "checkpoint"
        self.hash, self.every, self.dist = chash, every, dist

    def _find(self) -> Path | None:
        # atomic_dir renames the old folder aside before moving the new one in; if a kill
        # fell between the two renames, the aside copy is the latest complete checkpoint
        for cand in (self.dir, self.dir.with_name(f".{self.dir.name}.old")):
            if (cand / "meta.json").is_file():
                return cand
        return None

    def load(self, model, optimizer, scheduler, sampler: Sampler, data_gen) -> dict | None:
        """Restore everything from a compatible checkpoint; return its state, or None."""
        from safetensors.torch import load_model

        found = self._find()
        if found is None:
            return None
        try:
            meta = json.loads((found / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.warning("checkpoint %s: unreadable meta.json, starting from scratch", found)
            return None
        if meta.get("config_hash") != self.hash:
            log.warning("checkpoint %s: made with other parameters or inputs (hash %s, want %s); ignored, starting from scratch",
                        found, str(meta.get("config_hash"))[:12], self.hash[:12])
            return None
        state = safe_torch_load(found / "state.pt")
        try:
            load_model(model, str(found / "model.safetensors"), strict=True, device=str(self.dist.device))
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable checkpoint
            raise EcoevalError(f"checkpoint file {found / 'model.safetensors'}: cannot be loaded ({str(exc).splitlines()[0]})") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load(state["sampler"])
        _set_rng_state(state["rng"][self.dist.rank], data_gen)
        log.info("resuming from checkpoint %s at step %d", found, state["step"])
        return state

    def save(self, step: int, model, optimizer, scheduler, sampler: Sampler, data_gen, history: dict) -> None:
        import torch
        from safetensors.torch import save_model

        rng = _rng_state(data_gen)
        if self.dist.distributed:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        if self.dist.is_main:
            state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "sampler": sampler.state(), "rng": rng_all, "history": history}
            with atomic_dir(self.dir) as tmp:
                save_model(model, str(tmp / "model.safetensors"))
                torch.save(state, tmp / "state.pt")
                (tmp / "meta.json").write_text(json.dumps({"config_hash": self.hash, "step": step,
                                                           "format": CHECKPOINT_FORMAT}), encoding="utf-8")
            log.info("checkpoint at step %d written to %s", step, self.dir)
        barrier(self.dist)


def launched_ddp(stage: str, params: dict, inputs: dict, outputs: dict, monitor) -> bool:
    """In the parent of a multi-process run: launch torchrun, wait, return True."""
    world = world_size_wanted(params[stage], stage)
    if world > 1 and os.environ.get(WORKER_ENV) != "1":
        launch_ddp(stage, params, inputs, outputs, world, monitor)
        return True
    return False


def make_checkpointer(stage: str, params: dict, input_files: list[Path], dist: Dist) -> "Checkpointer":
    """The stage's checkpointer, keyed by the seed, the section (minus logging keys) and inputs."""
    cfg = params[stage]
    relevant = {"seed": params["seed"], **{k: v for k, v in cfg.items() if k not in ("log_every", "checkpoint_every")}}
    chash = config_hash(stage, relevant, input_files, dist.world_size)
    return Checkpointer(params["work_dir"], chash, cfg["checkpoint_every"], dist)


def settings_from(stage: str, params: dict) -> "TrainSettings":
    cfg = params[stage]
    return TrainSettings(
        name=stage, max_steps=cfg["max_steps"], batch_size=cfg["batch_size"], grad_accum=cfg.get("grad_accum", 1),
        learning_rate=cfg["learning_rate"], weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"],
        precision=cfg["precision"], log_every=cfg["log_every"], checkpoint_every=cfg["checkpoint_every"],
        max_grad_norm=cfg.get("max_grad_norm", 1.0), seed=int(params["seed"]),
    )


def loss_module(model, loss_fn: Callable):
    """A Module whose forward(**batch) is loss_fn(model, **batch): what DDP wraps and the loop calls."""
    import torch

    class LossModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            return loss_fn(self.model, **batch)

    return LossModule()


def write_outputs(outputs: dict, model, tokenizer, result: "TrainResult", metrics, dist: Dist) -> None:
    """Rank 0: the save_pretrained folder (safetensors + tokenizer), log.parquet, metrics.parquet."""
    from ecoeval.io import write_parquet

    with atomic_dir(outputs["model"]) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_parquet(result.table(), outputs["log"], metadata={"resumed_from_step": result.resumed_from,
                                                            "world_size": dist.world_size})
    write_parquet(metrics, outputs["metrics"], metadata={"world_size": dist.world_size, "device": str(dist.device)})


# -- the loop --------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    name: str  # "pretrain" / "finetune": prefix of progress lines
    max_steps: int
    batch_size: int  # per process
    grad_accum: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    precision: str  # fp32 | bf16
    log_every: int
    checkpoint_every: int
    max_grad_norm: float
    seed: int


@dataclass
class TrainResult:
    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    wall_s: list = field(default_factory=list)
    step_time_s: float = 0.0  # mean optimizer-step time of the steps run by this process
    resumed_from: int = 0
    windows: list = field(default_factory=list)  # (step, t_begin, t_end, tokens), perf_counter

    def history(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("step", "loss", "lr", "tokens", "wall_s")}

    def table(self):
        import pyarrow as pa

        return pa.table({
            "step": pa.array(self.step, pa.int64()),
            "loss": pa.array(self.loss, pa.float64()),
            "lr": pa.array(self.lr, pa.float64()),
            "tokens": pa.array(self.tokens, pa.int64()),
            "wall_s": pa.array(self.wall_s, pa.float64()),
        })


def autocast(device, precision: str):
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def train(model, loss_module, make_batch: Callable, n_examples: int, s: TrainSettings, dist: Dist,
          monitor=None, checkpointer: Checkpointer | None = None) -> TrainResult:
    """Train `model` through `loss_module` (a Module whose forward(**batch) returns the loss).

    `make_batch(indices, generator)` returns (batch dict on the device, tokens in it: int).
    """
    import torch

    optimizer = make_optimizer(model, s.learning_rate, s.weight_decay)
    scheduler = make_scheduler(optimizer, s.warmup_steps, s.max_steps)
    sampler = Sampler(n_examples, s.batch_size, s.seed, dist.rank, dist.world_size)
    data_gen = torch.Generator().manual_seed(s.seed * 7919 + 17 + dist.rank)
    result = TrainResult()
    start, wall_offset = 0, 0.0
    if checkpointer is not None:
        state = checkpointer.load(model, optimizer, scheduler, sampler, data_gen)
        if state is not None:
            start = int(state["step"])
            for key, values in state["history"].items():
                getattr(result, key).extend(values)
            wall_offset = result.wall_s[-1] if result.wall_s else 0.0
            result.resumed_from = start
    runner = loss_module
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(loss_module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    model.train()
    tokens_total = result.tokens[-1] if result.tokens else 0
    pending_loss: list = []  # per-step loss tensors not yet read back (no host sync between logs)
    t0 = time.perf_counter()
    step_times: list = []
    steps_abs: list = []
    for step in range(start + 1, s.max_steps + 1):
        if monitor is not None:
            monitor.step_begin(step)
        t_step = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        step_loss = torch.zeros((), device=dist.device)
        step_tokens = 0
        for micro in range(s.grad_accum):
            batch, ntok = make_batch(sampler.next(), data_gen)
            sync = nullcontext() if (not dist.distributed or micro == s.grad_accum - 1) else runner.no_sync()
            with sync:
                with autocast(dist.device, s.precision):
                    loss = runner(**batch)
                (loss / s.grad_accum).backward()
            step_loss += loss.detach().float() / s.grad_accum
            step_tokens += ntok
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_tokens *= dist.world_size
        tokens_total += step_tokens
        t_end = time.perf_counter()
        if monitor is not None:
            monitor.step_end(step, step_tokens)
        step_times.append(t_end - t_step)
        steps_abs.append((step, t_step, t_end, step_tokens))
        pending_loss.append(step_loss)
        result.step.append(step)
        result.lr.append(float(lr))
        result.tokens.append(tokens_total)
        result.wall_s.append(wall_offset + t_end - t0)
        at_ckpt = checkpointer is not None and s.checkpoint_every > 0 and step % s.checkpoint_every == 0 and step < s.max_steps
        if step % s.log_every == 0 or step == s.max_steps or at_ckpt:
            losses = torch.stack(pending_loss)
            if dist.distributed:
                torch.distributed.all_reduce(losses)
                losses /= dist.world_size
            result.loss.extend(losses.tolist())
            pending_loss = []
            if step % s.log_every == 0 or step == s.max_steps:
                print(f"{s.name} step {step}/{s.max_steps} loss {result.loss[-1]:.4f} lr {lr:.3g} "
                      f"tokens {tokens_total} wall_s {result.wall_s[-1]:.1f}", file=sys.stderr, flush=True)
        if at_ckpt:
            checkpointer.save(step, model, optimizer, scheduler, sampler, data_gen, result.history())
    result.step_time_s = sum(step_times) / len(step_times) if step_times else 0.0
    result.windows = steps_abs
    return result


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def finish(params: dict, dist: Dist, result: TrainResult) -> None:
    """After rank 0 has written the outputs: hand step windows to the DDP launcher, drop the
    resumable checkpoint (it has served), leave the process group."""
    import shutil

    work = Path(params["work_dir"])
    if dist.is_main:
        if os.environ.get(WORKER_ENV) == "1":
            write_json([list(w) for w in result.windows], work / "steps.json")
        for name in ("checkpoint", ".checkpoint.old"):
            shutil.rmtree(work / name, ignore_errors=True)
    barrier(dist)
    teardown(dist)


if __name__ == "__main__":  # a torchrun worker started by launch_ddp
    _worker_main(sys.argv[1])
