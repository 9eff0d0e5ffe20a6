"""Faults a hostile user causes, and what the platform does about each (README "Faults survived").

Each test reproduces one fault of issue 13 and checks the behaviour: the exit code, one
message naming the place, the MLflow state, the listening sockets, the files kept.
"""

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_dim=16", "model.out_features=16", "model.num_heads=2", "optim.epochs=1", "optim.batch_size=512"]


def entry_point(name: str):
    """``ray_jobs/<name>.py`` (scripts, not a package) as a module, to call its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location(f"ray_jobs_{name}", ROOT / "ray_jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    """The CLI's message (without traceback): what stderr shows the user."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# ----------------------------------------------------------------- 1. silent overwrite

def test_train_refuses_to_overwrite_a_run_unless_told(tmp_path, demo_store, capsys):
    main = entry_point("train").main
    out = tmp_path / "run"
    args = ["--features", str(demo_store), "--output", str(out), *TINY]
    assert main(args) == 0
    before = digest(out)
    assert {"best/model.safetensors", "last/state.json"} <= set(before)
    capsys.readouterr()

    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert digest(out) == before  # nothing replaced

    assert main([*args, "--overwrite"]) == 0
    assert set(digest(out)) == set(before)
