import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """The synthetic demo corpora, generated once per test session."""
    from scd_core.synthetic import generate

    return generate(tmp_path_factory.mktemp("demo") / "features", "demo", seed=0)
