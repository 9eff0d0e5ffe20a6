"""Per-modality feature vectors -> the prediction table, for new samples (no labels).

The one place that turns model outputs into answers, shared by ``ray_jobs/predict.py``
(features extracted from videos) and the MLflow model (feature rows posted to a server).

Input: per modality of the model, one feature vector per row (the feature store's
``f_<modality>`` column: a float list of the store's dimension) or None where the row
lacks that modality. Output columns (``output_columns``), one row per input row:

- ``emo_<class>``: the 7 emotion probabilities (softmax over the EMO head), and
  ``emotion``: the most probable class name;
- ``pt_<trait>``: the 5 trait scores in [0, 1];
- ``ah_presence``: P(ambivalence/hesitancy present), and ``ah_label``: "presence" or
  "absence" (the more probable);
- ``present_<modality>``: whether the row had that modality (the model masks the others).

Columns of a task the model was not trained on are left out.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from scd_core.tasks import AH_CLASSES, EMO_CLASSES, PT_TRAITS, feature_column


def output_columns(tasks: Sequence[str], modalities: Sequence[str]) -> dict[str, str]:
    """The prediction table's columns for a model of ``tasks`` over ``modalities``, in order,
    each with its kind: "float" (probabilities, scores), "str" (class names) or "bool"."""
    columns: dict[str, str] = {}
    if "emo" in tasks:
        columns.update({f"emo_{c}": "float" for c in EMO_CLASSES}, emotion="str")
    if "pt" in tasks:
        columns.update({f"pt_{t}": "float" for t in PT_TRAITS})
    if "ah" in tasks:
        columns.update(ah_presence="float", ah_label="str")
    return {**columns, **{f"present_{m}": "bool" for m in modalities}}


def feature_tensors(
    vectors: Mapping[str, Sequence[Sequence[float] | None]], dims: Mapping[str, int]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Rows of feature vectors -> the model's inputs.

    Args:
        vectors: modality -> N vectors (None = missing), for every modality of ``dims``;
            a modality absent from the mapping is missing on every row.
        dims: the model's modality -> feature dimension, in the model's order.

    Returns:
        features: modality -> float32 [N, d_m] (zeros where missing); mask: bool [N, M].

    Raises:
        ValueError naming the column and row: a vector of the wrong length, NaN/inf, an
        unknown column, ragged row counts, or a row with no modality at all.
    """
    unknown = sorted(set(vectors) - set(dims))
    if unknown:
        raise ValueError(f"unknown modality columns {[feature_column(m) for m in unknown]}; "
                         f"the model takes {[feature_column(m) for m in dims]}")
    counts = {len(v) for v in vectors.values()}
    if len(counts) > 1:
        raise ValueError(f"feature columns have different row counts: {sorted(counts)}")
    n = counts.pop() if counts else 0
    features, mask = {}, np.zeros((n, len(dims)), bool)
    for j, (m, dim) in enumerate(dims.items()):
        values = np.zeros((n, dim), np.float32)
        for i, vector in enumerate(vectors.get(m, [None] * n)):
            if vector is None:
                continue
            row = np.asarray(vector, dtype=np.float32)
            if row.shape != (dim,):
                raise ValueError(f"column {feature_column(m)}, row {i}: a vector of length {dim} is expected, "
                                 f"got shape {row.shape}")
            if not np.isfinite(row).all():
                raise ValueError(f"column {feature_column(m)}, row {i}: NaN or infinite values")
            values[i], mask[i, j] = row, True
        features[m] = torch.from_numpy(values)
    empty = np.flatnonzero(~mask.any(axis=1))
    if len(empty):
        raise ValueError(f"row(s) {empty[:10].tolist()}: every modality is missing "
                         f"({', '.join(feature_column(m) for m in dims)}); the model needs at least one")
    return features, torch.from_numpy(mask)


@torch.no_grad()
def predict_vectors(
    model: nn.Module, vectors: Mapping[str, Sequence[Sequence[float] | None]], dims: Mapping[str, int],
    batch_size: int = 1024,
) -> dict[str, np.ndarray]:
    """The prediction table (module docstring) for rows of feature vectors: column -> [N]."""
    features, mask = feature_tensors(vectors, dims)
    if len(mask) == 0:
        raise ValueError("no rows to predict")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(mask), batch_size):
        rows = slice(start, start + batch_size)
        batch = {m: f[rows].to(device) for m, f in features.items()}
        for task, out in model(batch, mask[rows].to(device)).items():
            outputs.setdefault(task, []).append(out.float().cpu())
    model.train(was_training)
    table: dict[str, np.ndarray] = {}
    if "emo" in outputs:
        probs = torch.softmax(torch.cat(outputs["emo"]), dim=1).numpy()
        table.update({f"emo_{c}": probs[:, k] for k, c in enumerate(EMO_CLASSES)})
        table["emotion"] = np.array(EMO_CLASSES, dtype=object)[probs.argmax(axis=1)]
    if "pt" in outputs:
        scores = torch.cat(outputs["pt"]).numpy()
        table.update({f"pt_{t}": scores[:, k] for k, t in enumerate(PT_TRAITS)})
    if "ah" in outputs:
        probs = torch.softmax(torch.cat(outputs["ah"]), dim=1).numpy()
        table["ah_presence"] = probs[:, 1]
        table["ah_label"] = np.array(AH_CLASSES, dtype=object)[probs.argmax(axis=1)]
    table.update({f"present_{m}": mask[:, j].numpy() for j, m in enumerate(dims)})
    return table
