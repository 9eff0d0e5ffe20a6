"""A training step on fixed-size input buffers, replayed as one captured CUDA graph.

The trainer's device step (``Trainer._device_step``) keeps every shape fixed and reads nothing
back to the host, so after a few eager warm-up steps it can be captured whole (forward pass,
the GradNorm backward passes and update, the pseudo-label state, the epoch's running sums) and
replayed with one launch per step instead of hundreds of kernel launches and synchronisations.
Its only inputs are two buffers: the batch's row indices into the training set (already on
the device) and a mask of the real rows. A smaller batch is padded to the static size with
copies of its first row marked invalid, which no loss, statistic or state counts
(``scd_core.losses.masked_mean``).

The optimiser, the EMA teacher and the scheduler step eagerly after each replay: they read the
gradients the graph wrote into each parameter's ``.grad`` (the same tensors at every replay),
and a learning rate the scheduler changes takes effect (a captured optimiser would keep the
one it was captured with). If the capture fails, the step warns once and runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode, is_in_torch_dispatch_mode

# Eager steps before the capture: they initialise what is created lazily (cuBLAS handles,
# autograd's buffers, the allocator's blocks) outside the graph.
WARMUP_STEPS = 3

Output = TypeVar("Output")


class StaticStep(Generic[Output]):
    """``step(rows [S] long, valid [S] bool) -> Output`` on static buffers of ``size`` rows.

    ``capture=False`` runs it eagerly on the same padded buffers (the CPU, and the tests).
    """

    def __init__(self, step: Callable[[Tensor, Tensor], Output], size: int, device: torch.device,
                 capture: bool) -> None:
        self.step = step
        self.size = size
        self.rows = torch.zeros(size, dtype=torch.long, device=device)
        self.valid = torch.zeros(size, dtype=torch.bool, device=device)
        self.capture = capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: Output | None = None
        self.warmed = 0

    def load(self, rows: Tensor) -> None:
        """Copy ``rows`` [n <= size] into the buffers; the rest repeats the first row, marked invalid."""
        n = rows.numel()
        if not 0 < n <= self.size:
            raise ValueError(f"a batch of {n} rows does not fit the static step of {self.size} rows")
        self.rows[:n].copy_(rows)
        self.rows[n:].copy_(rows[:1].expand(self.size - n))
        self.valid[:n].fill_(True)
        self.valid[n:].fill_(False)

    def __call__(self, rows: Tensor) -> Output:
        """One step on ``rows``; the output's tensors are overwritten by the next step."""
        self.load(rows)
        if self.graph is not None:
            self.graph.replay()
            return self.output
        if not self.capture:
            return self.step(self.rows, self.valid)
        if self.warmed < WARMUP_STEPS:
            self.warmed += 1
            return self._on_side_stream()
        return self._capture()

    def _on_side_stream(self) -> Output:
        # Warm-up before a capture runs on a side stream, as torch.cuda.graphs asks.
        side = torch.cuda.Stream(self.rows.device)
        side.wait_stream(torch.cuda.current_stream(self.rows.device))
        with torch.cuda.stream(side):
            output = self.step(self.rows, self.valid)
        torch.cuda.current_stream(self.rows.device).wait_stream(side)
        return output

    def _capture(self) -> Output:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                output = self.step(self.rows, self.valid)
        except Exception as error:  # noqa: BLE001 - an op that synchronises, or one CUDA graphs do not support
            warnings.warn(f"the training step could not be captured as a CUDA graph ({type(error).__name__}: "
                          f"{error}); it runs eagerly from now on (cuda_graph=off skips the attempt)", stacklevel=3)
            self.capture = False
            return self.step(self.rows, self.valid)
        self.graph, self.output = graph, output
        graph.replay()  # a capture only records: this replay is the step itself
        return output


class Fused(Generic[Output]):
    """``fn`` compiled by ``torch.compile`` into a few fused kernels when ``enabled``, else ``fn``.

    For the step's elementwise stages on small tensors (losses, pseudo-labels, the GradNorm
    updates, the epoch's sums): eagerly each of their ops is a kernel of its own, a launch or
    a graph node that does almost nothing; compiled, a few kernels do them all (and their
    backward). ``fn`` must trace as one graph (``fullgraph``) with fixed shapes and read its
    settings from tensors, so that trials with other values reuse the compiled code
    (inductor's cache) instead of compiling anew.

    If compiling fails (no compiler, an op the compiler lacks), it warns once and calls ``fn``
    from then on: compiling fails before ``fn``'s first effect, so nothing is applied twice.
    Under a ``TorchDispatchMode`` (such as :class:`ComputeOps`), which ``torch.compile`` does
    not support, it calls ``fn``.
    """

    def __init__(self, fn: Callable[..., Output], enabled: bool) -> None:
        self.fn = fn
        # One compile thread: the graphs are small, and inductor would otherwise start a pool of
        # as many workers as the machine has cores in every process (8 trials sharing a GPU: 8 pools).
        self.compiled = (torch.compile(fn, fullgraph=True, dynamic=False, options={"compile_threads": 1})
                         if enabled else None)

    def __call__(self, *args) -> Output:
        if self.compiled is None or is_in_torch_dispatch_mode():
            return self.fn(*args)
        try:
            with warnings.catch_warnings():
                # The compiler reads .grad of every input, which warns for the non-leaf ones (a model's outputs).
                warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
                return self.compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure: the eager function is the same step
            first_line = next(iter(str(error).splitlines()), "")  # the compiler's messages run to pages
            warnings.warn(f"{getattr(self.fn, '__name__', 'a step function')} could not be compiled "
                          f"({type(error).__name__}: {first_line}); it runs eagerly from now on "
                          "(fuse_elementwise=off skips the attempt)", stacklevel=2)
            self.compiled = None
            return self.fn(*args)


# Ops that only re-describe memory (no kernel on a GPU), in place or not.
VIEW_OPS = frozenset({
    "aten::t", "aten::view", "aten::detach", "aten::transpose", "aten::expand", "aten::slice", "aten::select",
    "aten::unsqueeze", "aten::squeeze", "aten::_unsafe_view", "aten::permute", "aten::as_strided", "aten::alias",
    "aten::unbind", "aten::split", "aten::split_with_sizes", "aten::narrow",
    "aten::squeeze_", "aten::unsqueeze_", "aten::t_", "aten::transpose_", "aten::as_strided_",
})


class ComputeOps(TorchDispatchMode):
    """Counts, by name, the ops that compute while active (views excluded): roughly one kernel
    each on a GPU, what a captured step replays. ``with ComputeOps() as ops: step(...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name not in VIEW_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


__all__ = ["WARMUP_STEPS", "VIEW_OPS", "ComputeOps", "Fused", "StaticStep"]
