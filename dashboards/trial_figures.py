"""The figures of one trained model: what each trial logs to its MLflow run (``figures/``).

``trial_figures(model, dev, history)`` draws, from the training history and the best
model's predictions on the dev splits:

* ``gradnorm.png`` (Fig. 7), ``learning_curves.png`` and ``pseudo_labels.png`` (acceptance and
  class shares of the pseudo-labels) from the history;
* ``confusion_<corpus>.png`` (Fig. 9) for the single-label corpora (MELD's 7 emotions,
  BAH's absence/presence);
* ``task_correlation.png`` (Fig. 8): correlations of the emotion probabilities, the five
  trait scores and the A/H probability, predicted on every dev row of every corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dashboards.figures import (confusion_figure, correlation_figure, gradnorm_figure, learning_curves,
                                pseudo_label_figure)
from scd_core.checkpoint import load_model
from scd_core.evaluation import metric_inputs, predict
from scd_core.features import CorpusTensors
from scd_core.metrics import confusion_matrix
from scd_core.tasks import AH_CLASSES, CORPORA, EMO_CLASSES, PT_TRAITS


def _class_names(corpus: str) -> tuple[str, ...] | None:
    """Class labels of a single-label corpus, None for the others (MOSEI, FIv2)."""
    spec = CORPORA[corpus]
    if spec.task == "ah":
        return AH_CLASSES
    if spec.task == "emo" and spec.emo_single_label:
        return EMO_CLASSES
    return None


def prediction_columns(outputs: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, list[str]]:
    """Per-row task predictions as columns: emotion probabilities, traits, P(A/H presence)."""
    columns, names = [], []
    if "emo" in outputs:
        columns.append(torch.softmax(outputs["emo"].float(), dim=1))
        names += [f"emo_{c}" for c in EMO_CLASSES]
    if "pt" in outputs:
        columns.append(outputs["pt"].float())
        names += [f"pt_{t}" for t in PT_TRAITS]
    if "ah" in outputs:
        columns.append(torch.softmax(outputs["ah"].float(), dim=1)[:, 1:])
        names.append("ah_presence")
    return torch.cat(columns, dim=1).cpu().numpy(), names


def trial_figures(model: nn.Module, dev: Mapping[str, CorpusTensors], history: Sequence[Mapping],
                  title: str = "") -> dict[str, Figure]:
    """File name -> figure (see the module docstring)."""
    figures = {
        "gradnorm.png": gradnorm_figure(history, f"GradNorm task weights {title}".strip()),
        "learning_curves.png": learning_curves(history, f"Learning curves {title}".strip()),
        "pseudo_labels.png": pseudo_label_figure(history, f"Pseudo-labels {title}".strip()),
    }
    columns = []
    for corpus, data in dev.items():
        outputs = predict(model, data)
        values, names = prediction_columns(outputs)
        columns.append(values)
        labels = _class_names(corpus)
        if labels is not None:
            _, target, pred = metric_inputs(corpus, outputs, data)
            matrix = confusion_matrix(target, pred, len(labels))
            figures[f"confusion_{corpus}.png"] = confusion_figure(matrix, labels, f"{corpus.upper()} dev {title}".strip())
    if columns and len(names) > 1:  # a correlation needs two columns (an AH-only model has one)
        stacked = np.concatenate(columns)
        figures["task_correlation.png"] = correlation_figure(
            stacked, names, f"Correlation of predicted tasks, {len(stacked)} dev rows {title}".strip())
    return figures


def checkpoint_figures(best: str | Path, dev: Mapping[str, CorpusTensors], history: Sequence[Mapping],
                       out: str | Path, title: str = "") -> list[Path]:
    """Draw :func:`trial_figures` for the model in the checkpoint directory ``best`` into ``out``."""
    model, _ = load_model(best, next(iter(dev.values())).device if dev else "cpu")
    return save_figures(trial_figures(model, dev, history, title), out)


def save_figures(figures: Mapping[str, Figure], directory: str | Path, dpi: int = 110) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        fig.savefig(directory / name, dpi=dpi)
        paths.append(directory / name)
    return paths


__all__ = ["checkpoint_figures", "prediction_columns", "save_figures", "trial_figures"]
