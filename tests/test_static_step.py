"""The training step reads nothing back to the host and keeps fixed shapes (what a CUDA graph
capture needs), and a batch padded to the static size trains exactly like the unpadded one."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scd_core.config import ConfigError, load_config
from scd_core.losses import supervised_losses
from scd_core.data import load_training_data
from scd_core.static_step import ComputeOps
from scd_core.trainer import Trainer

SMALL = ["model.hidden_dim=32", "model.out_features=32", "model.num_heads=4", "optim.lr=1e-3"]
# Ops that read a device value on the host (a synchronisation on CUDA) or whose output shape
# depends on the data, and a tensor made from host data (a host-to-device copy, which a
# capture refuses).
HOST_READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::bincount",
              "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive", "aten::one_hot", "aten::lift_fresh"}
BOOL_INDEXING = {"aten::index", "aten::index_put_", "aten::_index_put_impl_"}


class HostReads(TorchDispatchMode):
    """Records every op that would synchronise or change a shape with the data and, run under
    ``torch.device("meta")``, every tensor made without naming its device (on a CUDA run it
    would land on the CPU, outside the graph)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        bool_index = name in BOOL_INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if name in HOST_READS or bool_index:
            self.seen.append(name)
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.is_meta for t in (out if isinstance(out, (tuple, list)) else [out])):
            self.seen.append(f"{name} without a device")
        return out


@pytest.fixture(scope="module")
def data(demo_store):
    return load_training_data(load_config(None, SMALL), demo_store, torch.device("cpu"))


def test_the_detector_sees_a_host_read(data):
    batch = data.train.index(torch.arange(16), with_ids=False)
    outputs = {"ah": torch.zeros(16, 2)}
    with HostReads() as mode:
        supervised_losses(outputs, batch.labels, batch.label_mask)  # the host-side API reads the flags
    assert "aten::_local_scalar_dense" in mode.seen
    with HostReads() as mode:
        torch.tensor([1.0, 2.0])
    assert mode.seen == ["aten::lift_fresh"]
    with torch.device("meta"), HostReads() as mode:
        torch.zeros(3, device="cpu")
        torch.zeros(3)
    assert mode.seen == ["aten::zeros without a device"]


@pytest.mark.parametrize("options", [[], ["ssl.class_balance=flexmatch", "ssl.teacher=ema", "data.modality_dropout=0.3"],
                                     ["ssl.class_balance=align", "ssl.pseudo_labels=soft"], ["ssl.gradnorm=false"]])
def test_step_never_reads_the_device(data, options):
    cfg = load_config(None, [*SMALL, *options, "optim.batch_size=24"])
    trainer = Trainer(cfg, data)
    trainer.model.train()
    step = trainer.static_step(ssl_active=True, capture=False)
    rows = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:20]
    for _ in range(2):  # the second step runs with GradNorm's L(0) known
        with HostReads() as mode:
            step(rows)
        assert mode.seen == []
    with torch.device("meta"), HostReads() as mode:  # every tensor the step makes names its device
        step(rows)
    assert mode.seen == []


def test_compute_ops_counts_what_computes_not_views():
    x = torch.randn(4, 6)
    with ComputeOps() as ops:
        y = x.view(6, 4).t().unsqueeze(0).squeeze_(0)
        (y + 1).sum()
    assert ops.counts == {"aten::add": 1, "aten::sum": 1} and ops.total == 2


def test_gradnorm_costs_one_batched_trunk_pass_in_ops(data):
    """The GPU step is bound by kernel launches. GradNorm's six norms take one backward pass
    through the trunk batched over the components and multi-tensor kernels over the shared
    parameters: well under the 2x ops of a pass per component (measured 1.99x before, 1.25x now)."""
    counts = {}
    for gradnorm in (True, False):
        trainer = Trainer(load_config(None, [*SMALL, f"ssl.gradnorm={str(gradnorm).lower()}", "optim.batch_size=24"]), data)
        trainer.model.train()
        step = trainer.static_step(ssl_active=True, capture=False)
        rows = torch.arange(24)
        step(rows)
        with ComputeOps() as ops:
            step(rows)
        counts[gradnorm] = ops.total
    assert counts[True] < 1.5 * counts[False], counts


def test_padded_batch_trains_like_the_unpadded_one(data):
    cfg = load_config(None, [*SMALL, "model.dropout=0", "ssl.class_balance=flexmatch", "ssl.tau_emo=0.3",
                             "ssl.tau_ah=0.55", "optim.batch_size=48"])
    plain, padded = Trainer(cfg, data), Trainer(cfg, data)
    static = padded.static_step(ssl_active=True, capture=False)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(2))
    for step in range(3):
        rows = order[step * 40:(step + 1) * 40]  # 40 real rows, 8 padding rows
        want = plain._device_step(data.train.index(rows, with_ids=False), rows, None, True).host()
        got = static(rows).host()
        assert static.valid.sum() == 40 and static.rows.numel() == 48
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
        for (name, p), q in zip(plain.model.named_parameters(), padded.model.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name
        plain.optimizer.step()
        padded.optimizer.step()
        for branch in ("sup", "ssl"):
            assert padded.gradnorm[branch].weights == pytest.approx(plain.gradnorm[branch].weights, rel=1e-6)
    assert torch.equal(plain.pseudo_labeler.memory["emo"], padded.pseudo_labeler.memory["emo"])
    for got, want in zip(padded.pseudo_labeler.epoch_stats(), plain.pseudo_labeler.epoch_stats()):
        assert got == pytest.approx(want, nan_ok=True)
    assert plain._sums.read(0) == pytest.approx(padded._sums.read(0), rel=1e-6)


def test_cuda_graph_switch(data):
    assert not Trainer(load_config(None, SMALL), data).cuda_graph  # auto on a CPU run: eager
    with pytest.raises(ConfigError, match="cuda_graph=on needs a CUDA device"):
        Trainer(load_config(None, [*SMALL, "cuda_graph=on"]), data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_step_equals_the_eager_one_on_cuda(demo_store):
    from scd_core.static_step import WARMUP_STEPS

    # SGD: Adam would turn rounding noise on zero gradients (attention's key bias) into full steps.
    cfg = load_config(None, [*SMALL, "model.dropout=0", "device=cuda", "optim.batch_size=32",
                             "optim.optimizer=sgd", "optim.lr=0.05"])
    data = load_training_data(cfg, demo_store, torch.device("cuda"))
    # The trainer's CUDA default (captured, the elementwise stages fused) against plain eager.
    eager = Trainer(cfg.model_copy(update={"cuda_graph": "off", "fuse_elementwise": "off"}), data)
    graph = Trainer(cfg.model_copy(update={"cuda_graph": "on"}), data)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0)).cuda()
    sizes = [32] * (WARMUP_STEPS + 3) + [20]  # the last one padded to 32
    start = 0
    for step, size in enumerate(sizes):
        rows = order[start:start + size]
        start += size
        want = eager.train_step(None, rows, 0, step).host()
        got = graph.train_step(None, rows, 0, step).host()
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), step
    assert graph._static[1].graph is not None  # captured, not fallen back to eager
    assert graph._losses.compiled is not None and graph._record.compiled is not None  # fused, not fallen back
    for branch in ("sup", "ssl"):
        assert graph.gradnorm[branch].weights == pytest.approx(eager.gradnorm[branch].weights, rel=1e-4)
    for p, q in zip(graph.model.parameters(), eager.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


def device_tensors(obj, path: str = "trainer", seen: set[int] | None = None):
    """(path, tensor) for every tensor reachable from ``obj`` through the project's objects,
    modules, optimisers, dicts and lists (``.grad`` aside: a capture re-points it once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, torch.nn.Module):
        for name, t in [*obj.named_parameters(recurse=True), *obj.named_buffers(recurse=True)]:
            yield f"{path}.{name}", t
    elif isinstance(obj, torch.optim.Optimizer):
        for i, state in enumerate(obj.state.values()):
            yield from device_tensors(state, f"{path}.state[{i}]", seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from device_tensors(value, f"{path}[{key!r}]", seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from device_tensors(value, f"{path}[{i}]", seen)
    elif type(obj).__module__.startswith("scd_core") and hasattr(obj, "__dict__"):
        for key, value in vars(obj).items():
            yield from device_tensors(value, f"{path}.{key}", seen)


@pytest.mark.parametrize("options", [["ssl.class_balance=flexmatch", "ssl.teacher=ema", "data.modality_dropout=0.3"],
                                     ["ssl.class_balance=align", "ssl.pseudo_labels=soft", "optim.scheduler=cosine"],
                                     ["optim.scheduler=plateau", "optim.optimizer=adamw"]])
def test_every_tensor_a_captured_step_reads_keeps_its_storage(data, tmp_path, options):
    """A CUDA graph replays the addresses it captured: state that a step, an epoch's end, a
    checkpoint or the A.8 rebalance replaced by a new tensor (``x = f(x)``, not ``x.copy_(f(x))``)
    would stop reaching the graph, silently, on CUDA only. Every tensor reachable from the
    trainer must keep its storage from the first epoch's end to the last's."""
    cfg = load_config(None, [*SMALL, *options, "optim.batch_size=24", "ssl.rebalance_epoch=2"])
    trainer = Trainer(cfg, data, tmp_path)
    snapshots = []

    def snapshot(report) -> None:
        snapshots.append({p: t.untyped_storage().data_ptr() for p, t in device_tensors(trainer)
                          if not p.startswith("trainer._static")})  # its output is new per eager step

    trainer.fit(epochs=3, on_epoch=snapshot)
    first = snapshots[0]
    assert any(".gradnorm" in p for p in first) and any("optimizer.state" in p for p in first)
    if trainer.pseudo_labeler is not None:
        assert any("pseudo_labeler" in p for p in first)
    for epoch, later in enumerate(snapshots[1:], 1):
        moved = sorted(p for p in first.keys() & later.keys() if first[p] != later[p])
        assert moved == [], f"replaced by epoch {epoch}: {moved}"
        assert later.keys() == first.keys(), f"tensors added or dropped by epoch {epoch}"
