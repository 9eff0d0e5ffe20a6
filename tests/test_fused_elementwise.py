"""``fuse_elementwise``: the step's elementwise stages (losses, pseudo-labels, GradNorm updates,
the epoch's sums) compiled by torch.compile into a few kernels give the eager step's numbers,
trials with other settings reuse the compiled code, and a function that cannot be compiled
runs eagerly."""

import math
import threading
import shutil

import pytest
import torch
from torch._dynamo.utils import counters

from scd_core.config import load_config
from scd_core.data import load_training_data
from scd_core.static_step import ComputeOps, Fused
from scd_core.trainer import Trainer

# On the CPU, inductor compiles C++ (the default, auto, compiles on CUDA only).
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")

SMALL = ["model.hidden_dim=32", "model.out_features=32", "model.num_heads=4", "optim.lr=1e-3", "optim.batch_size=24"]


@pytest.fixture(scope="module")
def data(demo_store):
    return load_training_data(load_config(None, SMALL), demo_store, torch.device("cpu"))


def _run(trainer: Trainer, steps: int = 4):
    """``steps`` steps on the same rows and dropout for every trainer; the last step's losses."""
    trainer.model.train()
    step = trainer.static_step(ssl_active=True, capture=False)
    order = torch.randperm(len(trainer.data.train), generator=torch.Generator().manual_seed(0))
    for i in range(steps):
        torch.manual_seed(i)
        losses = step(order[24 * i:24 * i + 20])  # 20 of 24 rows: the padded rows count nowhere
        trainer.optimizer.step()
    return losses


@pytest.mark.filterwarnings("error:.* could not be compiled")  # a fallback to eager fails the test
# The default, and the pseudo-label options with the most state (FlexMatch's memory, soft targets)
# with the logit-adjusted supervised loss; each compiles graphs of its own (about 10 s on 2 CPU cores).
@pytest.mark.parametrize("options", [[], ["ssl.class_balance=flexmatch", "ssl.pseudo_labels=soft",
                                          "ssl.logit_adjustment=1.0"]])
def test_fused_steps_equal_the_eager_ones(data, options):
    eager = Trainer(load_config(None, [*SMALL, *options, "fuse_elementwise=off"]), data)
    fused = Trainer(load_config(None, [*SMALL, *options, "fuse_elementwise=on"]), data)
    assert eager._losses.compiled is None and fused._losses.compiled is not None
    a, b = _run(eager), _run(fused)
    assert fused._losses.compiled is not None and fused._record.compiled is not None  # not fallen back
    torch.testing.assert_close(b.values, a.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(b.present, a.present)
    for branch in ("sup", "ssl"):
        assert fused.gradnorm[branch].weights == pytest.approx(eager.gradnorm[branch].weights, rel=1e-5)
        torch.testing.assert_close(fused.gradnorm[branch].initial_tensor, eager.gradnorm[branch].initial_tensor,
                                   rtol=1e-5, atol=0.0, equal_nan=True)
    assert fused.gradnorm["sup"].weights != pytest.approx({t: 1.0 for t in fused.tasks})  # the updates ran
    # The losses' backward too. Adam moves a parameter by about lr (1e-3) a step, whatever its
    # gradient's size: rounding can flip a near-zero gradient (a few 1e-5 apart after 4 steps),
    # a wrong gradient moves parameters by whole steps.
    for p, q in zip(fused.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=2e-4)
    assert fused._sums.read(0) == pytest.approx(eager._sums.read(0), rel=1e-5)
    fused_stats, eager_stats = fused.pseudo_labeler.epoch_stats(), eager.pseudo_labeler.epoch_stats()
    assert not any(math.isnan(v) for v in eager_stats[0].values())  # the pseudo-label branch had candidates
    for f, e in zip(fused_stats, eager_stats):  # its in-place state
        assert f.keys() == e.keys() and all(math.isnan(e[k]) == math.isnan(f[k]) for k in e)
        assert {k: v for k, v in f.items() if not math.isnan(v)} == pytest.approx(
            {k: v for k, v in e.items() if not math.isnan(v)})
    for name, tensor in eager.pseudo_labeler.state_tensors().items():
        torch.testing.assert_close(fused.pseudo_labeler.state_tensors()[name], tensor)


def test_other_settings_reuse_the_compiled_code(data):
    """A trial's thresholds, temperature and GradNorm settings are tensors the compiled code
    reads: another trial's values need no new graph, only what the first trial compiled."""
    _run(Trainer(load_config(None, [*SMALL, "fuse_elementwise=on"]), data), steps=2)
    graphs = counters["stats"]["unique_graphs"]
    other = Trainer(load_config(None, [*SMALL, "fuse_elementwise=on", "ssl.alpha_s=0.5", "ssl.alpha_ss=2.0",
                                       "ssl.eta_s=0.05", "ssl.eta_ss=0.002", "ssl.lambda=0.4", "ssl.w_floor=0.01",
                                       "ssl.tau_emo=0.5", "ssl.tau_pt=0.6", "ssl.tau_ah=0.55",
                                       "ssl.temperature=0.3"]), data)
    _run(other, steps=2)
    assert counters["stats"]["unique_graphs"] == graphs
    assert other.gradnorm["ssl"].settings_tensor.tolist() == [2.0, 0.002, 3 * 0.4, 0.01]
    assert sum(other.gradnorm["ssl"].weights.values()) == pytest.approx(3 * 0.4)  # its own budget, not the first's
    assert float(other.pseudo_labeler.thresholds["pt"]) == pytest.approx(0.6)


def test_under_a_dispatch_mode_the_step_runs_eagerly(data):
    """torch.compile refuses a TorchDispatchMode: the op counter sees the eager step."""
    counts = []
    for fuse in ("off", "on"):
        trainer = Trainer(load_config(None, [*SMALL, f"fuse_elementwise={fuse}"]), data)
        _run(trainer, steps=2)
        with ComputeOps() as ops:
            _run(trainer, steps=1)
        counts.append(ops.total)
    assert counts[0] == counts[1] > 0


def test_a_function_that_cannot_compile_warns_and_runs_eagerly():
    def host_branch(x: torch.Tensor) -> torch.Tensor:
        state.add_(1)
        return x * 2 if bool(x.sum() > 0) else x  # reads a device value on the host: no single graph

    state = torch.zeros(())
    fused = Fused(host_branch, enabled=True)
    with pytest.warns(UserWarning, match="host_branch could not be compiled .*fuse_elementwise=off"):
        out = fused(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and fused.compiled is None
    assert float(state) == 1.0  # applied once: the failed compilation ran nothing
    assert torch.equal(fused(-torch.ones(3)), -torch.ones(3)) and float(state) == 2.0


def test_compiles_in_a_thread_as_a_tune_trial_runs():
    """Ray Tune runs a trial's function in a thread of its actor: compiling must work there."""
    result = {}

    def trial():
        fused = Fused(lambda x, y: (x * 2 + y).relu().sum(), enabled=True)
        result["value"], result["compiled"] = fused(torch.ones(4), -torch.ones(4)), fused.compiled is not None

    thread = threading.Thread(target=trial)
    thread.start()
    thread.join()
    assert result == {"value": torch.tensor(4.0), "compiled": True}
