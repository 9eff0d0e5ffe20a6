"""Forward + backward throughput of MCDM-1/2/3 (or any graph:attention pairs) at the paper's configuration.

    python benchmarks/bench_model.py [--batch-sizes 32 256] [--min-seconds 3] [--device cpu] [--threads N]
    python benchmarks/bench_model.py --layers gat:mha ncgnn:mha edgnn:mha unitary:mha hgnn:mha \
        gat:mta gat:crossmpt gat:bica gat:fa          # the variants of Tables 13/14, as ratios to the first

Paper configuration: hidden 512, out_features 512, 8 heads, dropout 0.15, the four
modalities with 1024/1536/1536/1536 inputs, three tasks. Training mode; each step is a
forward pass on random features (about 10 % of modality rows missing), the sum of all
outputs as loss, and a backward pass (no optimiser step). Prints samples/s per model and
batch size, from the median step time (robust to other jobs on a shared
machine). On a CPU shared with other jobs, ``--threads 1`` avoids OpenMP
oversubscription, which otherwise dominates the numbers. A benchmark, not a test:
nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scd_core.config import ModelConfig
from scd_core.model import MCDM, NAMED_MODELS, count_parameters
from scd_core.tasks import PAPER_FEATURE_DIMS, TASK_NAMES


def make_batch(batch: int, device: torch.device, generator: torch.Generator):
    feats = {m: torch.randn(batch, d, generator=generator).to(device) for m, d in PAPER_FEATURE_DIMS.items()}
    mask = torch.rand(batch, len(PAPER_FEATURE_DIMS), generator=generator) > 0.1
    mask[:, 2] |= ~mask.any(1)  # text present when everything else is missing
    return feats, mask.to(device)


def bench(model: MCDM, batch: int, device: torch.device, min_seconds: float, warmup: int = 2) -> float:
    gen = torch.Generator().manual_seed(0)
    feats, mask = make_batch(batch, device, gen)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(feats, mask)
        sum(o.sum() for o in out.values()).backward()

    for _ in range(warmup):
        step()
    times: list[float] = []
    total = 0.0
    while total < min_seconds or len(times) < 5:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        total += times[-1]
    # median step time: robust to other processes sharing the CPU
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--models", nargs="+", default=sorted(NAMED_MODELS), choices=sorted(NAMED_MODELS))
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--layers", nargs="+", metavar="GRAPH:ATTENTION",
                        help="benchmark these layer pairs instead of the named models")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    if args.layers:
        configs = {pair: dict(zip(("graph", "attention"), pair.split(":"))) for pair in args.layers}
    else:
        configs = {name: NAMED_MODELS[name] for name in args.models}
    print(f"{'model':14s} {'params':>10s} {'batch':>6s} {'samples/s':>10s} {'vs first':>8s}")
    first: dict[int, float] = {}
    for name, layers in configs.items():
        torch.manual_seed(0)
        model = MCDM.from_config(ModelConfig(**layers), PAPER_FEATURE_DIMS, TASK_NAMES).to(device).train()
        for batch in args.batch_sizes:
            rate = bench(model, batch, device, args.min_seconds)
            first.setdefault(batch, rate)
            print(f"{name:14s} {count_parameters(model):>10d} {batch:>6d} {rate:>10.1f} {rate / first[batch]:>8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
