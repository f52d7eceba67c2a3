"""pretrain: masked-LM pretraining of a BERT-style model on packed blocks.

The model is `BertForMaskedLM` built from the `pretrain` config (from scratch) or loaded
from `pretrain.init_checkpoint` (a local save_pretrained folder, safetensors only).
Masking is our own, vectorised over the batch with a seeded `torch.Generator` (BERT's
recipe: `mlm_probability` of the non-special tokens are chosen; of those 80% become [MASK],
10% a random token, 10% stay). The loss is BertForMaskedLM's loss, computed with the
prediction head applied to the chosen positions only (the head is per-token, so this is the
same loss without the vocabulary projection of the other ~85% of tokens). The loop, the
optimizer, checkpoints and DDP are `ecoeval.training`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ecoeval import EcoevalError
from ecoeval.io import read_parquet
from ecoeval import training

log = logging.getLogger("ecoeval.pretrain")


def masked_lm_loss(model, input_ids, labels, attention_mask=None):
    """Mean cross-entropy over the chosen positions; the prediction head sees only those."""
    import torch

    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    chosen = labels != -100
    logits = model.cls(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


def mask_tokens(input_ids, generator, mlm_probability: float, special_ids, mask_id: int, vocab_size: int):
    """BERT masking for a batch: returns (inputs, labels) with -100 at unchosen positions."""
    import torch

    special = torch.isin(input_ids, special_ids)
    probs = torch.rand(input_ids.shape, generator=generator)
    chosen = (probs < mlm_probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def build_model(cfg: dict, tokenizer, block_size: int):
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    if cfg.get("init_checkpoint"):
        model = training.load_pretrained(AutoModelForMaskedLM, cfg["init_checkpoint"], "config key pretrain.init_checkpoint")
        if model.config.vocab_size < len(tokenizer):
            raise EcoevalError(f"config key pretrain.init_checkpoint: model vocabulary ({model.config.vocab_size}) "
                               f"is smaller than the tokenizer's ({len(tokenizer)})")
        if model.config.max_position_embeddings < block_size:
            raise EcoevalError(f"config key pretrain.init_checkpoint: max_position_embeddings "
                               f"{model.config.max_position_embeddings} < tokenize.block_size {block_size}")
        if not (hasattr(model, "bert") and hasattr(model, "cls")):
            raise EcoevalError(f"config key pretrain.init_checkpoint: expected a BERT masked-LM, got {type(model).__name__}")
        return model
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        hidden_dropout_prob=cfg["dropout"],
        attention_probs_dropout_prob=cfg["dropout"],
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=2,
    )
    return BertForMaskedLM(config)


def load_blocks(path: Path):
    """Blocks per split as int64 tensors (N, block_size)."""
    import numpy as np
    import pyarrow.compute as pc
    import torch

    table = read_parquet(path, columns=["split", "input_ids"])
    out = {}
    for split in dict.fromkeys(table.column("split").to_pylist()):
        rows = table.filter(pc.equal(table.column("split"), split)).column("input_ids").combine_chunks()
        lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
        if len(set(lengths.tolist())) != 1:
            raise EcoevalError(f"input file {path}: split {split!r} has blocks of different lengths {sorted(set(lengths.tolist()))}")
        flat = rows.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        out[split] = torch.from_numpy(flat.reshape(len(rows), int(lengths[0])))
    return out


def evaluate(loss_module, blocks, batch_size: int, seed: int, precision: str, device, masker) -> float:
    """Mean masked-LM loss over `blocks` with a fixed masking seed (token-weighted)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 99_991)
    loss_module.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            inputs, labels = masker(blocks[i:i + batch_size], gen)
            n = int((labels != -100).sum())
            if n == 0:
                continue
            with training.autocast(device, precision):
                loss = loss_module(input_ids=inputs.to(device), labels=labels.to(device))
            total += float(loss) * n
            count += n
    loss_module.train()
    if count == 0:
        raise EcoevalError("tokens/pretrain.parquet: validation blocks have no maskable tokens")
    return total / count


def run(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    import pyarrow as pa
    import torch
    from transformers import AutoTokenizer

    cfg = params["pretrain"]
    if training.launched_ddp("pretrain", params, inputs, outputs, monitor):
        return None
    dist = training.setup_run(params, "pretrain")

    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"], local_files_only=True, trust_remote_code=False)
    blocks = load_blocks(inputs["tokens"])
    if "train" not in blocks:
        raise EcoevalError(f"input file {inputs['tokens']}: no blocks with split 'train'")
    if "validation" not in blocks:
        raise EcoevalError(f"input file {inputs['tokens']}: no blocks with split 'validation' (needed for eval_loss)")
    train_blocks = blocks["train"]
    block_size = train_blocks.shape[1]
    if block_size > cfg["max_position_embeddings"] and not cfg.get("init_checkpoint"):
        raise EcoevalError(f"config key pretrain.max_position_embeddings: must be >= the block length {block_size}")

    model = build_model(cfg, tokenizer, block_size).to(dist.device)
    vocab = model.config.vocab_size
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.int64)
    mask_id = tokenizer.mask_token_id

    def masker(ids, gen):
        return mask_tokens(ids, gen, cfg["mlm_probability"], special_ids, mask_id, vocab)

    tokens_per_batch = cfg["batch_size"] * block_size

    def make_batch(idx, gen):
        inputs_ids, labels = masker(train_blocks[idx], gen)
        return {"input_ids": inputs_ids.to(dist.device, non_blocking=True),
                "labels": labels.to(dist.device, non_blocking=True)}, tokens_per_batch

    init_files = sorted(Path(cfg["init_checkpoint"]).glob("*.safetensors")) if cfg.get("init_checkpoint") else []
    ckpt = training.make_checkpointer("pretrain", params, [Path(inputs["tokens"]), *init_files], dist)
    loss_module = training.loss_module(model, masked_lm_loss)
    n_params = training.count_params(model)
    log.info("model: %d parameters; %d train blocks of %d tokens; %d processes on %s",
             n_params, len(train_blocks), block_size, dist.world_size, dist.device)

    result = training.train(model, loss_module, make_batch, len(train_blocks), training.settings_from("pretrain", params),
                            dist, monitor, ckpt)

    if dist.is_main:
        eval_loss = evaluate(loss_module, blocks["validation"], cfg["batch_size"], int(params["seed"]),
                             cfg["precision"], dist.device, masker)
        log.info("validation eval_loss %.4f perplexity %.2f", eval_loss, training.perplexity(eval_loss))
        metrics = pa.table({
            "metric": ["eval_loss", "perplexity", "train_steps", "train_tokens", "train_wall_s", "model_params", "step_time_s"],
            "split": ["validation", "validation", "train", "train", "train", "train", "train"],
            "value": pa.array([eval_loss, training.perplexity(eval_loss), float(result.step[-1]), float(result.tokens[-1]),
                               result.wall_s[-1], float(n_params), result.step_time_s], pa.float64()),
        })
        training.write_outputs(outputs, model, tokenizer, result, metrics, dist)
    training.finish(params, dist, result)
    return None

