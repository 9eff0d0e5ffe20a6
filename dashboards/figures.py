"""The paper's figures, drawn with matplotlib from a trial's history and predictions.

Every function returns a :class:`matplotlib.figure.Figure` and keeps no global state (no
``pyplot`` figure registry), so trials can draw in parallel worker processes:

* :func:`gradnorm_figure`: task-weight trajectories of both GradNorm branches above the
  per-task dev metrics, over epochs (paper Fig. 7).
* :func:`learning_curves`: the training losses and the dev score over epochs.
* :func:`confusion_figure`: a row-normalised confusion matrix (paper Fig. 9).
* :func:`correlation_figure`: correlations between the three tasks' predictions
  (paper Fig. 8).
* :func:`pseudo_label_figure`: per epoch, the acceptance of each task's pseudo-labels and
  the class shares of the accepted ones (a majority class taking them all shows here).
* :func:`parallel_coordinates_figure`: a sweep's trials, one line each across the objective
  and the parameters they varied, coloured by the objective.
"""

from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: trials run on cluster nodes without a display

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scd_core.evaluation import TASK_METRICS
from scd_core.tasks import AH_CLASSES, EMO_CLASSES, PT_TRAITS, TASK_NAMES

TASK_COLORS = {"emo": "tab:red", "pt": "tab:blue", "ah": "tab:green"}
BRANCH_STYLES = {"sup": "-", "ssl": "--"}
BRANCH_TITLES = {"sup": "supervised", "ssl": "semi-supervised"}


def _series(history: Sequence[Mapping], group: str, key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of ``history[i][group][key]`` where present."""
    points = [(h["epoch"], h[group][key]) for h in history if key in h.get(group, {})]
    return [p[0] for p in points], [p[1] for p in points]


def gradnorm_figure(history: Sequence[Mapping], title: str = "") -> Figure:
    """Paper Fig. 7: GradNorm task weights (top) and per-task dev metrics (bottom).

    ``history``: one mapping per epoch with ``epoch``, ``weights`` (``<branch>_<task>``)
    and ``metrics`` (``<corpus>_<metric>``), as ``scd_core.trainer.EpochReport``.
    """
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for branch, style in BRANCH_STYLES.items():
        for task in TASK_NAMES:
            x, y = _series(history, "weights", f"{branch}_{task}")
            if x:
                top.plot(x, y, style, color=TASK_COLORS[task], marker="o", ms=3,
                         label=f"{task.upper()} ({BRANCH_TITLES[branch]})")
    top.set_ylabel("task weight w_t")
    top.set_title(title or "GradNorm task weights")
    top.legend(fontsize=8, ncols=2)
    for task, names in TASK_METRICS.items():
        for name, style in zip(names, ("-", ":")):
            x, y = _series(history, "metrics", name)
            if x:
                bottom.plot(x, y, style, color=TASK_COLORS[task], marker="o", ms=3, label=name)
    for name, style in (("meld_mf1", "-."), ("meld_wf1", (0, (1, 3)))):
        x, y = _series(history, "metrics", name)
        if x:
            bottom.plot(x, y, linestyle=style, color="tab:purple", label=f"{name} (zero-shot)")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("dev metric")
    bottom.legend(fontsize=8, ncols=3)
    return fig


def learning_curves(history: Sequence[Mapping], title: str = "") -> Figure:
    """Training losses per branch and task (left) and the dev score (right), per epoch."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for branch, style in BRANCH_STYLES.items():
        for task in TASK_NAMES:
            x, y = _series(history, "losses", f"{branch}_{task}")
            if x:
                left.plot(x, y, style, color=TASK_COLORS[task], marker="o", ms=3, label=f"{branch}_{task}")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("training loss")
    left.set_yscale("log")
    left.legend(fontsize=8, ncols=2)
    epochs = [h["epoch"] for h in history]
    right.plot(epochs, [h["score"] for h in history], marker="o", color="black")
    best = max(range(len(history)), key=lambda i: history[i]["score"], default=None)
    if best is not None:
        right.axvline(history[best]["epoch"], color="grey", linestyle=":", label="best epoch")
        right.legend(fontsize=8)
    right.set_ylabel("dev score")
    fig.suptitle(title or "Learning curves")
    return fig


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """Paper Fig. 9: rows are true classes, normalised to 1; cells show the share and count."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = 1.2 + 0.75 * len(labels)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{shares[i, j]:.2f}\n({matrix[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of true class")
    return fig


def correlation_figure(values: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Paper Fig. 8: Pearson correlations between prediction columns (``values``: ``[N, K]``)."""
    corr = np.corrcoef(np.asarray(values, dtype=float), rowvar=False)
    fig = Figure(figsize=(1.5 + 0.55 * len(names), 1 + 0.5 * len(names)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="Pearson r")
    return fig


def pseudo_label_figure(history: Sequence[Mapping], title: str = "") -> Figure:
    """Pseudo-label diagnostics per epoch: acceptance per task, then stacked class shares of the
    accepted EMO and AH pseudo-labels and, per PT trait, the share pushed to the high side.

    ``history``: as :func:`gradnorm_figure`, with ``acceptance`` (task -> rate) and
    ``pseudo_labels`` (``<task>_<class>`` / ``pt_<trait>_high`` -> share).
    """
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    for task in TASK_NAMES:
        x, y = _series(history, "acceptance", task)
        if x:
            axes[0].plot(x, y, color=TASK_COLORS[task], marker="o", ms=3, label=task.upper())
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("accepted share of candidates", fontsize=9)
    for ax, task, classes in ((axes[1], "emo", EMO_CLASSES), (axes[2], "ah", AH_CLASSES)):
        keys = [f"{task}_{c}" for c in classes]
        epochs = [h for h in history if any(k in h.get("pseudo_labels", {}) for k in keys)]
        if epochs:  # a class absent from an epoch's shares took none of its pseudo-labels
            values = np.nan_to_num([[h["pseudo_labels"].get(k, 0.0) for h in epochs] for k in keys])
            ax.stackplot([h["epoch"] for h in epochs], values, labels=classes,
                         colors=[matplotlib.colormaps["tab10"](i) for i in range(len(classes))])
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
        ax.set_ylim(0, 1)
        ax.set_title(f"{task.upper()} pseudo-label classes", fontsize=9)
    for trait in PT_TRAITS:
        x, y = _series(history, "pseudo_labels", f"pt_{trait}_high")
        if x:
            axes[3].plot(x, y, marker="o", ms=3, label=trait)
    axes[3].set_ylim(0, 1.05)
    axes[3].set_title("PT: share pushed to 1", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (axes[0], axes[3]):
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title or "Pseudo-labels")
    return fig


# viridis without its light-yellow end: every trial's line stays dark enough to see on white.
TRIAL_CMAP = LinearSegmentedColormap.from_list("viridis_dark",
                                               matplotlib.colormaps["viridis"](np.linspace(0, 0.82, 64)))


def _label(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _axis(values: Sequence[Any], log: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in [0, 1] of one parameter's values (None: missing) and its tick labels.

    Numbers spread linearly (or on a log scale, also when they span two decades or more) between
    their smallest and largest; anything
    else (categories, modality lists) is spaced evenly in sorted order.
    """
    present = [v for v in values if v is not None]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if numeric and len(set(present)) > 1:
        log = log or (min(present) > 0 and max(present) >= 100 * min(present))  # e.g. a grid of 1e-2, 1e-3, 1e-4
        f = np.log10 if log else (lambda x: x)
        low, high = f(min(present)), f(max(present))
        pos = [None if v is None else float((f(v) - low) / (high - low)) for v in values]
        ticks = sorted({v for v in present})
        if len(ticks) > 5:  # a continuous parameter: its range and middle
            ticks = [min(present), 10 ** ((low + high) / 2) if log else (low + high) / 2, max(present)]
        labelled: list[tuple[float, str]] = []
        for t in reversed(ticks):  # from the top; a value too close to the one above would overwrite it
            at = float((f(t) - low) / (high - low))
            if not labelled or labelled[-1][0] - at >= 0.06:
                labelled.append((at, _label(t)))
        return pos, labelled
    levels = sorted({str(v) for v in present}, key=lambda x: (len(x), x) if numeric else x)
    step = 1 / (len(levels) - 1) if len(levels) > 1 else 0
    where = {level: 0.5 if len(levels) == 1 else i * step for i, level in enumerate(levels)}
    return [None if v is None else where[str(v)] for v in values], [(where[level], level) for level in levels]


def parallel_coordinates_figure(params: Sequence[Mapping[str, Any]], scores: Sequence[float], names: Sequence[str],
                                objective: str, log_scale: Sequence[str] = (), title: str = "",
                                definition: str = "") -> Figure:
    """A sweep's trials as lines across the objective axis and one axis per parameter.

    ``params[i]`` (name -> value, a name may be missing) and ``scores[i]`` describe trial ``i``;
    ``names`` are the parameter axes, ``log_scale`` those drawn on a log scale, ``objective`` names
    the score (its axis and the colour bar) and ``definition`` says what it is (under the axes).
    Every trial is one line coloured by its score (a colour map with no white end, the best drawn
    on top), each axis has its values written beside it, and the labels stay clear of the colour bar.
    """
    columns = [(objective, list(map(float, scores)), False)] + \
        [(name, [p.get(name) for p in params], name in log_scale) for name in names]
    axes = [_axis(values, log) for _, values, log in columns]
    longest = max((len(label) for _, ticks in axes for _, label in ticks), default=4)
    rows = max((len(ticks) for _, ticks in axes), default=2)
    width = max(7.0, 1.3 * len(columns) + 0.06 * longest + 2.5)
    # White and matplotlib's defaults whatever the global style (Optuna's plots switch pyplot to ggplot's grey).
    fig = Figure(figsize=(width, max(4.5, 0.2 * rows + 2.5)), layout="constrained", facecolor="white")
    ax = fig.subplots()
    ax.set_facecolor("white")
    ax.grid(False)
    norm = Normalize(min(scores), max(scores)) if max(scores) > min(scores) else Normalize(min(scores) - 1e-9,
                                                                                            max(scores) + 1e-9)
    x = np.arange(len(columns), dtype=float)
    for i in np.argsort(scores):  # the best trials last: on top
        y = np.array([np.nan if pos[i] is None else pos[i] for pos, _ in axes], dtype=float)
        ax.plot(x, y, color=TRIAL_CMAP(norm(scores[i])), lw=1.6, marker="o", ms=3, alpha=0.9)
    for j, (_, ticks) in enumerate(axes):
        ax.axvline(j, color="0.55", lw=0.8, zorder=0)
        for pos, label in ticks:  # on an opaque box: the lines leaving the axis pass under it
            ax.text(j + 0.05, pos, label, fontsize=7, va="center", ha="left", clip_on=False, zorder=5,
                    color="black", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
    ax.set_xticks(x, [name for name, _, _ in columns], rotation=20, ha="right", fontsize=8, color="black")
    ax.set_xlim(-0.15, len(columns) - 0.6)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    ax.set_xlabel(textwrap.fill(definition, int((width - 1.5) * 13)), fontsize=8, color="black")  # fits the width
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"Parallel coordinates of {len(scores)} trials", color="black")
    bar = fig.colorbar(ScalarMappable(norm, TRIAL_CMAP), ax=ax, pad=0.02)
    bar.set_label(objective, fontsize=8)
    return fig


__all__ = ["confusion_figure", "correlation_figure", "gradnorm_figure", "learning_curves",
           "parallel_coordinates_figure", "pseudo_label_figure"]
