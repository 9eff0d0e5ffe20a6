"""Forward + backward throughput of MCDM-1/2/3 (or any graph:attention pairs) at the paper's configuration.

    python benchmarks/bench_model.py [--batch-sizes 32 256] [--min-seconds 3] [--device cpu] [--threads N]
    python benchmarks/bench_model.py --layers gat:mha ncgnn:mha edgnn:mha unitary:mha hgnn:mha \
        gat:mta gat:crossmpt gat:bica gat:fa          # the variants of Tables 13/14, as ratios to the first
    python benchmarks/bench_model.py --layers gat:mha pyg:GATConv:mha pyg:GATv2Conv:mha \
        pyg:TransformerConv:mha pyg:GCNConv:mha [--graph-only]   # PyG's layers beside the dense GAT

``--graph-only`` times one graph layer alone (the graph part of each pair) on ``[B, 4, 512]``
node features: the adjacency's precomputation, forward and backward, which the whole model's
step would dilute.

Paper configuration: hidden 512, out_features 512, 8 heads, dropout 0.15, the four
modalities with 1024/1536/1536/1536 inputs, three tasks. Training mode; each step is a
forward pass on random features (about 10 % of modality rows missing), the sum of all
outputs as loss, and a backward pass (no optimiser step). Prints ms per step and samples/s
per model and batch size, from the median step time (robust to other jobs on a shared
machine), and the throughput relative to the first model of the run. On a CPU shared with other jobs, ``--threads 1`` avoids OpenMP
oversubscription, which otherwise dominates the numbers. A benchmark, not a test:
nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scd_core.config import ModelConfig
from scd_core.model import GRAPH_LAYERS, MCDM, NAMED_MODELS, count_parameters, modality_adjacency
from scd_core.tasks import PAPER_FEATURE_DIMS, TASK_NAMES


def make_batch(batch: int, device: torch.device, generator: torch.Generator):
    feats = {m: torch.randn(batch, d, generator=generator).to(device) for m, d in PAPER_FEATURE_DIMS.items()}
    mask = torch.rand(batch, len(PAPER_FEATURE_DIMS), generator=generator) > 0.1
    mask[:, 2] |= ~mask.any(1)  # text present when everything else is missing
    return feats, mask.to(device)


def model_step(model: MCDM, batch: int, device: torch.device):
    feats, mask = make_batch(batch, device, torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(feats, mask)
        sum(o.sum() for o in out.values()).backward()

    return step


def graph_step(layer: torch.nn.Module, batch: int, device: torch.device):
    """One graph layer alone: ``[B, N, H]`` features of the model's modality graph."""
    _, mask = make_batch(batch, device, torch.Generator().manual_seed(0))
    x = torch.randn(batch, mask.size(1), layer.hidden_dim, device=device, requires_grad=True)
    adj = modality_adjacency(mask)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x, adj, layer.precompute(adj)).sum().backward()

    return step


def bench(step, device: torch.device, min_seconds: float, warmup: int = 2) -> float:
    """Median seconds of ``step()`` (after ``warmup`` calls), over at least ``min_seconds``."""
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
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--models", nargs="+", default=sorted(NAMED_MODELS), choices=sorted(NAMED_MODELS))
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--layers", nargs="+", metavar="GRAPH:ATTENTION",
                        help="benchmark these layer pairs instead of the named models (GRAPH may be pyg:<Name>)")
    parser.add_argument("--graph-only", action="store_true",
                        help="time each pair's graph layer alone (paper's hidden size and heads)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    if args.layers:  # the graph name may hold a colon itself (pyg:GATv2Conv)
        configs = {pair: dict(zip(("graph", "attention"), pair.rsplit(":", 1))) for pair in args.layers}
    else:
        configs = {name: NAMED_MODELS[name] for name in args.models}
    width = max(14, *(len(name) for name in configs))
    print(f"{'model':{width}s} {'params':>10s} {'batch':>6s} {'ms/step':>8s} {'samples/s':>10s} {'vs first':>8s}")
    first: dict[int, float] = {}
    for name, layers in configs.items():
        cfg = ModelConfig(**layers)
        torch.manual_seed(0)
        if args.graph_only:
            module = GRAPH_LAYERS.get(cfg.graph)(cfg.hidden_dim, num_heads=cfg.num_heads, dropout=cfg.dropout)
        else:
            module = MCDM.from_config(cfg, PAPER_FEATURE_DIMS, TASK_NAMES)
        module = module.to(device).train()
        for batch in args.batch_sizes:
            make_step = graph_step if args.graph_only else model_step
            seconds = bench(make_step(module, batch, device), device, args.min_seconds)
            rate = batch / seconds
            first.setdefault(batch, rate)
            print(f"{name:{width}s} {count_parameters(module):>10d} {batch:>6d} {1e3 * seconds:>8.2f} {rate:>10.1f} "
                  f"{rate / first[batch]:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
