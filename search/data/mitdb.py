"""MIT-BIH Arrhythmia Database (raw WFDB) -> the six-file layout, with an inter-patient split.

Splits follow de Chazal et al. (IEEE TBME 2004): DS1 records feed training and validation (split by
record, so no patient is in both), DS2 records are the test set. The paced records 102, 104, 107 and
217 are in neither DS1 nor DS2; they are left out by default (as AAMI does) and, when kept, join the
training/validation pool so the test set stays the one the literature reports on. Records 201 (DS1)
and 202 (DS2) come from the same subject: that overlap is part of the published split and is kept.

Each window carries the patient it was recorded from (`groups_<split>.pt`, see `patient_of`), so a
search can keep every patient in one cross-validation fold.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.errors import DataError
from search.data.store import completed_write, write_layout
from search.data.validation import SPLITS
from search.data.wfdb_records import ABNORMAL_MARKS, RecordWindows, read_windows
from search.errors import UsageError

# fmt: off
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
       "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
       "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")
# fmt: on
PACED = ("102", "104", "107", "217")
# Records of one subject under another record's name. The database's directory of records gives one
# such pair: 201 and 202, two recordings of the same man. Every other record is its own patient.
SAME_SUBJECT_AS = {"202": "201"}
# Output lead -> header lead names that may fill it, in order of preference.
LEAD_SLOTS = {"II": ("MLII",), "V1": ("V1", "V2"), "V5": ("V5", "V4")}
LICENCE = {
    "name": "Open Data Commons Attribution License v1.0 (ODC-By)",
    "database": "MIT-BIH Arrhythmia Database v1.0.0, PhysioNet, doi:10.13026/C2F305",
    "cite": [
        "Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. "
        "IEEE Eng in Med and Biol 20(3):45-50 (2001).",
        "Goldberger AL et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000).",
    ],
}
LABEL_RULE = (
    "1 if the window holds any beat annotation other than 'N' (" + "".join(sorted(ABNORMAL_MARKS)) + "), "
    "i.e. including 'x' (non-conducted P wave) and '[' / ']' (ventricular flutter start/end), or if any "
    "rhythm other than '(N' is in force at any point of the window (the rhythm of a '+' annotation "
    'carries over until the next one); other non-beat annotations (~ | " + etc.) are ignored; else 0'
)
FORMAT_VERSION = 2  # 2: patient group ids (groups_*.pt) beside the six tensors
_VAL_SPLIT_ATTEMPTS = 1000


def prepare_mitdb(
    source: str | Path,
    out: str | Path,
    *,
    fs_out: int = 200,
    window_s: int = 10,
    exclude_paced: bool = True,
    val_fraction: float = 0.2,
    seed: int = 0,
    reuse_existing: bool = False,
) -> dict[str, Any]:
    """Convert the raw records in `source` into `out` (six .pt files + meta.json); returns the meta.

    With `reuse_existing`, a complete earlier conversion in `out` from the same source files and
    settings is kept as it is (the summary then has `skipped: True`).
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction {val_fraction}: expected a fraction between 0 and 1 (e.g. 0.2)")
    if fs_out <= 0 or window_s <= 0:
        raise UsageError(f"--fs-out {fs_out} / --window-s {window_s}: expected positive numbers")
    used = set(DS1) | set(DS2) | (set() if exclude_paced else set(PACED))
    available = _available_records(source, used)
    settings = {
        "dataset": "mitdb",
        "format_version": FORMAT_VERSION,
        "source": str(source.resolve()),
        "source_digest": _source_digest(source),
        "fs_out": fs_out,
        "window_s": window_s,
        "exclude_paced": exclude_paced,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    if reuse_existing and (meta := completed_write(out, settings)) is not None:
        return {**meta, "out": str(out), "skipped": True}

    converted: dict[str, RecordWindows] = {}
    for record in sorted(set(available) & (set(DS1) | set(DS2) | set(PACED))):
        converted[record] = read_windows(
            source,
            record,
            lead_slots=LEAD_SLOTS,
            fs_out=fs_out,
            window_s=window_s,
            with_signal=record in used,
        )
    pool = sorted(set(DS1) | (set() if exclude_paced else set(PACED)))
    val_records = choose_validation_records(pool, {r: converted[r].y for r in pool}, val_fraction, seed)
    records_by_split = {
        "train": [r for r in pool if r not in val_records],
        "val": val_records,
        "test": sorted(DS2),
    }
    tensors = {}
    for split, records in records_by_split.items():
        tensors[f"X_{split}"] = torch.from_numpy(np.concatenate([converted[r].X for r in records]))
        tensors[f"y_{split}"] = torch.from_numpy(np.concatenate([converted[r].y for r in records]))
        patients = [np.full(len(converted[r].y), patient_of(r), dtype=np.int64) for r in records]
        tensors[f"groups_{split}"] = torch.from_numpy(np.concatenate(patients))
    meta = _meta(source, settings, converted, records_by_split, fs_out, window_s)
    meta["seconds"] = round(time.perf_counter() - started, 2)
    write_layout(out, tensors, meta)
    return {**meta, "out": str(out), "skipped": False}


def patient_of(record: str) -> int:
    """The patient id of an MIT-BIH record: the number of the subject's first record (202 -> 201)."""
    return int(SAME_SUBJECT_AS.get(record, record))


def choose_validation_records(
    pool: list[str], labels: dict[str, np.ndarray], val_fraction: float, seed: int
) -> list[str]:
    """About `val_fraction` of the `pool` records, drawn from `seed`, such that both the validation
    records and the remaining training records hold windows of both classes."""
    if len(pool) < 2:
        raise DataError("<records>", "train/val", f"{len(pool)} record(s) in the pool; expected at least 2")
    n_val = min(max(round(val_fraction * len(pool)), 1), len(pool) - 1)
    rng = np.random.default_rng(seed)
    for _ in range(_VAL_SPLIT_ATTEMPTS):
        val = sorted(rng.permutation(sorted(pool))[:n_val].tolist())
        train = [r for r in pool if r not in val]
        if _has_both_classes(labels, val) and _has_both_classes(labels, train):
            return val
    raise DataError(
        "<records>",
        "val",
        f"no draw of {n_val} of {len(pool)} records gives both classes to training and "
        "validation; expected records with normal and abnormal windows",
    )


def _has_both_classes(labels: dict[str, np.ndarray], records: list[str]) -> bool:
    y = np.concatenate([labels[r] for r in records])
    return bool((y == 1).any() and (y == 0).any())


def _available_records(source: Path, required: set[str]) -> list[str]:
    if not source.is_dir():
        raise DataError(
            source,
            "--source",
            "folder does not exist; expected the raw MIT-BIH records "
            "(100.hea, 100.dat, 100.atr, …) from physionet.org/content/mitdb/1.0.0/",
        )
    available = sorted(p.stem for p in source.glob("*.hea"))
    missing = sorted(required - set(available))
    if missing:
        raise DataError(
            source,
            "records",
            f"lacks records {', '.join(missing)} (no .hea file); expected the "
            f"{len(required)} records of DS1, DS2{'' if len(required) == 44 else ' and the paced set'} "
            "of the MIT-BIH Arrhythmia Database (each .hea, .dat and .atr)",
        )
    return available


def _source_digest(source: Path) -> str:
    """Cheap identity of the raw files: names and sizes (and SHA256SUMS when the folder has one)."""
    digest = hashlib.sha256()
    sums = source / "SHA256SUMS"
    if sums.is_file():
        digest.update(sums.read_bytes())
    for path in sorted(source.iterdir()):
        if path.suffix in (".hea", ".dat", ".atr"):
            digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _count(converted: dict[str, RecordWindows], records: list[str]) -> dict[str, int]:
    return {
        "records": len(records),
        "windows": int(sum(len(converted[r].y) for r in records)),
        "labelled_1": int(sum(converted[r].y.sum() for r in records)),
    }


def _meta(
    source: Path,
    settings: dict[str, Any],
    converted: dict[str, RecordWindows],
    records_by_split: dict[str, list[str]],
    fs_out: int,
    window_s: int,
) -> dict[str, Any]:
    split_of = {r: split for split, records in records_by_split.items() for r in records}
    all_records = sorted(converted)
    return {
        "dataset": "MIT-BIH Arrhythmia Database v1.0.0",
        "synthetic": False,
        "source": str(source.resolve()),
        "licence": LICENCE,
        "label_rule": LABEL_RULE,
        "units": "mV",
        "fs": fs_out,
        "fs_source": sorted({converted[r].fs for r in all_records}),
        "window_s": window_s,
        "window_samples": round(fs_out * window_s),
        "leads": list(LEAD_SLOTS),
        "lead_mapping": {slot: list(names) for slot, names in LEAD_SLOTS.items()},
        "lead_names": {r: converted[r].lead_names for r in all_records},
        "lead_mask": {r: converted[r].lead_mask for r in all_records},
        "split_method": "inter-patient (de Chazal 2004): DS1 -> train/val by record, DS2 -> test; "
        "paced records 102 104 107 217 excluded unless --no-exclude-paced (then train/val pool)",
        "records": {split: records for split, records in records_by_split.items()},
        "patients": {
            "rule": "groups_<split>.pt holds the patient of each window: the number of its subject's "
            "first record (its own record number, unless same_subject_as names an earlier record)",
            "same_subject_as": dict(SAME_SUBJECT_AS),
            **{split: sorted({patient_of(r) for r in records}) for split, records in records_by_split.items()},
        },
        "excluded_records": [r for r in all_records if r not in split_of],
        "counts": {split: _count(converted, records_by_split[split]) for split in SPLITS},
        "records_detail": {
            r: {
                "split": split_of.get(r, "excluded"),
                "windows": len(converted[r].y),
                "labelled_1": int(converted[r].y.sum()),
                "rhythms": converted[r].rhythms,
            }
            for r in all_records
        },
        "totals_before_exclusions": {
            **_count(converted, all_records),
            "DS1": _count(converted, [r for r in DS1 if r in converted]),
            "DS2": _count(converted, [r for r in DS2 if r in converted]),
            "paced": _count(converted, [r for r in PACED if r in converted]),
        },
        "prepare": settings,
    }
