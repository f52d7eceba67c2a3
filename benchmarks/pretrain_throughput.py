"""Pretraining throughput: ecoeval's loop against Hugging Face Trainer + DataCollatorForLanguageModeling.

Both train the same BertForMaskedLM (the demo default shape unless told otherwise) on the
same packed blocks with the same batch, AdamW, linear warmup/decay, weight decay and
gradient clipping (max_grad_norm 1.0), at the same precision, in this one process, one
after the other, twice (the better of the two rounds counts, which damps a busy machine).
Printed per row: tokens/s over the steps after the warm-up steps, model-FLOPs utilisation
against a matmul peak measured here at the same thread count and dtype, and the ratio
ours / Trainer. Rows: fp32, and bf16 autocast against the Trainer's bf16=True.

    OMP_NUM_THREADS=2 python benchmarks/pretrain_throughput.py --threads 2

"full head" is our loop with BertForMaskedLM's own forward (vocabulary projection for every
token, as the Trainer does) instead of the masked-positions-only head: it shows how much of
the gain comes from the head and how much from the loop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

# Threads sleep instead of spinning while they wait: on a shared, oversubscribed machine
# spinning OpenMP threads slow both loops several-fold (set OMP_WAIT_POLICY to override).
# libgomp reads this once, when torch loads it, so it is set before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


class StepClock:
    """Times optimizer steps; our loop calls it as its monitor, the Trainer through a callback."""

    def __init__(self):
        self.begin, self.end = {}, {}

    def step_begin(self, step):
        self.begin[step] = time.perf_counter()

    def step_end(self, step, tokens=0):
        self.end[step] = time.perf_counter()

    def seconds(self, first: int, last: int) -> float:
        return self.end[last] - self.begin[first]


def make_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    assert len(fast) == vocab_size
    return fast


def make_blocks(n: int, block: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, block), generator=g)
    ids[:, 0] = 2  # [CLS] leads every block, as ecoeval's packing does
    ids[:, 1::17] = 3  # document separators
    return ids


def make_model(args, vocab: int):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(args.seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                     num_attention_heads=args.heads, intermediate_size=args.intermediate,
                     max_position_embeddings=max(128, args.block), pad_token_id=0)
    return BertForMaskedLM(cfg)


def model_flops_per_token(model, seq: int, head_fraction: float = 0.15) -> float:
    """Training FLOPs per token the masked-LM objective needs (PaLM's 6N + attention form).

    Encoder: 6 x its non-embedding parameters + 12 x layers x hidden x seq (attention) for
    every token. Prediction head (transform + tied vocabulary projection): 6 x its size for
    the `head_fraction` of tokens the loss scores (BERT computes it only there). One number
    for every row, so MFU ratios equal throughput ratios; a loop that projects every token
    onto the vocabulary does more work than this and shows a lower MFU.
    """
    c = model.config
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("bert.") and "embeddings" not in n)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("cls.")) + c.vocab_size * c.hidden_size
    return 6.0 * encoder + 12.0 * c.num_hidden_layers * c.hidden_size * seq + head_fraction * 6.0 * head


def matmul_peak(dtype, threads: int, seconds: float = 1.0) -> float:
    """Best FLOP/s of square matmuls (256..1024) at this thread count and dtype."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2.0 * n**3 * reps / (time.perf_counter() - t0))
    return best


def run_ours(args, blocks, tokenizer, precision: str, full_head: bool) -> float:
    from ecoeval import training
    from ecoeval.pretrain import mask_tokens, masked_lm_loss

    model = make_model(args, len(tokenizer))
    dist = training.Dist(device=torch.device("cpu"))
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    tokens = args.batch * blocks.shape[1]

    def make_batch(idx, gen):
        inputs, labels = mask_tokens(blocks[idx], gen, 0.15, special, tokenizer.mask_token_id, len(tokenizer))
        return {"input_ids": inputs, "labels": labels}, tokens

    def full(model, input_ids, labels):
        return model(input_ids=input_ids, labels=labels).loss

    settings = training.TrainSettings(
        name="bench", max_steps=args.steps, batch_size=args.batch, grad_accum=1, learning_rate=1e-3,
        weight_decay=0.01, warmup_steps=args.steps // 10, precision=precision, log_every=args.steps,
        checkpoint_every=0, max_grad_norm=1.0, seed=args.seed,
    )
    clock = StepClock()
    lm = training.loss_module(model, full if full_head else masked_lm_loss)
    torch.set_num_threads(args.threads)
    training.train(model, lm, make_batch, len(blocks), settings, dist, monitor=clock)
    return tokens * (args.steps - args.warmup) / clock.seconds(args.warmup + 1, args.steps)


def run_trainer(args, blocks, tokenizer, precision: str) -> float:
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            clock.step_begin(state.global_step + 1)

        def on_step_end(self, a, state, control, **kw):
            clock.step_end(state.global_step)

    model = make_model(args, len(tokenizer))
    data = Dataset.from_dict({"input_ids": blocks.tolist()})
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=1e-3,
            weight_decay=0.01, warmup_steps=args.steps // 10, lr_scheduler_type="linear", max_grad_norm=1.0,
            logging_steps=args.steps, save_strategy="no", report_to="none", use_cpu=True, bf16=(precision == "bf16"),
            dataloader_num_workers=0, seed=args.seed, disable_tqdm=True,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collator, callbacks=[Clock()])
        torch.set_num_threads(args.threads)
        trainer.train()
    return args.batch * blocks.shape[1] * (args.steps - args.warmup) / clock.seconds(args.warmup + 1, args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", default="fp32,bf16")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    tokenizer = make_tokenizer(args.vocab)
    blocks = make_blocks(max(50 * args.batch, 2000), args.block, args.vocab, args.seed)
    fpt = model_flops_per_token(make_model(args, args.vocab), args.block)
    print(f"model: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; batch {args.batch} x {args.block} tokens; "
          f"{args.threads} threads; {args.steps} steps ({args.warmup} untimed); {fpt / 1e6:.2f} MFLOP/token; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'precision':9} {'loop':18} {'tokens/s':>10} {'MFU':>7} {'ratio':>6}", flush=True)
    for precision in args.precisions.split(","):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peak = matmul_peak(dtype, args.threads)
        best = {"ours": 0.0, "ours (full head)": 0.0, "HF Trainer": 0.0}
        for _ in range(args.rounds):
            best["ours"] = max(best["ours"], run_ours(args, blocks, tokenizer, precision, full_head=False))
            best["HF Trainer"] = max(best["HF Trainer"], run_trainer(args, blocks, tokenizer, precision))
            best["ours (full head)"] = max(best["ours (full head)"], run_ours(args, blocks, tokenizer, precision, full_head=True))
        peak = max(peak, matmul_peak(dtype, args.threads))  # the better of before and after: load varies
        base = best["HF Trainer"]
        for name, tps in best.items():
            print(f"{precision:9} {name:18} {tps:10.0f} {100 * tps * fpt / peak:6.2f}% {tps / base:6.2f}")
        print(f"{precision:9} {'matmul peak':18} {peak / 1e9:8.1f} GFLOP/s (load average now {os.getloadavg()[0]:.2f})", flush=True)

if __name__ == "__main__":
    main()
