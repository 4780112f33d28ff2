"""The synthetic ECG-like dataset: valid, deterministic, ECG-shaped, anomalies visible, patients, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import find_peaks, peak_widths

from search.cli import main
from search.data import load_dataset, make_synthetic
from search.data.synth import _LEAD_PROFILES, Patient, _window

FS = 200
SMALL = {"n_train": 30, "n_val": 12, "n_test": 12, "seq_len": 1200, "fs": FS}


def r_peaks(lead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R-peak sample indices and widths (s) at half prominence."""
    peaks, _ = find_peaks(lead, prominence=0.6, distance=int(0.25 * FS))
    widths = peak_widths(lead, peaks, rel_height=0.5)[0] / FS
    return peaks, widths


def test_synthetic_data_is_valid_and_marked(tmp_path: Path) -> None:
    summary = make_synthetic(tmp_path, **SMALL, seed=0)
    data = load_dataset(tmp_path)
    assert (data.n_channels, data.seq_len) == (3, 1200)
    assert data.meta["synthetic"] is True and data.meta["fs"] == FS
    for split, n in (("train", 30), ("val", 12), ("test", 12)):
        X, y = data.split(split)
        assert len(y) == n and int(y.sum()) == round(n * 0.35)
        assert summary["counts"][split] == {"windows": n, "labelled_1": int(y.sum())}
        assert sum(summary["anomaly_kinds"][split].values()) == int(y.sum())
        assert 0.5 < float(X[:, 0].amax(dim=1).median()) < 2.5  # R waves of about a millivolt


def test_each_split_has_its_own_patients(tmp_path: Path) -> None:
    summary = make_synthetic(tmp_path, **SMALL, patients_per_split=4, seed=0)
    data = load_dataset(tmp_path)
    assert data.has_groups
    ids = {split: set(data.groups(split).tolist()) for split in ("train", "val", "test")}
    assert ids == {"train": {0, 1, 2, 3}, "val": {4, 5, 6, 7}, "test": {8, 9, 10, 11}}
    assert {split: set(patients) for split, patients in summary["patients"].items()} == ids
    # Windows are shared evenly: 30 training windows among 4 patients -> 7 or 8 each.
    assert sorted(data.groups_train.bincount().tolist()) == [7, 7, 8, 8]
    make_synthetic(tmp_path / "few", **{**SMALL, "n_val": 3}, patients_per_split=5, seed=0)
    assert load_dataset(tmp_path / "few").groups_val.unique().numel() == 3  # one patient per window at most


def test_windows_of_one_patient_resemble_each_other_more_than_other_patients(tmp_path: Path) -> None:
    make_synthetic(tmp_path, **{**SMALL, "n_train": 60}, patients_per_split=5, seed=3)
    data = load_dataset(tmp_path)
    normal = data.y_train == 0
    r_amplitude = data.X_train[normal, 0].amax(dim=1).numpy()
    heart_rate = np.array([60 * FS / np.diff(r_peaks(lead)[0]).mean() for lead in data.X_train[normal, 0].numpy()])
    patients = data.groups_train[normal].numpy()
    for trait in (r_amplitude, heart_rate):
        per_patient = [trait[patients == p] for p in np.unique(patients)]
        within = np.mean([values.std() for values in per_patient])
        between = np.std([values.mean() for values in per_patient])
        assert between > 2 * within  # a patient-level trait, not window-level noise


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    make_synthetic(tmp_path / "a", **SMALL, seed=5)
    make_synthetic(tmp_path / "b", **SMALL, seed=5)
    make_synthetic(tmp_path / "c", **SMALL, seed=6)
    fingerprints = [load_dataset(tmp_path / name).fingerprint() for name in "abc"]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_normal_windows_have_a_plausible_regular_rhythm() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        lead = _window(rng, Patient.draw(rng, _LEAD_PROFILES), 2000, FS, None)[0]
        peaks, _ = r_peaks(lead)
        rr = np.diff(peaks) / FS
        assert 50 <= 60 / rr.mean() <= 110
        assert rr.max() / rr.min() < 1.3


def test_each_anomaly_kind_is_visible_in_the_beats() -> None:
    rng = np.random.default_rng(12)
    for _ in range(4):
        peaks, _ = r_peaks(_window(rng, Patient.draw(rng, _LEAD_PROFILES), 2000, FS, "dropped")[0])
        rr = np.diff(peaks)
        assert rr.max() > 1.6 * np.median(rr)  # a P wave with no QRS: a pause of about two beats

        peaks, _ = r_peaks(_window(rng, Patient.draw(rng, _LEAD_PROFILES), 2000, FS, "premature")[0])
        rr = np.diff(peaks)
        assert rr.min() < 0.8 * np.median(rr)

        _, widths = r_peaks(_window(rng, Patient.draw(rng, _LEAD_PROFILES), 2000, FS, "wide_qrs")[0])
        assert widths.max() > 2 * np.median(widths)


def test_cli_synth_writes_skips_and_refuses_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["data", "synth", "--out", str(tmp_path), "--n-train", "20", "--n-val", "8", "--n-test", "8"]
    assert main([*args, "--seq-len", "800"]) == 0
    assert "Wrote" in capsys.readouterr().out
    written = (tmp_path / "X_train.pt").stat().st_mtime_ns
    assert main([*args, "--seq-len", "800"]) == 0
    assert "already holds" in capsys.readouterr().out
    assert (tmp_path / "X_train.pt").stat().st_mtime_ns == written
    assert main([*args, "--seq-len", "800", "--force"]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert main([*args, "--seq-len", "1000"]) == 0  # other settings: written again
    assert load_dataset(tmp_path).seq_len == 1000

    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n-val", "1"]) == 2
    assert "--n-val 1" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--anomaly-fraction", "1.2"]) == 2
    assert "--anomaly-fraction" in capsys.readouterr().err
