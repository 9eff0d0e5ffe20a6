"""Writing and reading the Parquet feature store, with validation that names the place.

Every check reports ``<file>: column <col>, row <i> (sample_id '<id>'): <problem>``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scd_core.features.schema import (
    MANIFEST,
    SPLITS,
    FeatureStoreError,
    Manifest,
    ModalityInfo,
    expected_columns,
    split_path,
)
from scd_core.tasks import CORPORA, LABEL_COLUMNS, LABEL_RANGES, MODALITIES, TASKS, feature_column

MAX_ROWS_REPORTED = 5  # per column and problem; enough to locate, short enough to read
NEUTRAL, *EMOTIONS = TASKS["emo"].label_columns


def with_neutral(labels: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """EMO labels as raw MOSEI intensities come (neutral 0 or absent) made trainable.

    On a row whose six emotions are all labelled: ``emo_neutral = 1`` where all six are 0
    and neutral is 0 or missing (DESIGN.md: "a row with no emotion present has Neutral =
    1"; otherwise that row has no EMO mass and neutral is never learned); a missing neutral
    is 0 where an emotion is present. Rows without emotion labels and other columns are
    unchanged.
    """
    if not any(c in labels for c in EMOTIONS):
        return dict(labels)
    emotions = np.stack([np.asarray(labels.get(c, np.full(n, np.nan)), np.float64) for c in EMOTIONS], axis=1)
    neutral = np.asarray(labels.get(NEUTRAL, np.full(n, np.nan)), np.float64).copy()
    labelled = ~np.isnan(emotions).any(axis=1)
    none_present = labelled & (emotions == 0).all(axis=1)
    neutral[none_present & ~(neutral > 0)] = 1.0  # NaN > 0 is False: a missing neutral too
    neutral[labelled & ~none_present & np.isnan(neutral)] = 0.0
    return {**labels, NEUTRAL: neutral}


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _feature_array(values: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Rows of ``values`` [N, dim] as a list<float32> column, null where ``keep`` is False.

    A plain list, not a fixed_size_list: pyarrow 25 (the release Ray pins) cannot read
    back a fixed_size_list column with nulls from Parquet. Readers check the length.
    """
    offsets = np.concatenate([[0], np.cumsum(np.where(keep, values.shape[1], 0))])
    kind = pa.ListArray if offsets[-1] < 2**31 else pa.LargeListArray  # int32 offsets up to 2**31 values
    return kind.from_arrays(pa.array(offsets), pa.array(values[keep].reshape(-1)), mask=pa.array(~keep))


class FeatureStoreWriter:
    """Writes splits into ``root`` and keeps ``manifest.json`` in step.

    Opening an existing store adds or replaces splits; its modalities must match.
    """

    def __init__(self, root: str | Path, modalities: Mapping[str, ModalityInfo], source: str = "") -> None:
        self.root = Path(root)
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise FeatureStoreError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
        if (self.root / MANIFEST).exists():
            self.manifest = Manifest.read(self.root)
            if self.manifest.modalities != dict(modalities):
                raise FeatureStoreError(
                    f"{self.root / MANIFEST}: field modalities differs from the writer's; "
                    "write to a new root or remove the store"
                )
        else:
            self.manifest = Manifest(modalities=dict(modalities), source=source)

    def write_split(
        self,
        corpus: str,
        split: str,
        sample_ids: Iterable[str],
        features: Mapping[str, np.ndarray],
        labels: Mapping[str, np.ndarray],
        present: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Write one split.

        Args:
            features: modality -> float array [N, dim]; every manifest modality is required.
            labels: label column -> array [N]; NaN means "no label"; absent columns are null.
                EMO rows with no emotion get neutral = 1 (:func:`with_neutral`).
            present: modality -> bool [N]; False rows are written as null (missing modality).
        """
        if corpus not in CORPORA:
            raise FeatureStoreError(f"unknown corpus {corpus!r}; known: {list(CORPORA)}")
        if split not in SPLITS:
            raise FeatureStoreError(f"unknown split {split!r}; known: {list(SPLITS)}")
        ids = [str(s) for s in sample_ids]
        n = len(ids)
        columns: dict[str, pa.Array] = {
            "sample_id": pa.array(ids, pa.string()),
            "corpus": pa.array([corpus] * n, pa.string()),
            "split": pa.array([split] * n, pa.string()),
        }
        for name in set(features) - set(self.manifest.modalities):
            raise FeatureStoreError(f"{corpus}/{split}: modality {name!r} is not in the manifest")
        for name, info in self.manifest.modalities.items():
            if name not in features:
                raise FeatureStoreError(f"{corpus}/{split}: features for modality {name!r} are missing")
            values = np.ascontiguousarray(features[name], dtype=np.float32)
            if values.shape != (n, info.dim):
                raise FeatureStoreError(
                    f"{corpus}/{split}: features {name!r} have shape {values.shape}, expected {(n, info.dim)}"
                )
            keep = np.ones(n, bool) if present is None or name not in present else np.asarray(present[name], bool)
            columns[feature_column(name)] = _feature_array(values, keep)
        for name in set(labels) - set(LABEL_COLUMNS):
            raise FeatureStoreError(f"{corpus}/{split}: unknown label column {name!r}")
        for name, values in labels.items():
            if np.shape(values) != (n,):
                raise FeatureStoreError(f"{corpus}/{split}: label {name!r} has shape {np.shape(values)}, expected ({n},)")
        labels = with_neutral(labels, n)
        for name in LABEL_COLUMNS:
            raw = np.asarray(labels[name], dtype=np.float64) if name in labels else np.full(n, np.nan)
            null = np.isnan(raw)
            if name == "ah":
                columns[name] = pa.array(np.where(null, 0, raw).astype(np.int8), mask=null)
            else:
                columns[name] = pa.array(raw.astype(np.float32), mask=null)
        table = pa.table(columns)
        path = split_path(self.root, corpus, split)
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        self.manifest.corpora.setdefault(corpus, {})[split] = n
        _atomic_write(self.root / MANIFEST, lambda tmp: Path(tmp).write_text(self.manifest.to_json()))
        return path


@dataclass
class SplitArrays:
    """One validated split as NumPy arrays.

    features[m]: float32 [N, dim] (zeros where missing); present[m]: bool [N];
    labels[col]: float64 [N] with NaN where there is no label.
    """

    corpus: str
    split: str
    sample_ids: np.ndarray
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sample_ids)


class _Problems:
    """Collects errors, naming at most MAX_ROWS_REPORTED rows per (column, problem)."""

    def __init__(self, path: Path, ids: np.ndarray | None) -> None:
        self.path, self.ids, self.errors = path, ids, []

    def add(self, message: str, column: str | None = None) -> None:
        where = f"{self.path}: column {column}" if column else str(self.path)
        self.errors.append(f"{where}: {message}")

    def rows(self, column: str, bad: np.ndarray, problem: str) -> None:
        idx = np.flatnonzero(bad)
        for i in idx[:MAX_ROWS_REPORTED]:
            sid = f" (sample_id {self.ids[i]!r})" if self.ids is not None else ""
            self.add(f"row {i}{sid}: {problem}", column)
        if len(idx) > MAX_ROWS_REPORTED:
            self.add(f"{len(idx) - MAX_ROWS_REPORTED} more rows: {problem}", column)


def _read_features(table: pa.Table, column: str, info: ModalityInfo, report: _Problems):
    col = table.column(column).combine_chunks()
    n = len(col)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        report.add(f"type {col.type} is not a list of floats", column)
        return None, None
    present = ~col.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    wrong = present & (np.nan_to_num(lengths, nan=-1) != info.dim)
    if wrong.any():
        first = int(lengths[np.flatnonzero(wrong)[0]])
        report.rows(column, wrong, f"feature length {first} != manifest dim {info.dim}")
        return None, None
    flat = pc.list_flatten(col)
    if flat.type != pa.float32():  # the contract; float64 would double memory and hide a writer bug
        report.add(f"values of type {flat.type}: features are float32 lists (write them through "
                   "scd_core.features.FeatureStoreWriter)", column)
        return None, None
    values = np.zeros((n, info.dim), np.float32)
    values[present] = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, info.dim)
    nonfinite = ~np.isfinite(values).all(axis=1)
    if nonfinite.any():
        report.rows(column, nonfinite, "NaN or inf in features")
    return values, present


def _read_labels(table: pa.Table, report: _Problems) -> dict[str, np.ndarray]:
    labels = {}
    for name in LABEL_COLUMNS:
        col = table.column(name).combine_chunks()
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
            report.add(f"type {col.type} is not numeric", name)
            continue
        values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        null = col.is_null().to_numpy(zero_copy_only=False)
        report.rows(name, np.isnan(values) & ~null, "label is NaN (write null for 'no label')")
        low, high = LABEL_RANGES[name]
        out = ~null & ((values < low) | (values > high))
        if name == "ah":
            out |= ~null & (values != np.round(values))
        report.rows(name, out, f"label out of range [{low}, {high}]")
        labels[name] = np.where(null, np.nan, values)
    # A task's label group is all-or-nothing per row: a partial label is a writer bug.
    for task in TASKS.values():
        if len(task.label_columns) > 1:
            nulls = np.stack([np.isnan(labels[c]) for c in task.label_columns if c in labels], axis=1)
            report.rows(",".join(task.label_columns), nulls.any(1) & ~nulls.all(1), f"partial {task.name} label")
    if all(c in labels for c in TASKS["emo"].label_columns):
        emo = np.stack([labels[c] for c in TASKS["emo"].label_columns], axis=1)
        report.rows(",".join(TASKS["emo"].label_columns), ~np.isnan(emo).any(1) & (emo == 0).all(1),
                    "EMO label with no mass (all seven 0): a row with no emotion needs emo_neutral = 1")
    return labels


def read_split(root: str | Path, corpus: str, split: str, manifest: Manifest | None = None) -> SplitArrays:
    """Read and validate one split; raise ``FeatureStoreError`` listing every problem."""
    arrays, errors = _load_split(Path(root), corpus, split, manifest or Manifest.read(Path(root)))
    if errors:
        raise FeatureStoreError("\n".join(errors))
    return arrays


def _load_split(root: Path, corpus: str, split: str, manifest: Manifest) -> tuple[SplitArrays | None, list[str]]:
    path = split_path(root, corpus, split)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        return None, [f"{path}: cannot read: {err}"]
    report = _Problems(path, None)
    names = set(table.column_names)
    for column in sorted(names - set(expected_columns(manifest.modalities))):
        if column.startswith("f_"):
            report.add(f"unknown modality {column[2:]!r} (manifest has {sorted(manifest.modalities)})", column)
        else:
            report.add("unexpected column", column)
    for column in expected_columns(manifest.modalities):
        if column not in names:
            report.add("missing", column)
    if table.num_rows == 0:
        report.add("no rows: write the split's samples, or remove the file and its entry in the manifest")
    id_type = table.schema.field("sample_id").type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        report.add(f"type {id_type}: sample ids are strings", "sample_id")
    if report.errors:
        return None, report.errors

    ids = table.column("sample_id").to_numpy(zero_copy_only=False).astype(object)
    report.ids = ids
    report.rows("sample_id", np.array([s is None or s == "" for s in ids]), "empty sample_id")
    # Stable sort keeps file order among equal ids, so every later occurrence is flagged.
    id_strings = ids.astype(str)
    order = np.argsort(id_strings, kind="stable")
    repeats = np.r_[False, id_strings[order][1:] == id_strings[order][:-1]]
    duplicated = np.zeros(len(ids), bool)
    duplicated[order[repeats]] = True
    report.rows("sample_id", duplicated, "duplicate sample_id (first seen earlier in the file)")
    for column, expected in (("corpus", corpus), ("split", split)):
        values = table.column(column).to_numpy(zero_copy_only=False).astype(str)
        report.rows(column, values != expected, f"expected {expected!r} (the file's place in the store)")
    expected_rows = manifest.corpora.get(corpus, {}).get(split)
    if expected_rows is not None and expected_rows != len(ids):
        report.add(f"{len(ids)} rows, manifest says {expected_rows}")

    features, present = {}, {}
    for name, info in manifest.modalities.items():
        features[name], present[name] = _read_features(table, feature_column(name), info, report)
    if all(p is not None for p in present.values()) and present:
        none_present = ~np.stack(list(present.values()), axis=1).any(axis=1)
        report.rows(",".join(feature_column(m) for m in present), none_present, "every modality is missing")
    labels = _read_labels(table, report)
    if report.errors:
        return None, report.errors
    return SplitArrays(corpus, split, ids.astype(str), features, present, labels), []


def validate_store(root: str | Path) -> tuple[list[SplitArrays], list[str]]:
    """Validate every split named by the manifest or present on disk.

    Returns the splits that passed and the list of errors (empty when the store is valid).
    """
    root = Path(root)
    try:
        manifest = Manifest.read(root)
    except FeatureStoreError as err:
        return [], [str(err)]
    errors: list[str] = []
    on_disk = {(p.parent.name, p.stem) for p in root.glob("*/*.parquet")}
    listed = {(c, s) for c, splits in manifest.corpora.items() for s in splits}
    for corpus, split in sorted(on_disk - listed):
        errors.append(f"{split_path(root, corpus, split)}: not listed in {root / MANIFEST} field corpora")
    for corpus, split in sorted(listed - on_disk):
        errors.append(f"{split_path(root, corpus, split)}: listed in {root / MANIFEST} but missing")
    splits = []
    for corpus, split in sorted(on_disk & listed):
        arrays, problems = _load_split(root, corpus, split, manifest)
        errors.extend(problems)
        if arrays is not None:
            splits.append(arrays)
    return splits, errors
