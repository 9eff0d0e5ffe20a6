"""Console progress: one table row per epoch, columns fixed by the first report."""

from __future__ import annotations

import math
import sys
from typing import TextIO

from scd_core.evaluation import METRICS


class EpochTable:
    """Prints a header once, then one aligned row per ``EpochReport``.

    Columns: epoch, dev score, the eight metrics of Table 1 (``-`` when a corpus has no
    dev split), the six GradNorm weights, the learning rate and seconds; ``*`` marks a
    new best epoch.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream  # None: whatever sys.stdout is when a row is printed
        self.weight_names: list[str] | None = None

    def _line(self, cells: list[str]) -> None:
        print("  ".join(c.rjust(11) for c in cells), file=self.stream or sys.stdout, flush=True)

    def __call__(self, report) -> None:
        if self.weight_names is None:
            self.weight_names = list(report.weights)
            self._line(["epoch", "dev_score", *METRICS, *(f"w_{w}" for w in self.weight_names), "lr", "seconds"])

        def num(value: float | None, digits: int = 4) -> str:
            return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        self._line([
            f"{report.epoch}{'*' if report.best else ' '}",
            num(report.score),
            *(num(report.metrics.get(m)) for m in METRICS),
            *(num(report.weights[w], 3) for w in self.weight_names),
            f"{report.lr:.1e}",
            num(report.seconds, 1),
        ])
