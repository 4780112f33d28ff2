"""What `ecgsearch data check` reports about a loaded dataset: sizes and class balance per split, patients
per split and patients shared between training and test, the sampling rate, and the fingerprint.

The report is plain data and text; the CLI only prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from search.data.dataset import ASSUMED_WINDOW_S, SPLITS, ECGDataset

_SHOWN_PATIENTS = 10


@dataclass(frozen=True)
class SplitSummary:
    split: str
    shape: tuple[int, ...]
    windows: int
    labelled_1: int
    patients: int | None  # None: the dataset has no group ids

    def row(self) -> list[str]:
        share = f"{100 * self.labelled_1 / self.windows:.1f}" if self.windows else "-"
        cells = [
            self.split,
            " × ".join(str(n) for n in self.shape),
            f"{self.windows:,}",
            f"{self.labelled_1:,}",
            f"{self.windows - self.labelled_1:,}",
            share,
        ]
        return cells if self.patients is None else [*cells, f"{self.patients:,}"]


@dataclass(frozen=True)
class CheckReport:
    """A valid dataset, summarised: a table (`columns`, `rows()`), then `notes` and `warnings` lines."""

    source: str
    splits: list[SplitSummary]
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.source} — valid"

    @property
    def columns(self) -> list[str]:
        columns = ["split", "X shape", "windows", "label 1", "label 0", "% label 1"]
        return columns if self.splits[0].patients is None else [*columns, "patients"]

    def rows(self) -> list[list[str]]:
        return [summary.row() for summary in self.splits]


def check_report(data: ECGDataset) -> CheckReport:
    """The summary of `data` that `data check` prints (the dataset has passed every check to get here)."""
    splits = []
    for split in SPLITS:
        X, y = data.split(split)
        groups = data.groups(split)
        patients = None if groups is None else len(torch.unique(groups))
        splits.append(SplitSummary(split, tuple(X.shape), len(y), int((y == 1).sum()), patients))
    fingerprint = data.fingerprint()
    notes = []
    if data.meta:
        notes.append(f"meta.json: {'synthetic' if data.meta.get('synthetic') else data.meta.get('dataset', 'unknown')}")
    notes.append(sampling_rate_line(data))
    if not data.has_groups:
        notes.append(
            "patients: unknown (no groups_train/val/test): --cv will treat each window as its own patient, so "
            "windows of one patient can fall in different folds and the cross-validated score will be optimistic"
        )
    notes.append(f"fingerprint: {fingerprint}")
    warnings = shared_patient_warnings(data) if data.has_groups else []
    return CheckReport(data.source, splits, fingerprint, notes, warnings)


def sampling_rate_line(data: ECGDataset) -> str:
    if data.fs is None:
        return (
            f"sampling rate: unknown (meta.json gives no fs); models that need it (baseline removal, beat timing) "
            f"will assume {ASSUMED_WINDOW_S:g}-second windows, i.e. {data.seq_len / ASSUMED_WINDOW_S:g} Hz "
            f"for {data.seq_len} samples"
        )
    return f"sampling rate: {data.fs:g} Hz ({data.seq_len / data.fs:g}-second windows of {data.seq_len} samples)"


def shared_patient_warnings(data: ECGDataset) -> list[str]:
    """One line per kind of patient overlap: training (train/val) with test, and train with val."""
    ids = {split: set(torch.unique(data.groups(split)).tolist()) for split in SPLITS}
    warnings = []
    in_training_and_test = sorted((ids["train"] | ids["val"]) & ids["test"])
    if in_training_and_test:
        where = [f"{p} ({', '.join(s for s in SPLITS if p in ids[s])})" for p in in_training_and_test]
        warnings.append(
            f"{_patients(len(where))} in both a training split and test: {_listed(where)}; "
            "test scores on their windows are not scores on unseen patients"
        )
    in_train_and_val = sorted(ids["train"] & ids["val"])
    if in_train_and_val:
        warnings.append(
            f"{_patients(len(in_train_and_val))} in both train and val: {_listed([str(p) for p in in_train_and_val])}; "
            "validation scores (and the selection made on them) will be optimistic"
        )
    return warnings


def _patients(n: int) -> str:
    return "1 patient is" if n == 1 else f"{n} patients are"


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN_PATIENTS} more" if len(items) > _SHOWN_PATIENTS else ""
    return ", ".join(items[:_SHOWN_PATIENTS]) + more
