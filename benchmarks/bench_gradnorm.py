"""Cost of the GradNorm gradient norms on a ~4M-parameter shared trunk (DESIGN.md: a known hot spot).

Model: four modality inputs of 1536 -> Linear 512 each, concat -> Linear 512 (the shared
parameters, ~4.2M), three task heads; batch 32; six loss components (sup/ssl x emo/pt/ah),
two GradNorm branches as the trainer uses them. Timed per training step (median of
interleaved rounds in shuffled order, so load from other processes hits every variant alike):

  fixed       forward + backward of sum w_t L_t with fixed weights (the reference)
  loop        (a) forward + one autograd.grad per component (6) + 2 x update + backward
  batched     (b) forward + one vmapped call over all 6 components + 2 x update + backward
  step        forward + GradNorm.step on each branch (default norms) + backward
  step_last   as step, with only the last shared layer (fuse) as shared, as in Chen et al.:
              the norm backwards stop there instead of running through the whole trunk

Run: python benchmarks/bench_gradnorm.py [--rounds N] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from scd_core.gradnorm import GradNorm, gradient_norms

TASKS = {"emo": 7, "pt": 5, "ah": 2}


class Net(torch.nn.Module):
    def __init__(self, d_in: int = 1536, hidden: int = 512, n_inputs: int = 4) -> None:
        super().__init__()
        self.proj = torch.nn.ModuleList(torch.nn.Linear(d_in, hidden) for _ in range(n_inputs))
        self.fuse = torch.nn.Linear(n_inputs * hidden, hidden)
        self.heads = torch.nn.ModuleDict(
            {t: torch.nn.Sequential(torch.nn.Linear(hidden, 128), torch.nn.ReLU(), torch.nn.Linear(128, c))
             for t, c in TASKS.items()}
        )

    def shared(self) -> list[torch.nn.Parameter]:
        return [*self.proj.parameters(), *self.fuse.parameters()]

    def forward(self, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        z = torch.cat([F.relu(p(x)) for p, x in zip(self.proj, xs)], dim=-1)
        h = F.relu(self.fuse(z))
        return {t: head(h) for t, head in self.heads.items()}


def losses_of(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Six components shaped like the paper's (Eq. 14-15); pseudo-labels from the same pass."""
    pt = torch.sigmoid(out["pt"])
    return {
        "s_emo": F.cross_entropy(out["emo"], y["emo"]),
        "s_pt": (pt - y["pt"]).abs().mean(),
        "s_ah": F.cross_entropy(out["ah"], y["ah"]),
        "ss_emo": F.cross_entropy(out["emo"], out["emo"].detach().argmax(-1)),
        "ss_pt": F.binary_cross_entropy(pt, (pt.detach() > 0.5).float()),
        "ss_ah": F.cross_entropy(out["ah"], out["ah"].detach().argmax(-1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = Net().to(dev)
    shared, params = net.shared(), list(net.parameters())
    batch = 32
    xs = [torch.randn(batch, 1536, device=dev) for _ in range(4)]
    y = {
        "emo": torch.softmax(torch.randn(batch, 7, device=dev), -1),
        "pt": torch.rand(batch, 5, device=dev),
        "ah": torch.randint(0, 2, (batch,), device=dev),
    }
    branches = {
        "s": GradNorm(tuple(TASKS), alpha=1.25, lr=0.01, budget=3.0),
        "ss": GradNorm(tuple(TASKS), alpha=1.0, lr=0.005, budget=0.9),
    }

    def split(d: dict[str, float | torch.Tensor], b: str) -> dict:
        return {k.split("_", 1)[1]: v for k, v in d.items() if k.startswith(b + "_")}

    def total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(branches[k.split("_")[0]].weights[k.split("_", 1)[1]] * v for k, v in losses.items())

    def update_all(losses: dict[str, torch.Tensor], norms: dict[str, float]) -> None:
        values = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).tolist()))
        for b, gn in branches.items():
            gn.update(split(values, b), split(norms, b))

    def fixed() -> None:
        total(losses_of(net(xs), y)).backward()

    def loop() -> None:
        losses = losses_of(net(xs), y)
        update_all(losses, gradient_norms(losses, shared, batched=False))
        total(losses).backward()

    def step() -> None:
        losses = losses_of(net(xs), y)
        for b, gn in branches.items():
            gn.step(split(losses, b), shared)
        total(losses).backward()

    def batched() -> None:
        losses = losses_of(net(xs), y)
        update_all(losses, gradient_norms(losses, shared, batched=True))
        total(losses).backward()

    last = list(net.fuse.parameters())

    def step_last() -> None:
        losses = losses_of(net(xs), y)
        for b, gn in branches.items():
            gn.step(split(losses, b), last)
        total(losses).backward()

    variants: dict[str, Callable[[], None]] = {
        "fixed": fixed, "loop": loop, "batched": batched, "step": step, "step_last": step_last,
    }

    def timed(fn: Callable[[], None]) -> float:
        net.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for fn in variants.values():  # warm-up (vmap's first call, allocator)
        for _ in range(3):
            timed(fn)
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)  # no variant always follows the same one (allocator, caches)
        for name in order:
            times[name].append(timed(variants[name]))

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"load_avg={os.getloadavg()[0]:.2f} rounds={args.rounds}")
    print(f"shared params={sum(p.numel() for p in shared):,} all params={sum(p.numel() for p in params):,} "
          f"batch={batch} components=6")
    for name, ms in med.items():
        print(f"  {name:9s} {ms:8.2f} ms/step   x{ms / med['fixed']:.2f} of fixed")
    extra = {k: med[k] - med["fixed"] for k in ("loop", "batched")}
    print(f"norm cost over fixed: (a) loop {extra['loop']:.2f} ms, (b) batched {extra['batched']:.2f} ms, "
          f"(a)/(b) = {extra['loop'] / extra['batched']:.2f}")
    print(f"(forward + GradNorm.step x2 + backward) / (forward + backward) = {med['step'] / med['fixed']:.2f}")


if __name__ == "__main__":
    main()
