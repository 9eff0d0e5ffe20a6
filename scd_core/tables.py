"""Result tables rendered as text, CSV, Markdown and HTML from one definition.

A :class:`Table` is a title, column names and rows (dicts keyed by column). Numbers are
formatted once (:func:`cell`), so the four renderings show the same figures.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

FORMATS = ("csv", "md", "html")


def cell(value: Any, digits: int = 4) -> str:
    """How a value is shown: floats with ``digits`` decimals, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    digits: int = 4

    def _cells(self) -> list[list[str]]:
        return [[cell(row.get(c), self.digits) for c in self.columns] for row in self.rows]

    def to_text(self) -> str:
        return tabulate(self._cells(), headers=self.columns)

    def to_csv(self) -> str:
        """Raw values (full precision), for further analysis."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def to_markdown(self) -> str:
        body = tabulate(self._cells(), headers=self.columns, tablefmt="github")
        notes = "".join(f"\n{n}" for n in self.notes)
        return f"### {self.title}\n\n{body}\n{notes}\n".replace("\n\n\n", "\n\n")

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self._cells())
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
                "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
                f"<h1>{html.escape(self.title)}</h1><table><tr>{head}</tr>{body}</table>{notes}")

    def write(self, directory: str | Path, stem: str) -> list[Path]:
        """``stem.csv``, ``stem.md`` and ``stem.html`` in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        texts = {"csv": self.to_csv(), "md": self.to_markdown(), "html": self.to_html()}
        paths = []
        for ext in FORMATS:
            path = directory / f"{stem}.{ext}"
            path.write_text(texts[ext])
            paths.append(path)
        return paths


__all__ = ["FORMATS", "Table", "cell"]
