"""benchmarks/bench_gpu.py: its quick CPU mode runs and writes results of the documented shape,
and it imports nothing that a bare GPU machine lacks (Ray, MLflow, vLLM, the upper layers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
FORBIDDEN = ("ray", "mlflow", "vllm", "tuning", "dashboards", "extraction", "ray_jobs")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_imports_only_scd_core():
    code = (f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import bench_gpu; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_quick_cpu_run_writes_every_part(tmp_path, demo_store):
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                          "--features", str(demo_store), "--time-limit", "300"],
                         capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "gpu_step_cpu.json").read_text())
    assert result["skipped"] == []
    assert {(r["batch_size"], r["weights"], r["mode"]) for r in result["steps"]} == {
        (b, w, "eager") for b in (32, 256) for w in ("gradnorm", "fixed")}
    assert all(r["ms_per_step"] > 0 and not r["captured"] and not r["fused"] for r in result["steps"])  # CPU: unfused
    ops = {(r["batch_size"], r["weights"]): r["ops_per_step"] for r in result["steps"]}
    assert ops[32, "gradnorm"] > ops[32, "fixed"] > 0  # GradNorm's trunk pass adds ops
    assert all(r["us_per_op"] == round(1000 * r["ms_per_step"] / r["ops_per_step"], 2) for r in result["steps"])
    epoch = result["epoch"]
    assert epoch["epoch_s"] > 0 and epoch["steps"] > 0 and epoch["dev_eval_s"] > 0
    assert [r["processes"] for r in result["sharing"]] == [1, 2]
    for row in result["sharing"]:
        assert len(row["epoch_s_per_process"]) == row["processes"]
        assert row["trial_epochs_per_hour"] > 0
    [profiled] = result["profile"]
    assert (profiled["mode"], profiled["captured"]) == ("eager", False)
    assert profiled["ms_per_step"] > 0 and profiled["device_ops_per_step"] > 0
    assert 0 < profiled["busy_ms_per_step"] and profiled["busy_share"] > 0
    top = profiled["top"]
    assert 0 < len(top) <= 12
    shares = [t["share_of_busy"] for t in top]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-6
    assert not any(t["name"] in ("aten::view", "aten::empty", "aten::as_strided") for t in top)  # no work of their own
    assert any(t["name"] in ("aten::mm", "aten::addmm", "aten::bmm") for t in top)  # matmuls count, their conj checks do not hide them
    markdown = (out / "gpu_step_cpu.md").read_text()
    assert "| 256 | fixed | eager | no |" in markdown and "| ops/step (unfused) | us/op |" in markdown
    assert "trial-epochs per hour" in markdown and "| 2 |" in markdown and "| no |" in markdown
    assert result["target_parts_fuse_elementwise"] == "default" and "ran unfused" not in markdown
    assert "Device time per step, batch 32, GradNorm, eager" in markdown and "| device op | per step |" in markdown


def test_the_parts_the_targets_need_come_first(tmp_path, demo_store):
    """A run out of time skips in priority order: what the targets are read from first."""
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                          "--features", str(demo_store), "--time-limit", "0", "--processes", "8,1"],
                         capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "gpu_step_cpu.json").read_text())
    assert result["steps"] == [] and result["epoch"] is None and result["sharing"] == [] and result["profile"] == []
    assert [s.removesuffix(": time limit") for s in result["skipped"]] == [
        "step batch 32 gradnorm eager", "epoch", "sharing N=8", "profile batch 32 gradnorm eager", "sharing N=1",
        "step batch 32 fixed eager",
        "step batch 256 gradnorm eager", "step batch 256 fixed eager"]


def test_a_failing_part_is_recorded_and_the_run_goes_on(tmp_path, demo_store):
    """One part's error must not cost the others' figures on a one-shot GPU run: each failure is
    recorded with its error, the results are still written, and the exit status says so."""
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                          "--features", str(demo_store), "--time-limit", "300", "--processes", "1",
                          "--set", "cuda_graph=on"],  # a CUDA-only setting: every trainer refuses it on the CPU
                         capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert run.returncode == 1, run.stderr[-3000:]
    result = json.loads((out / "gpu_step_cpu.json").read_text())
    labels = [f.split(":")[0] for f in result["failed"]]
    assert labels == ["step batch 32 gradnorm eager", "epoch", "sharing N=1", "profile batch 32 gradnorm eager",
                      "step batch 32 fixed eager", "step batch 256 gradnorm eager", "step batch 256 fixed eager"]
    assert all("cuda_graph=on needs a CUDA device" in f for f in result["failed"] if not f.startswith("sharing"))
    assert "exited before it was ready" in result["failed"][2]
    assert "Failed: step batch 32 gradnorm eager: ConfigError" in (out / "gpu_step_cpu.md").read_text()


def test_the_target_parts_run_unfused_only_where_unfused_measured_faster():
    sys.path.insert(0, str(SCRIPT.parent))
    from bench_gpu import faster_unfused

    def row(fused, ms, mode="captured", captured=True, batch=32, weights="gradnorm"):
        return {"batch_size": batch, "weights": weights, "mode": mode, "captured": captured, "fused": fused,
                "ms_per_step": ms}

    assert faster_unfused([row(True, 3.0), row(False, 2.5)])
    assert not faster_unfused([row(True, 2.5), row(False, 3.0)])
    assert not faster_unfused([row(True, 3.0)])  # nothing to compare (the CPU, or a skipped row)
    assert not faster_unfused([row(True, 3.0), row(False, 2.5, mode="eager", captured=False)])  # eager rows do not count
    assert faster_unfused([row(True, 9.0, captured=False), row(False, 2.5)])  # the fused capture failed: eager, slow
    assert not faster_unfused([row(True, 3.0), row(False, 2.5, batch=256), row(False, 2.5, weights="fixed")])
