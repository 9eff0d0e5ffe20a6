import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The local Rays that tests start in-process listen on 127.0.0.1 only, like the entry points'
# (tuning/local_ray.py); Ray reads this when it is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Fixtures of every test module: tiny models of the real classes (session-wide), a Ray head,
# empty MLflow stores.
pytest_plugins = ["model_fixtures", "cluster_fixtures", "tracking_fixtures"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_exit_status: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process once pytest has reported, with pytest's own status. A full run leaves
    Ray, torch.compile and OpenMP native state whose teardown at interpreter exit once crashed
    with a segmentation fault after every test had passed (a CI run on 2026-12-02); what
    follows the report is cleanup the OS does anyway."""
    if _exit_status and not hasattr(config, "workerinput"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """The synthetic demo corpora, generated once per test session."""
    from scd_core.synthetic import generate

    return generate(tmp_path_factory.mktemp("demo") / "features", "demo", seed=0)


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory, demo_store, empty_mlflow_store):
    """The README's demo sweep (search_spaces/quick.yaml) made smaller: 3 Optuna trials of 2
    epochs with ASHA, finished, in its own MLflow store. Returns (settings, result)."""
    import ray
    from tracking_fixtures import copy_of_store

    from dashboards.sweep_outputs import SWEEP_OUTPUTS
    from tuning.sweep import SweepSettings, run_sweep

    tmp = tmp_path_factory.mktemp("quick")
    settings = SweepSettings(space=str(Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"),
                             features=str(demo_store), storage_path=str(tmp / "ray"),
                             tracking_uri=copy_of_store(empty_mlflow_store, tmp), max_concurrent=2, num_samples=3,
                             epochs=2, grace_period=1, name="quick")
    started = not ray.is_initialized()  # test_tune.py runs inside its own local Ray
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        return settings, run_sweep(settings, SWEEP_OUTPUTS)
    finally:
        if started:
            ray.shutdown()
