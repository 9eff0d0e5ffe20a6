"""An MCDM checkpoint as an MLflow model: what ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` use.

The model directory holds ``MLmodel`` (pyfunc flavour, signature), the model code
(``tuning/pyfunc_model.py``, a "model from code": no pickled Python object), ``scd_core`` as
code, and the checkpoint as the artifact ``checkpoint`` (``model.safetensors`` +
``config.json``), so loading never unpickles weights.

Signature: input columns ``f_<modality>`` (arrays of doubles, optional: null = missing),
output the prediction table of ``scd_core.inference``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import Array, ColSpec, DataType, Schema

import scd_core
from scd_core.checkpoint import ModelSpec, load_spec
from scd_core.inference import output_columns
from scd_core.tasks import feature_column

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
CHECKPOINT_ARTIFACT = "checkpoint"
# What loading the model imports (pinned to this environment's versions).
REQUIREMENTS = ("mlflow", "torch", "torch-geometric", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "safetensors",
                "scipy")
KINDS = {"float": DataType.double, "str": DataType.string, "bool": DataType.boolean}


def model_signature(spec: ModelSpec) -> ModelSignature:
    """Feature columns in, prediction columns out (see the module docstring)."""
    inputs = Schema([ColSpec(Array(DataType.double), feature_column(m), required=False) for m in spec.modality_dims])
    outputs = Schema([ColSpec(KINDS[kind], name) for name, kind in
                      output_columns(spec.tasks, list(spec.modality_dims)).items()])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(spec: ModelSpec) -> pd.DataFrame:
    """One row: every modality present, as zero vectors (documentation, and MLflow's check at logging)."""
    return pd.DataFrame([{feature_column(m): [0.0] * d for m, d in spec.modality_dims.items()}])


def log_mlflow_model(checkpoint: str | Path, name: str = "mlflow_model") -> ModelInfo:
    """Log the checkpoint directory as an MLflow pyfunc model into the active run."""
    spec = load_spec(checkpoint)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        code_paths=[str(Path(scd_core.__file__).parent)],
        signature=model_signature(spec),
        input_example=input_example(spec),
        pip_requirements=[f"{p}=={metadata.version(p)}" for p in REQUIREMENTS],
    )


def checkpoint_dir(model_dir: str | Path) -> Path:
    """The checkpoint inside a downloaded model: an MLflow model's ``checkpoint`` artifact, or the
    directory itself (versions registered as bare checkpoints before they were MLflow models)."""
    model_dir = Path(model_dir)
    if (model_dir / "MLmodel").is_file():
        return model_dir / "artifacts" / CHECKPOINT_ARTIFACT
    return model_dir
