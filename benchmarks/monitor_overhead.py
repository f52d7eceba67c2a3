"""Energy monitor overhead on pretraining throughput, and ecoeval vs CodeCarbon on one workload.

    OMP_NUM_THREADS=1 python benchmarks/monitor_overhead.py [--steps 60] [--reps 3] [--hz 10]

1. Runs ecoeval's own masked-LM training loop (`ecoeval.training.train` with
   `ecoeval.pretrain`'s loss and masking, as `ecoeval.pretrain.run` calls it) on a tiny BERT (the config.yaml default sizes)
   over seeded random token blocks, alternating monitor off / monitor on at `--hz`,
   `--reps` times each, and prints tokens/s per run and the median slowdown (target < 1%).
   It also prints the monitor's own read time per second of wall time: a noise-free
   bound of what it takes from the training loop.
2. Runs the same workload once more under ecoeval's monitor and CodeCarbon's
   `OfflineEmissionsTracker` (offline, country_iso_code=USA, no network) together, and
   prints both energies side by side.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time


def build(args):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from ecoeval import pretrain, training

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    vocab, block = 2000, 64
    config = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=128)
    model = BertForMaskedLM(config)
    blocks = torch.randint(5, vocab, (2048, block), generator=torch.Generator().manual_seed(1))
    special = torch.tensor([0, 1, 2, 3, 4])

    def make_batch(idx, gen):
        inputs, labels = pretrain.mask_tokens(blocks[idx], gen, 0.15, special, 4, vocab)
        return {"input_ids": inputs, "labels": labels}, len(idx) * block

    def run_once(monitor, steps):
        m = copy.deepcopy(model)
        params = {"seed": 0, "pretrain": {"max_steps": steps, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.01,
                                          "warmup_steps": 5, "precision": "fp32", "log_every": 10**9, "checkpoint_every": 0}}
        dist = training.Dist(device=torch.device("cpu"))
        t = time.perf_counter()
        result = training.train(m, training.loss_module(m, pretrain.masked_lm_loss), make_batch, len(blocks),
                                training.settings_from("pretrain", params), dist, monitor, None)
        wall = time.perf_counter() - t
        return result.tokens[-1] / wall, wall

    return run_once


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-codecarbon", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ecoeval.energy import EnergyMonitor

    run_once = build(args)
    run_once(None, 10)  # warm-up: allocator, kernels
    off, on, duty = [], [], []
    for rep in range(args.reps):
        order = ("off", "on") if rep % 2 == 0 else ("on", "off")  # alternate to cancel drift
        for mode in order:
            if mode == "off":
                tps, _ = run_once(None, args.steps)
                off.append(tps)
            else:
                mon = EnergyMonitor(hz=args.hz).prepare()
                with mon:
                    tps, wall = run_once(mon, args.steps)
                on.append(tps)
                duty.append(mon.read_busy_s / mon.wall_s)
            print(f"rep {rep} monitor {mode:>3}: {tps:10.0f} tokens/s", flush=True)
    ratios = [a / b for a, b in zip(on, off)]
    slow = 100 * (1 - statistics.median(ratios))
    print(f"\nmonitor at {args.hz:g} Hz: median throughput ratio on/off {statistics.median(ratios):.4f} "
          f"(slowdown {slow:+.2f}%, per-rep ratios {', '.join(f'{r:.3f}' for r in ratios)}); target < 1%")
    print(f"monitor read time: {100 * statistics.mean(duty):.3f}% of wall time "
          f"({1000 * statistics.mean(duty) / args.hz:.2f} ms per read)")

    if args.no_codecarbon:
        return 0
    from codecarbon import OfflineEmissionsTracker

    with tempfile.TemporaryDirectory() as tmp:
        tracker = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1, save_to_file=False,
                                          output_dir=tmp, log_level="error", tracking_mode="machine")
        mon = EnergyMonitor(hz=args.hz).prepare()
        tracker.start()
        with mon:
            _, wall = run_once(mon, args.steps * 2)
        tracker.stop()
    cc = tracker.final_emissions_data
    kwh = 3.6e6
    ours = {(r["device"], r["domain"]): r for r in _totals(mon)}
    cpu, ram = ours.get(("cpu", "package"), {}), ours.get(("ram", "dram"), {})
    a = mon.assumptions
    print(f"\nsame workload ({wall:.1f} s), energy in J:")
    print(f"{'':<28}{'ecoeval device':>16}{'ecoeval ours':>14}{'CodeCarbon':>12}")
    print(f"{'CPU':<28}{cpu.get('energy_j', float('nan')):16.1f}{cpu.get('attributed_energy_j', float('nan')):14.1f}{cc.cpu_energy * kwh:12.1f}")
    print(f"{'RAM':<28}{ram.get('energy_j', float('nan')):16.1f}{ram.get('attributed_energy_j', float('nan')):14.1f}{cc.ram_energy * kwh:12.1f}")
    print(f"{'total (CPU+RAM+GPU)':<28}{sum(r['energy_j'] for r in ours.values()):16.1f}"
          f"{sum(r['attributed_energy_j'] for r in ours.values()):14.1f}{cc.energy_consumed * kwh:12.1f}")
    print(f"CodeCarbon: cpu_power {cc.cpu_power:.2f} W, ram_power {cc.ram_power:.2f} W, cpu_model {cc.cpu_model!r}")
    print(f"ecoeval: method {cpu.get('method')}, cpu_tdp_w {a.get('cpu_tdp_w')} ({a.get('cpu_tdp_source')}), "
          f"ram_w_per_gb {a.get('ram_w_per_gb')}")
    print("Why they differ: both estimate here (no RAPL, no GPU). CodeCarbon samples every measure_power_secs and "
          "takes TDP x machine CPU load; its RAM power is a constant per installed DIMM guess. ecoeval integrates "
          "TDP / logical CPUs x CPU seconds at 10 Hz (device and our process tree separately) and W/GB x GB; "
          "see docs/energy.md.")
    return 0


def _totals(mon):
    from ecoeval.energy import integrate

    out = {}
    for g in integrate(mon.samples()):
        key = (g["device"], g["domain"])
        prev = out.get(key, {"device": g["device"], "domain": g["domain"], "energy_j": 0.0, "attributed_energy_j": 0.0, "method": g["method"]})
        prev["energy_j"] += g["energy_j"]
        prev["attributed_energy_j"] += g["attributed_energy_j"] or 0.0
        out[key] = prev
    return list(out.values())


if __name__ == "__main__":
    sys.exit(main())
