"""The real MIT-BIH conversion: reference counts, inter-patient split, patients, leads, labels, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from search.cli import main
from search.data import DataError, check_report, load_dataset, prepare_mitdb
from search.data.mitdb import DS1, DS2, PACED, choose_validation_records, patient_of
from search.data.store import completed_write
from search.data.wfdb_records import window_labels

pytestmark = pytest.mark.mitdb

# README.md of the raw database: 10 s windows at 200 Hz.
REFERENCE = {"windows": 8640, "labelled_1": 5215, "DS1": (3960, 2190), "DS2": (3960, 2312)}


@pytest.fixture(scope="module")
def meta(mitdb_prepared_dir: Path) -> dict:
    return json.loads((mitdb_prepared_dir / "meta.json").read_text())


def test_reference_counts_are_reproduced_exactly(meta: dict) -> None:
    totals = meta["totals_before_exclusions"]
    assert (totals["records"], totals["windows"], totals["labelled_1"]) == (48, 8640, 5215)
    assert (totals["DS1"]["windows"], totals["DS1"]["labelled_1"]) == REFERENCE["DS1"]
    assert (totals["DS2"]["windows"], totals["DS2"]["labelled_1"]) == REFERENCE["DS2"]
    counts = meta["counts"]
    assert counts["train"]["windows"] + counts["val"]["windows"] == 3960
    assert counts["train"]["labelled_1"] + counts["val"]["labelled_1"] == 2190
    assert (counts["test"]["windows"], counts["test"]["labelled_1"]) == (3960, 2312)
    assert all(detail["windows"] == 180 for detail in meta["records_detail"].values())
    # The prepared set: the 44 records of DS1 and DS2 (the four paced records are dropped).
    prepared = [sum(counts[split][key] for split in counts) for key in ("windows", "labelled_1")]
    assert prepared == [7920, 4502]


def test_tensors_match_meta_and_pass_validation(mitdb_prepared_dir: Path, meta: dict) -> None:
    data = load_dataset(mitdb_prepared_dir)
    assert (data.n_channels, data.seq_len) == (3, 2000)
    for split in ("train", "val", "test"):
        X, y = data.split(split)
        assert X.dtype == torch.float32 and y.dtype == torch.float32
        assert (len(y), int(y.sum())) == (meta["counts"][split]["windows"], meta["counts"][split]["labelled_1"])
        assert set(y.unique().tolist()) == {0.0, 1.0}


def test_inter_patient_split_has_no_record_in_two_splits(meta: dict) -> None:
    records = meta["records"]
    train, val, test = set(records["train"]), set(records["val"]), set(records["test"])
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val == set(DS1) and test == set(DS2)
    assert sorted(meta["excluded_records"]) == sorted(PACED)
    assert len(val) == round(0.2 * len(DS1))
    assert sum(meta["records_detail"][r]["labelled_1"] for r in val) > 0
    assert sum(meta["records_detail"][r]["labelled_1"] for r in val) < 180 * len(val)


def test_each_window_carries_its_patient_and_201_202_are_one(mitdb_prepared_dir: Path, meta: dict) -> None:
    data = load_dataset(mitdb_prepared_dir)
    assert data.has_groups and data.fs == 200
    for split in ("train", "val", "test"):
        expected = [patient_of(record) for record in meta["records"][split] for _ in range(180)]
        assert data.groups(split).tolist() == expected
        assert meta["patients"][split] == sorted(set(expected))
    assert patient_of("202") == patient_of("201") == 201 and patient_of("100") == 100
    assert [len(meta["patients"][split]) for split in ("train", "val", "test")] == [18, 4, 22]
    report = check_report(data)
    assert report.columns[-1] == "patients" and [row[-1] for row in report.rows()] == ["18", "4", "22"]


def test_check_reports_patients_and_the_201_202_overlap(
    mitdb_prepared_dir: Path, meta: dict, capsys: pytest.CaptureFixture
) -> None:
    assert main(["data", "check", str(mitdb_prepared_dir)]) == 0
    output = " ".join(capsys.readouterr().out.split())
    split_of_201 = "train" if "201" in meta["records"]["train"] else "val"
    assert f"1 patient is in both a training split and test: 201 ({split_of_201}, test)" in output
    assert "200 Hz (10-second windows of 2000 samples)" in output
    assert "--cv will treat" not in output


def test_lead_slots_and_mask_follow_the_headers(mitdb_prepared_dir: Path, meta: dict) -> None:
    assert meta["leads"] == ["II", "V1", "V5"]
    assert meta["lead_names"]["101"] == {"II": "MLII", "V1": "V1", "V5": None}
    assert meta["lead_names"]["124"] == {"II": "MLII", "V1": None, "V5": "V4"}
    assert meta["lead_names"]["117"] == {"II": "MLII", "V1": "V2", "V5": None}
    assert meta["lead_names"]["102"] == {"II": None, "V1": "V2", "V5": "V5"}
    assert meta["lead_mask"]["100"] == [1, 0, 1]
    # Record 100 (MLII + V5) is the first test record: its V1 slot is zero, the others are not.
    X_test = torch.load(mitdb_prepared_dir / "X_test.pt", weights_only=True)
    assert meta["records"]["test"][0] == "100"
    assert torch.count_nonzero(X_test[:180, 1]) == 0
    assert torch.count_nonzero(X_test[:180, 0]) > 0 and torch.count_nonzero(X_test[:180, 2]) > 0


def test_windows_are_the_resampled_raw_signal(mitdb_raw_dir: Path, mitdb_prepared_dir: Path) -> None:
    import wfdb
    from scipy.signal import resample_poly

    record = wfdb.rdrecord(str(mitdb_raw_dir / "100"), channels=[0])
    assert record.sig_name == ["MLII"] and record.fs == 360
    expected = resample_poly(record.p_signal[:, 0], 5, 9)
    X_test = torch.load(mitdb_prepared_dir / "X_test.pt", weights_only=True)
    for window in (0, 57, 179):
        got = X_test[window, 0].numpy()
        assert np.allclose(got, expected[window * 2000 : (window + 1) * 2000], atol=1e-4)


def test_meta_carries_licence_rule_and_settings(meta: dict) -> None:
    assert "ODC-By" in meta["licence"]["name"]
    assert any("Moody" in c for c in meta["licence"]["cite"]) and any(
        "Goldberger" in c for c in meta["licence"]["cite"]
    )
    assert "'(N'" in meta["label_rule"] and meta["fs"] == 200 and meta["window_samples"] == 2000
    assert meta["prepare"]["exclude_paced"] is True and meta["prepare"]["seed"] == 0
    assert meta["synthetic"] is False


def test_window_labels_follow_the_reference_rule() -> None:
    # Windows of 100 samples; rhythm annotations carry over until the next one.
    samples = [5, 10, 120, 150, 230, 250, 330, 420, 450, 470, 520, 610]
    symbols = ["+", "N", "N", "x", "N", "+", "N", "+", "N", "~", "[", "N"]
    notes = ["(N\x00", "", "", "", "", "(AFIB", "", "(N", "", "", "", ""]
    labels = window_labels(samples, symbols, notes, n_windows=7, window_len=100)
    # 0: normal; 1: 'x'; 2: AFIB starts; 3: AFIB in force; 4: AFIB until 420 -> abnormal;
    # 5: '[' mark; 6: normal ('~' noise elsewhere never counts).
    assert labels.tolist() == [0, 1, 1, 1, 1, 1, 0]
    assert window_labels([10, 150], ["V", "|"], ["", ""], 2, 100).tolist() == [1, 0]
    # Before the first rhythm annotation no rhythm is known: only beats decide.
    assert window_labels([250, 260], ["+", "N"], ["(B", ""], 3, 100).tolist() == [0, 0, 1]


def test_validation_records_are_deterministic_and_hold_both_classes() -> None:
    labels = {r: np.array([0.0, 1.0]) if int(r) % 3 else np.zeros(2) for r in DS1}
    first = choose_validation_records(list(DS1), labels, 0.2, seed=0)
    assert first == choose_validation_records(list(DS1), labels, 0.2, seed=0)
    assert len(first) == 4 and set(first) <= set(DS1)
    draws = {tuple(choose_validation_records(list(DS1), labels, 0.2, seed=s)) for s in range(5)}
    assert len(draws) > 1
    only_normal = {r: np.zeros(2) for r in DS1}
    only_normal["101"] = np.ones(2)
    # With one abnormal record, it cannot be in both splits: no valid draw exists.
    with pytest.raises(DataError, match="both classes"):
        choose_validation_records(list(DS1), only_normal, 0.2, seed=0)


def test_missing_records_and_folder_are_named(tmp_path: Path, mitdb_raw_dir: Path) -> None:
    with pytest.raises(DataError) as caught:
        prepare_mitdb(tmp_path / "absent", tmp_path / "out")
    assert "absent" in str(caught.value) and "--source" in str(caught.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    for suffix in (".hea", ".dat", ".atr"):
        (partial / f"100{suffix}").symlink_to(mitdb_raw_dir / f"100{suffix}")
    with pytest.raises(DataError) as caught:
        prepare_mitdb(partial, tmp_path / "out")
    assert "101" in str(caught.value) and "234" in str(caught.value) and "100," not in str(caught.value)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "prepare", "mitdb", "--source", str(tmp_path / "none"), "--out", str(tmp_path)]) == 3
    assert "none" in capsys.readouterr().err
    args = ["data", "prepare", "mitdb", "--source", str(tmp_path), "--val-fraction", "1.5"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "--val-fraction" in capsys.readouterr().err


def test_cli_skips_an_up_to_date_prepare(
    mitdb_raw_dir: Path, mitdb_prepared_dir: Path, meta: dict, capsys: pytest.CaptureFixture
) -> None:
    before = (mitdb_prepared_dir / "X_train.pt").stat().st_mtime_ns
    started = time.perf_counter()
    code = main(["data", "prepare", "mitdb", "--source", str(mitdb_raw_dir), "--out", str(mitdb_prepared_dir)])
    assert code == 0 and time.perf_counter() - started < 5
    assert "already holds" in capsys.readouterr().out
    assert (mitdb_prepared_dir / "X_train.pt").stat().st_mtime_ns == before
    other_seed = {**meta["prepare"], "seed": 1}
    assert completed_write(mitdb_prepared_dir, other_seed) is None
    assert completed_write(mitdb_prepared_dir, meta["prepare"]) is not None


def test_paced_records_join_the_training_pool_when_kept(mitdb_raw_dir: Path, tmp_path: Path) -> None:
    summary = prepare_mitdb(mitdb_raw_dir, tmp_path, fs_out=100, exclude_paced=False, seed=1)
    records = summary["records"]
    assert set(records["train"]) | set(records["val"]) == set(DS1) | set(PACED)
    assert set(records["test"]) == set(DS2) and summary["excluded_records"] == []
    counts = summary["counts"]
    assert counts["train"]["windows"] + counts["val"]["windows"] == 3960 + 720
    paced_positive = sum(summary["records_detail"][r]["labelled_1"] for r in PACED)
    assert counts["train"]["labelled_1"] + counts["val"]["labelled_1"] == 2190 + paced_positive
    data = load_dataset(tmp_path)
    assert data.seq_len == 1000 and len(data.y_test) == 3960
    assert summary["lead_mask"]["104"] == [0, 1, 1]
