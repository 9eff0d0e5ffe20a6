"""What Ray Tune + MLflow cost over the bare trainer, and sweep throughput on this machine.

    python benchmarks/bench_tune.py [--features ROOT] [--epochs 3] [model.hidden_dim=512 ...]

1. Per-epoch overhead: the same configuration trained by the bare ``Trainer`` (with its
   own checkpoints) and as a one-trial sweep (Tune reports with checkpoints, MLflow
   logging of metrics and best checkpoints), both with all CPU cores, on the ``paper``
   preset. Epoch cost = the interval between consecutive epoch ends (the first epoch,
   with start-up, is left out): from ``on_epoch`` calls for the bare run and from the
   trial's MLflow metric timestamps for the sweep. Target: overhead under 10 %.
2. Trials per hour on the synthetic demo corpora (the quick space's small model, four
   trials, no early stopping) with 1 and 2 concurrent trials, each given all / half of
   the CPU cores.
Both measured in one run, one after the other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tuning.local_ray import keep_local_ray_on_loopback

keep_local_ray_on_loopback()  # before anything imports ray

import ray  # noqa: E402
import yaml  # noqa: E402

from dashboards.sweep_outputs import SWEEP_OUTPUTS  # noqa: E402
from scd_core.config import load_config  # noqa: E402
from scd_core.data import load_training_data, resolve_device  # noqa: E402
from scd_core.synthetic import ensure_store  # noqa: E402
from scd_core.trainer import Trainer  # noqa: E402
from scd_core.yaml_io import parse_yaml, read_yaml  # noqa: E402
from tuning.sweep import SweepSettings, run_sweep  # noqa: E402
from tuning.tracking import CHILD, Tracking, sweep_runs  # noqa: E402


def intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # skip the first epoch (start-up)


def bare_epochs(cfg, root: Path, workdir: Path) -> list[float]:
    data = load_training_data(cfg, root, resolve_device(cfg.device))
    stamps = [time.time()]
    Trainer(cfg, data, workdir).fit(on_epoch=lambda report: stamps.append(time.time()))
    return intervals(stamps)


def sweep_epochs(space_overrides: dict, root: Path, work: Path, cpus: float) -> tuple[list[float], list[float]]:
    """Epoch intervals of a one-trial sweep, and the trainer's own epoch seconds inside it."""
    space = work / "one.yaml"
    space.write_text(yaml.safe_dump({"name": "one", "strategy": "grid", "fixed": space_overrides,
                                     "parameters": {"seed": [0]}}))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_sweep(SweepSettings(space=str(space), features=str(root), storage_path=str(work / "ray"), tracking_uri=uri,
                            name="overhead", cpus_per_trial=cpus, asha=False, max_concurrent=1), SWEEP_OUTPUTS)
    tracking = Tracking.resolve(uri)
    client = tracking.client()
    run = sweep_runs(tracking, "overhead", CHILD)[0]

    def history(name: str):
        return sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)

    stamps = [m.timestamp / 1000 for m in history("dev_score")]
    # The first stamp stands in for "before epoch 0"; only intervals between epoch ends count.
    return intervals([stamps[0], *stamps]), [m.value for m in history("epoch_seconds")][1:]


def trials_per_hour(root: Path, work: Path, concurrent: int, cpus: int) -> float:
    quick = read_yaml(Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml")
    space = work / f"grid{concurrent}.yaml"
    space.write_text(yaml.safe_dump({"name": f"grid{concurrent}", "strategy": "grid", "fixed": {
        **quick["fixed"], "model.hidden_dim": 64, "optim.epochs": 3}, "parameters": {"model.dropout": [0.0, 0.1, 0.2, 0.3]}}))
    tic = time.perf_counter()
    run_sweep(SweepSettings(space=str(space), features=str(root), storage_path=str(work / "ray"), asha=False,
                            tracking_uri=f"sqlite:///{work / 'mlflow.db'}", name=f"tph{concurrent}",
                            max_concurrent=concurrent, cpus_per_trial=cpus / concurrent), SWEEP_OUTPUTS)
    return 4 / (time.perf_counter() - tic) * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="store with the paper preset (default: generate one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides for the overhead run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    os.environ["SCD_HOME"] = str(work)
    cpus = os.cpu_count() or 1
    root = Path(args.features).resolve() if args.features else ensure_store(work / "paper", "paper")
    overrides = {"optim.epochs": args.epochs, "optim.early_stopping_patience": 0}
    overrides.update({k: parse_yaml(v) for k, v in (o.split("=", 1) for o in args.overrides)})
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])

    bare = bare_epochs(cfg, root, work / "bare")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    tuned, inside = sweep_epochs(overrides, root, work, cpus)
    bare_s, tuned_s, inside_s = statistics.mean(bare), statistics.mean(tuned), statistics.mean(inside)
    print(f"\nper-epoch, {root} ({cpus} CPUs), overrides {overrides}:")
    print(f"  bare trainer:            {bare_s:7.1f} s  {[round(x, 1) for x in bare]}")
    print(f"  Ray Tune + MLflow trial: {tuned_s:7.1f} s  {[round(x, 1) for x in tuned]}")
    print(f"    of which the trainer:  {inside_s:7.1f} s  {[round(x, 1) for x in inside]}")
    print(f"  overhead vs bare:        {100 * (tuned_s / bare_s - 1):+.1f} % (target < 10 %; includes machine noise)")
    print(f"  Tune + MLflow bookkeeping per epoch: {tuned_s - inside_s:.2f} s "
          f"({100 * (tuned_s / inside_s - 1):+.1f} % of the trial's own epoch)")

    demo = ensure_store(work / "demo", "demo")
    one = trials_per_hour(demo, work, 1, cpus)
    two = trials_per_hour(demo, work, 2, cpus)
    print(f"\ntrials/hour on the demo corpora (small model, 3 epochs): "
          f"1 concurrent {one:.0f}, 2 concurrent {two:.0f} (ratio {two / one:.2f})")
    ray.shutdown()


if __name__ == "__main__":
    main()
