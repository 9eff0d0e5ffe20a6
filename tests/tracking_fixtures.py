"""Empty MLflow stores for tests: ``mlflow_uri`` (a test's own) and :func:`copy_of_store`
(for wider-scoped fixtures), both copies of one store made per session. MLflow runs its schema
migrations (about 3 s) on every new SQLite database; a copy of a migrated one skips them. A
store made from nothing is still tested: the README's demo sweep in CI, and every test that
tracks without these fixtures."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the schema
    return path


def copy_of_store(empty_store: Path, directory: Path) -> str:
    """The tracking URI of a new store ``directory/mlflow.db``, a copy of ``empty_store``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture
def mlflow_uri(tmp_path, empty_mlflow_store) -> str:
    """``sqlite:///<tmp_path>/mlflow.db``: an empty MLflow store of this test's own."""
    return copy_of_store(empty_mlflow_store, tmp_path)
