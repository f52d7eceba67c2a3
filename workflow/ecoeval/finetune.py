"""finetune: sequence classification from the pretrained model.

`BertForSequenceClassification` (any `AutoModelForSequenceClassification`) is loaded from
the pretrained folder (safetensors only); the pooler and classifier start from the seed.
Examples are pre-tensorised once (padded to the longest example) and every batch is cut to
its own longest example. Trains on split `train` with `ecoeval.training`'s loop (same
optimizer, schedule, checkpoints and DDP as pretraining), then predicts every example of
every split. Outputs: model folder, log, metrics (accuracy and macro-F1 per split) and
per-example predictions (docs/contracts.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ecoeval import EcoevalError
from ecoeval import training
from ecoeval.io import read_parquet, write_parquet

log = logging.getLogger("ecoeval.finetune")

def classifier_loss(model, input_ids, attention_mask, labels):
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


def pad_examples(rows: list[list[int]], pad_id: int):
    """(ids int64 (N, longest), lengths int64 (N,))."""
    import torch

    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    ids = torch.full((len(rows), int(lengths.max()) if len(rows) else 1), pad_id, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return ids, lengths


def cut_batch(ids, lengths, idx):
    """The rows `idx`, cut to their longest example, with the attention mask."""
    import torch

    lens = lengths[idx]
    longest = int(lens.max())
    batch_ids = ids[idx, :longest]
    mask = (torch.arange(longest).unsqueeze(0) < lens.unsqueeze(1)).to(torch.int64)
    return batch_ids, mask, int(lens.sum())


def predict(model, ids, lengths, batch_size: int, precision: str, device):
    """P(label = 1) and argmax predictions for every row, in order."""
    import torch

    model.eval()
    probs, preds = [], []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            idx = torch.arange(i, min(i + batch_size, len(ids)))
            batch_ids, mask, _ = cut_batch(ids, lengths, idx)
            with training.autocast(device, precision):
                logits = model(input_ids=batch_ids.to(device), attention_mask=mask.to(device)).logits
            p = torch.softmax(logits.float(), dim=-1).cpu()
            probs.append(p[:, 1])
            preds.append(p.argmax(dim=-1))
    model.train()
    return torch.cat(probs).double().numpy(), torch.cat(preds).numpy()


def run(params: dict, inputs: dict, outputs: dict, monitor=None) -> None:
    import numpy as np
    import pyarrow as pa
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = params["finetune"]
    if training.launched_ddp("finetune", params, inputs, outputs, monitor):
        return None
    dist = training.setup_run(params, "finetune")

    table = read_parquet(inputs["tokens"], columns=["id", "split", "label", "group", "input_ids"])
    labels_all = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    if (labels_all < 0).any():
        raise EcoevalError(f"input file {inputs['tokens']}: labels must be >= 0, found {int(labels_all.min())}")
    train_rows = np.flatnonzero(splits == "train")
    if len(train_rows) == 0:
        raise EcoevalError(f"input file {inputs['tokens']}: no rows with split 'train'")
    num_labels = max(2, int(labels_all.max()) + 1)

    tokenizer = AutoTokenizer.from_pretrained(inputs["model"], local_files_only=True, trust_remote_code=False)
    model = training.load_pretrained(AutoModelForSequenceClassification, inputs["model"], "pretrained model",
                                     num_labels=num_labels).to(dist.device)
    ids, lengths = pad_examples(table.column("input_ids").to_pylist(), tokenizer.pad_token_id)
    if ids.shape[1] > model.config.max_position_embeddings:
        raise EcoevalError(f"input file {inputs['tokens']}: examples of {ids.shape[1]} tokens exceed the model's "
                           f"max_position_embeddings ({model.config.max_position_embeddings})")
    import torch

    labels_t = torch.from_numpy(labels_all.copy())
    train_idx = torch.from_numpy(train_rows)

    def make_batch(idx, gen):
        rows = train_idx[idx]
        batch_ids, mask, ntok = cut_batch(ids, lengths, rows)
        return {"input_ids": batch_ids.to(dist.device), "attention_mask": mask.to(dist.device),
                "labels": labels_t[rows].to(dist.device)}, ntok

    model_files = sorted(Path(inputs["model"]).glob("*.safetensors"))
    ckpt = training.make_checkpointer("finetune", params, [Path(inputs["tokens"]), *model_files], dist)
    log.info("finetuning %s: %d train examples, %d labels, %d processes on %s",
             type(model).__name__, len(train_rows), num_labels, dist.world_size, dist.device)

    result = training.train(model, training.loss_module(model, classifier_loss), make_batch, len(train_rows),
                            training.settings_from("finetune", params), dist, monitor, ckpt)

    if dist.is_main:
        prob, pred = predict(model, ids, lengths, max(cfg["batch_size"], 64), cfg["precision"], dist.device)
        names, split_col, values = [], [], []
        for split in dict.fromkeys(splits.tolist()):
            sel = splits == split
            acc = accuracy_score(labels_all[sel], pred[sel])
            f1 = f1_score(labels_all[sel], pred[sel], average="macro", labels=list(range(num_labels)), zero_division=0)
            names += ["accuracy", "macro_f1"]
            split_col += [split, split]
            values += [float(acc), float(f1)]
            log.info("%s: accuracy %.4f macro_f1 %.4f (%d examples)", split, acc, f1, int(sel.sum()))
        names += ["train_steps", "train_tokens", "train_wall_s", "step_time_s"]
        split_col += ["train"] * 4
        values += [float(result.step[-1]), float(result.tokens[-1]), result.wall_s[-1], result.step_time_s]
        metrics = pa.table({"metric": names, "split": split_col, "value": pa.array(values, pa.float64())})
        predictions = pa.table({
            "id": table.column("id"),
            "split": table.column("split"),
            "group": table.column("group"),
            "label": pa.array(labels_all, pa.int64()),
            "pred": pa.array(pred.astype(np.int64), pa.int64()),
            "prob": pa.array(prob, pa.float64()),
        })
        training.write_outputs(outputs, model, tokenizer, result, metrics, dist)
        write_parquet(predictions, outputs["predictions"])
    training.finish(params, dist, result)
    return None
