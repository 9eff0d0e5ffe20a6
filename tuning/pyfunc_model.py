"""The MLflow pyfunc model of an MCDM checkpoint, as an MLflow "model from code" file.

MLflow copies this file into the model directory and runs it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``); nothing is unpickled. The weights
are the checkpoint artifact (``artifacts/checkpoint``: ``model.safetensors`` + ``config.json``)
and ``scd_core`` travels with the model as code (``tuning.mlflow_model.log_mlflow_model``).

Input: a table with one ``f_<modality>`` column per modality of the model, each cell a
feature vector (a list of the training store's dimension) or null when the row lacks that
modality. Output: ``scd_core.inference``'s prediction table, one row per input row.
"""

from __future__ import annotations

import math

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from scd_core.checkpoint import load_model
from scd_core.inference import predict_vectors
from scd_core.tasks import feature_column


def _cell(value):
    """A feature cell as a vector, or None where it is missing (null, or NaN as pandas fills gaps)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


class MCDMModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model, spec = load_model(context.artifacts["checkpoint"])  # safetensors + JSON
        self.dims = spec.modality_dims

    def predict(self, context, model_input, params=None):
        """Feature rows -> prediction rows; a bad row fails the request with its column and row
        (an ``MlflowException``, which the scoring server answers as a 400 with the message)."""
        frame = pd.DataFrame(model_input)
        unknown = [c for c in frame.columns if c not in {feature_column(m) for m in self.dims}]
        try:
            if unknown:
                raise ValueError(f"unknown columns {unknown}; the model takes {[feature_column(m) for m in self.dims]}")
            vectors = {m: [_cell(v) for v in frame[feature_column(m)]] for m in self.dims if feature_column(m) in frame}
            return pd.DataFrame(predict_vectors(self.model, vectors, self.dims))
        except ValueError as err:
            raise MlflowException(str(err), INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(MCDMModel())
