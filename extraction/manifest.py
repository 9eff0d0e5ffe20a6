"""Manifest tables -> sample rows: ids, video paths, given texts, labels in the store's columns.

Problems name the file, row and column; group splits keep whole groups (a MOSEI video,
an FIv2 person) inside one split.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import Any

from extraction.config import ExtractionConfig, GroupSplit, Source
from scd_core.tasks import EMO_CLASSES, LABEL_RANGES, TASKS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
MAX_SKIPPED_NAMED = 20  # a folder's non-video entries named in the warning


class ManifestError(ValueError):
    """A manifest is unusable; the message names file, row and column."""


def _group_split(sample_id: str, rule: GroupSplit) -> str:
    match = re.match(rule.group, sample_id)
    group = match.group(1) if match else sample_id
    # A stable hash (not Python's salted hash) so the same group lands in the same split on every run.
    u = int(hashlib.sha256(f"{rule.seed}:{group}".encode()).hexdigest()[:12], 16) / 16**12
    edge = 0.0
    for split, fraction in rule.fractions.items():
        edge += fraction
        if u < edge:
            return split
    return list(rule.fractions)[-1]


def _number(value: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ManifestError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ManifestError(f"{where}: {value!r} is not finite")
    return x


def _labels(row: dict[str, str], source: Source, where: str) -> dict[str, float]:
    cols = source.columns
    labels: dict[str, float] = {}
    for store_column, csv_column in cols.labels.items():
        raw = row.get(csv_column, "")
        if raw == "":
            continue
        value = _number(raw, f"{where}, column {csv_column}")
        low, high = LABEL_RANGES[store_column]
        if not low <= value <= high:
            raise ManifestError(f"{where}, column {csv_column}: {value} outside [{low}, {high}] for {store_column}")
        labels[store_column] = value
    if cols.emotion:
        name = row.get(cols.emotion, "").strip().lower()
        name = cols.emotion_names.get(name, name)
        if name not in EMO_CLASSES:
            raise ManifestError(f"{where}, column {cols.emotion}: unknown emotion {name!r}")
        labels.update({c: float(c == f"emo_{name}") for c in TASKS["emo"].label_columns})
    return labels


def _folder_videos(folder: Path) -> list[dict[str, Any]]:
    """One record per video file of ``folder``; what else it holds is named in a warning, not dropped silently."""
    entries = sorted(folder.iterdir())
    videos = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in videos]
    if skipped:
        shown = ", ".join(skipped[:MAX_SKIPPED_NAMED]) + (" ..." if len(skipped) > MAX_SKIPPED_NAMED else "")
        warnings.warn(f"{folder}: skipped {len(skipped)} entries that are not videos "
                      f"({', '.join(VIDEO_SUFFIXES)}): {shown}", stacklevel=2)
    return [{"video_name": p.stem, "_path": str(p)} for p in videos]


def read_source(source: Source, cfg: ExtractionConfig) -> list[dict[str, Any]]:
    """One dict per sample: sample_id, corpus, split, video, transcript, description, labels."""
    if source.videos is not None:
        folder = cfg.path(source.videos)
        if not folder.is_dir():
            raise ManifestError(f"{folder}: not a folder of videos")
        records = _folder_videos(folder)
        origin, media_root = folder, folder
    else:
        origin = cfg.path(source.manifest)
        try:
            with open(origin, newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
        except OSError as err:
            raise ManifestError(f"{origin}: cannot read: {err}") from None
        media_root = cfg.path(source.media_root) if source.media_root else origin.parent
    records = records[: source.limit]
    cols = source.columns
    needed = [c for c in (cols.video, cols.transcript, cols.description, cols.emotion, *cols.labels.values()) if c]
    if records and source.manifest is not None:
        missing = [c for c in needed if c not in records[0]]
        if missing:
            raise ManifestError(f"{origin}: missing columns {missing} (has {list(records[0])})")
    rows, seen = [], {}
    for i, record in enumerate(records):
        where = f"{origin}: row {i + 2}"  # +2: the header is line 1
        try:
            sample_id = record["video_name"] if source.videos is not None else cols.sample_id.format(**record)
        except KeyError as err:
            raise ManifestError(f"{where}: sample_id template {cols.sample_id!r} needs column {err}") from None
        except ValueError as err:  # a format spec the value does not take ({name:d} on text)
            raise ManifestError(f"{where}: sample_id template {cols.sample_id!r}: {err}") from None
        if sample_id in seen:
            raise ManifestError(f"{where}: duplicate sample id {sample_id!r} (first at row {seen[sample_id]})")
        seen[sample_id] = i + 2
        video = record.get("_path") or (str(media_root / record[cols.video]) if cols.video else None)
        rows.append({
            "sample_id": sample_id,
            "corpus": source.corpus,
            "split": source.split or _group_split(sample_id, source.group_split),
            "video": video or "",
            # Texts are always strings (Ray needs one column type); has_* tells "given but empty"
            # (an error) from "not given" (made from the video, or simply absent as in MELD).
            "transcript": (record.get(cols.transcript) or "").strip() if cols.transcript else "",
            "has_transcript": cols.transcript is not None,
            "description": (record.get(cols.description) or "").strip() if cols.description else "",
            "has_description": cols.description is not None,
            "labels": _labels(record, source, where),
        })
    return rows


def read_sources(cfg: ExtractionConfig) -> list[dict[str, Any]]:
    rows = [row for source in cfg.sources for row in read_source(source, cfg)]
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["corpus"], row["sample_id"])
        seen[key] = seen.get(key, 0) + 1
    dup = [k for k, n in seen.items() if n > 1]
    if dup:
        raise ManifestError(f"sample ids appear in several sources of the same corpus: {dup[:5]}")
    return rows
