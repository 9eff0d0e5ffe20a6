"""Training-step throughput at the paper's best configuration, with and without GradNorm.

    python benchmarks/bench_train.py [--device cpu|cuda] [--batch-size 32] [--steps 30] [--epoch]

Prints samples/s with dual-branch GradNorm, the ratio to the same step with fixed task
weights (both measured in this run, interleaved, so machine noise hits both), and the
seconds of one epoch over the synthetic ``paper`` preset (about 23,000 training rows):
measured with ``--epoch``, else extrapolated from the step time.

Every ratio printed is of two things measured in this run. For reference only (never
divided by): the paper reports 158 s per training epoch (its Table 17, on its own hardware).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scd_core.batching import epoch_batches
from scd_core.config import ExperimentConfig, load_config
from scd_core.synthetic import ensure_store
from scd_core.data import load_training_data
from scd_core.trainer import Trainer


def paper_store(features: str | None, preset: str = "paper") -> Path:
    """The store at ``features``, else the synthetic ``preset`` (corpora sized like the paper's)
    generated into a fresh temporary directory."""
    return Path(features) if features else ensure_store(Path(tempfile.mkdtemp()) / preset, preset)


def bench_config(device: str, batch_size: int, *overrides: str) -> ExperimentConfig:
    """The paper's best configuration (the config defaults) at ``batch_size`` on ``device``."""
    return load_config(None, [f"optim.batch_size={batch_size}", f"device={device}", *overrides])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA step returns before its kernels finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shuffled_batches(trainer: Trainer, seed: int = 0) -> torch.Tensor:
    """One epoch's batches of training-row indices [steps, batch] as the trainer draws them, on its device."""
    corpus_index = trainer.data.train.corpus_index.cpu()
    return epoch_batches(corpus_index, trainer.cfg.optim.batch_size, torch.Generator().manual_seed(seed)).to(trainer.device)


def step_times(trainer: Trainer, batches: torch.Tensor) -> list[float]:
    times = []
    for step, idx in enumerate(batches):
        batch = trainer.data.train.index(idx, with_ids=False)
        synchronize(trainer.device)
        tic = time.perf_counter()
        trainer.train_step(batch, idx, 0, step)
        synchronize(trainer.device)
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both variants")
    parser.add_argument("--features", help="store with the paper preset (default: generate one in a temp dir)")
    parser.add_argument("--epoch", action="store_true", help="also time one full epoch with GradNorm")
    args = parser.parse_args()

    device = torch.device(args.device)
    root = paper_store(args.features)
    cfg_gn = bench_config(args.device, args.batch_size)
    cfg_fixed = bench_config(args.device, args.batch_size, "ssl.gradnorm=false")
    data = load_training_data(cfg_gn, root, device)
    trainers = {"gradnorm": Trainer(cfg_gn, data), "fixed": Trainer(cfg_fixed, data)}
    batches = shuffled_batches(trainers["gradnorm"])
    print(f"{device} ({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{len(data.train)} training rows, {len(batches)} steps per epoch")

    for trainer in trainers.values():  # warm-up: allocator, kernels, L(0) capture
        step_times(trainer, batches[:3])
    times = {name: [] for name in trainers}
    for r in range(args.rounds):
        for name, trainer in trainers.items():
            start = (r * args.steps) % (len(batches) - args.steps)
            times[name] += step_times(trainer, batches[start:start + args.steps])
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    ratio = ms["gradnorm"] / ms["fixed"]
    for name in trainers:
        print(f"{name:>9}: {ms[name]:7.1f} ms/step  {1000 * args.batch_size / ms[name]:7.1f} samples/s")
    print(f"GradNorm / fixed weights: {ratio:.2f}x step time (target < 1.5)")
    print(f"epoch over the paper preset, extrapolated: {len(batches) * ms['gradnorm'] / 1000:.1f} s")
    if args.epoch:
        trainer = trainers["gradnorm"]
        synchronize(device)
        tic = time.perf_counter()
        trainer.train_epoch(1)
        synchronize(device)
        print(f"epoch over the paper preset, measured: {time.perf_counter() - tic:.1f} s (paper: 158 s)")


if __name__ == "__main__":
    main()
