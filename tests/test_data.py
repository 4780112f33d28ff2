"""Loading and validating the six-tensor layout, fingerprints, normalisation, subsets, `ecgsearch data check`."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from search.cli import main
from search.data import FIELDS, SPLITS, DataError, ECGDataset, NormStats, load_dataset

N_LEADS, SEQ_LEN = 3, 40


def make_arrays(seed: int = 0, n: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"X_{split}"] = torch.randn(n, N_LEADS, SEQ_LEN, generator=generator)
        arrays[f"y_{split}"] = (torch.arange(n) % 3 == 0).float()
    return arrays


def write_folder(folder: Path, arrays: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        torch.save(value, folder / f"{name}.pt")
    return folder


def load_error(folder: Path, **overrides: object) -> DataError:
    arrays: dict[str, object] = {**make_arrays(), **overrides}
    write_folder(folder, arrays)
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    return caught.value


def test_valid_folder_loads_as_float32(tmp_path: Path) -> None:
    data = load_dataset(write_folder(tmp_path, make_arrays()))
    assert (data.n_channels, data.seq_len) == (N_LEADS, SEQ_LEN)
    for name in FIELDS:
        assert getattr(data, name).dtype == torch.float32
    assert data.source == str(tmp_path)
    assert data.meta == {}


def test_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value) and "does not exist" in str(caught.value)


def test_missing_files_are_listed(tmp_path: Path) -> None:
    arrays = make_arrays()
    del arrays["X_val"], arrays["y_test"]
    write_folder(tmp_path, arrays)
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    message = str(caught.value)
    assert "X_val.pt" in message and "y_test.pt" in message and "X_train.pt" not in message.split(";")[0]


def test_unreadable_file(tmp_path: Path) -> None:
    write_folder(tmp_path, make_arrays())
    (tmp_path / "y_val.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    assert caught.value.field == "y_val"
    assert "y_val.pt" in str(caught.value) and "cannot be read" in str(caught.value)


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    write_folder(tmp_path, make_arrays())
    torch.save({"not": "an array"}, tmp_path / "X_test.pt")
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    assert "X_test" in str(caught.value) and "expected a torch tensor or a numpy array" in str(caught.value)


def test_X_must_be_3d(tmp_path: Path) -> None:
    error = load_error(tmp_path, X_train=torch.zeros(12, SEQ_LEN))
    assert error.field == "X_train"
    assert "X_train.pt" in str(error) and "(12, 40)" in str(error) and "3-D" in str(error)


def test_leads_must_agree_between_splits(tmp_path: Path) -> None:
    error = load_error(tmp_path, X_val=torch.zeros(12, 2, SEQ_LEN))
    assert "X_val.pt" in str(error)
    assert "has 2 leads but X_train has 3" in str(error)


def test_lengths_must_agree_between_splits(tmp_path: Path) -> None:
    error = load_error(tmp_path, X_test=torch.zeros(12, N_LEADS, 30))
    assert "X_test" in str(error) and "30 time steps" in str(error) and "X_train has 40" in str(error)


def test_X_and_y_lengths_must_match(tmp_path: Path) -> None:
    error = load_error(tmp_path, y_train=(torch.arange(11) % 2).float())
    assert error.field == "y_train"
    assert "has 11 labels but X_train has 12 samples" in str(error)


def test_non_finite_values_are_counted(tmp_path: Path) -> None:
    X = torch.zeros(12, N_LEADS, SEQ_LEN)
    X[0, 0, :3] = float("nan")
    X[1, 2, 5] = float("inf")
    error = load_error(tmp_path, X_val=X)
    assert "X_val.pt" in str(error) and "3 NaN and 1 infinite" in str(error)


def test_labels_outside_0_1_are_shown(tmp_path: Path) -> None:
    y = (torch.arange(12) % 2).float()
    y[3], y[4] = 2, -1
    error = load_error(tmp_path, y_test=y)
    assert error.field == "y_test"
    assert "-1, 2" in str(error) and "(2 samples)" in str(error) and "expected only 0" in str(error)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_split_needs_both_classes(tmp_path: Path, split: str) -> None:
    error = load_error(tmp_path, **{f"y_{split}": torch.zeros(12)})
    assert error.field == f"y_{split}"
    assert "only class 0 (normal)" in str(error) and "both classes" in str(error)


def test_y_shape_must_be_n_or_n_by_1(tmp_path: Path) -> None:
    error = load_error(tmp_path, y_train=torch.zeros(12, 2))
    assert "(12, 2)" in str(error) and "(N,) or (N, 1)" in str(error)


def test_label_dtypes_and_numpy_arrays_are_accepted(tmp_path: Path) -> None:
    arrays: dict[str, object] = dict(make_arrays())
    pattern = np.arange(12) % 3 == 0
    arrays["y_train"] = torch.from_numpy(pattern)  # bool tensor
    arrays["y_val"] = pattern.astype(np.int64)[:, None]  # numpy int, (N, 1)
    arrays["y_test"] = pattern.astype(np.float64)  # numpy float64
    arrays["X_test"] = arrays["X_test"].double().numpy()  # numpy float64 X
    data = load_dataset(write_folder(tmp_path, arrays))
    for name in FIELDS:
        assert getattr(data, name).dtype == torch.float32
    for split in ("train", "val", "test"):
        assert data.split(split)[1].tolist() == pattern.astype(np.float32).tolist()


def test_npz_file_loads_and_missing_key_is_named(tmp_path: Path) -> None:
    arrays = {name: value.numpy() for name, value in make_arrays().items()}
    np.savez(tmp_path / "ecg.npz", **arrays)
    (tmp_path / "ecg.meta.json").write_text(json.dumps({"origin": "test"}))
    data = load_dataset(tmp_path / "ecg.npz")
    assert data.n_channels == N_LEADS and data.meta == {"origin": "test"}
    assert data.fingerprint() == ECGDataset.from_arrays(make_arrays()).fingerprint()

    del arrays["y_val"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "partial.npz")
    assert "partial.npz" in str(caught.value) and "y_val" in str(caught.value)


def test_unreadable_npz_and_wrong_suffix(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "broken.npz")
    assert "broken.npz" in str(caught.value) and "cannot be read" in str(caught.value)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"data\.csv.*\.csv file"):
        load_dataset(tmp_path / "data.csv")


def test_folder_with_only_npz_points_at_it(tmp_path: Path) -> None:
    np.savez(tmp_path / "ecg.npz", **{name: value.numpy() for name, value in make_arrays().items()})
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    assert "pass that file instead" in str(caught.value) and "ecg.npz" in str(caught.value)


def test_broken_meta_json_is_reported(tmp_path: Path) -> None:
    write_folder(tmp_path, make_arrays())
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    assert "meta.json" in str(caught.value) and "JSON" in str(caught.value)


def test_fingerprint_is_stable_across_processes_and_sensitive_to_content(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "a", make_arrays())
    here = load_dataset(folder).fingerprint()
    assert len(here) == 64
    code = "import sys; from search.data import load_dataset; print(load_dataset(sys.argv[1]).fingerprint())"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    there = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert there == here

    changed = make_arrays()
    changed["X_test"][5, 1, 7] += 1e-3
    assert ECGDataset.from_arrays(changed).fingerprint() != here
    relabelled = make_arrays()
    relabelled["y_val"][1] = 1.0
    assert ECGDataset.from_arrays(relabelled).fingerprint() != here
    # Same bytes, different shape: still a different dataset.
    reshaped = make_arrays()
    reshaped["X_train"] = reshaped["X_train"].reshape(12, N_LEADS * 2, SEQ_LEN // 2)
    reshaped["X_val"] = reshaped["X_val"].reshape(12, N_LEADS * 2, SEQ_LEN // 2)
    reshaped["X_test"] = reshaped["X_test"].reshape(12, N_LEADS * 2, SEQ_LEN // 2)
    assert ECGDataset.from_arrays(reshaped).fingerprint() != here


def test_normalisation_uses_training_statistics_only() -> None:
    arrays = make_arrays()
    arrays["X_train"] = arrays["X_train"] * torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1) + 5.0
    arrays["X_val"] = arrays["X_val"] * 10 - 3  # a very different distribution must not move the stats
    data = ECGDataset.from_arrays(arrays)
    scaled, stats = data.normalised()

    expected_mean = arrays["X_train"].double().mean(dim=(0, 2))
    expected_std = arrays["X_train"].double().std(dim=(0, 2), correction=0)
    assert stats.mean[:2] == pytest.approx(expected_mean[:2].tolist())
    assert stats.std[:2] == pytest.approx(expected_std[:2].tolist())
    # A lead flat in every training window is missing, not a signal: no statistics, zeros where flat.
    assert (stats.mean[2], stats.std[2]) == (0.0, 1.0)
    assert torch.equal(scaled.X_train[:, 2], torch.zeros_like(scaled.X_train[:, 2]))
    assert scaled.X_train[:, :2].mean().abs() < 1e-5
    assert scaled.X_train[:, :2].std(dim=(0, 2), correction=0) == pytest.approx([1.0, 1.0], abs=1e-4)
    manual_val = (arrays["X_val"] - torch.tensor(stats.mean).view(1, 3, 1).float()) / torch.tensor(stats.std).view(
        1, 3, 1
    ).float()
    assert torch.allclose(scaled.X_val, manual_val, atol=1e-3, rtol=1e-5)
    assert torch.equal(scaled.y_val, data.y_val)
    assert torch.equal(data.X_train, arrays["X_train"])  # the original is untouched


def test_a_lead_missing_from_some_windows_is_scaled_by_the_windows_that_have_it() -> None:
    arrays = make_arrays()
    X = arrays["X_train"]
    X[:, 2] = X[:, 2] * 3.0 + 1.0
    X[2:, 2] = 0.0  # the third lead recorded in two windows only, stored as zeros elsewhere
    scaled, stats = ECGDataset.from_arrays(arrays).normalised()
    present = X[:2, 2].double()
    assert stats.zero_flat_leads
    assert stats.mean[2] == pytest.approx(float(present.mean()))
    assert stats.std[2] == pytest.approx(float(present.std(correction=0)))
    # Where it is present it has unit scale, like the other leads; where it is missing it is 0, the
    # value lead-dropout augmentation gives a removed lead (plain normalisation would give -mean/std).
    assert scaled.X_train[:2, 2].std(correction=0) == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(scaled.X_train[2:, 2], torch.zeros_like(scaled.X_train[2:, 2]))
    # numpy (predict) and torch (training) agree, and the flag survives config.json
    np.testing.assert_allclose(stats.apply(X.numpy()), scaled.X_train.numpy(), atol=1e-6)
    assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    # Statistics saved before the flag existed (older bundles) keep the plain rule they were validated with.
    old = NormStats.from_dict({"mean": stats.mean, "std": stats.std})
    assert not old.zero_flat_leads
    assert float(old.apply(X)[5, 2, 0]) == pytest.approx(-stats.mean[2] / stats.std[2], rel=1e-5)
    with pytest.raises(ValueError, match="zero_flat_leads"):
        NormStats.from_dict({**stats.to_dict(), "zero_flat_leads": "yes"})


def test_norm_stats_round_trip_and_apply_shapes() -> None:
    stats = NormStats(mean=[1.0, -2.0], std=[2.0, 0.5])
    assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    single = torch.tensor([[3.0, 5.0], [-2.0, -1.5]])
    assert stats.apply(single).tolist() == [[1.0, 2.0], [0.0, 1.0]]
    batch = np.stack([single.numpy()] * 4)
    assert stats.apply(batch).shape == (4, 2, 2)
    with pytest.raises(ValueError, match="expected 2 leads"):
        stats.apply(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="positive stds"):
        NormStats.from_dict({"mean": [0.0], "std": [0.0]})


def test_subset_is_stratified_deterministic_and_keeps_rare_class() -> None:
    arrays = make_arrays(n=60)
    arrays["y_val"] = torch.zeros(60)
    arrays["y_val"][[7, 41]] = 1.0  # a rare class must survive a small subset
    data = ECGDataset.from_arrays(arrays, meta={"counts": "stale", "prepare": {"x": 1}})
    small = data.subset(max_train=10, max_val=4, max_test=None, seed=3)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (10, 4, 60)
    for split in ("train", "val", "test"):
        assert set(small.split(split)[1].tolist()) == {0.0, 1.0}
    assert int(small.y_train.sum()) == round(10 * float(data.y_train.mean()))
    again = data.subset(max_train=10, max_val=4, max_test=None, seed=3)
    assert again.fingerprint() == small.fingerprint()
    assert data.subset(max_train=10, max_val=4, max_test=None, seed=4).fingerprint() != small.fingerprint()
    assert small.meta["counts"]["val"] == {"windows": 4, "labelled_1": int(small.y_val.sum())}
    assert "prepare" not in small.meta and small.meta["subset"]["seed"] == 3
    # Rows stay whole: every kept row is a row of the original.
    row = small.X_val[0]
    assert any(torch.equal(row, original) for original in data.X_val)
    with pytest.raises(ValueError, match="max_train=1"):
        data.subset(max_train=1)


def test_save_and_load_round_trip_with_meta(tmp_path: Path) -> None:
    data = ECGDataset.from_arrays(make_arrays(), meta={"dataset": "unit"})
    # A view of a larger tensor must be saved as itself, not with its whole storage.
    data.X_val = torch.randn(100, N_LEADS, SEQ_LEN)[:12]
    data.save(tmp_path / "out")
    back = load_dataset(tmp_path / "out")
    assert back.fingerprint() == data.fingerprint()
    assert back.meta["dataset"] == "unit" and set(back.meta["files"]) == {f"{n}.pt" for n in FIELDS}
    assert (tmp_path / "out" / "X_val.pt").stat().st_size < 12 * N_LEADS * SEQ_LEN * 4 + 4096
    assert back.to("cpu").fingerprint() == data.fingerprint()


def test_cli_check_prints_summary_and_fingerprint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "ok", make_arrays())
    assert main(["data", "check", str(folder)]) == 0
    output = capsys.readouterr().out
    assert load_dataset(folder).fingerprint() in output
    assert "train" in output and "12 × 3 × 40" in output


def test_cli_check_exit_codes_for_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(tmp_path / "missing")]) == 3
    assert "missing" in capsys.readouterr().err
    bad = make_arrays()
    bad["y_test"] = torch.ones(12)
    assert main(["data", "check", str(write_folder(tmp_path / "bad", bad))]) == 3
    assert "y_test" in capsys.readouterr().err


# --- patient group ids, the sampling rate, load failures ------------------------------------------------

# The fingerprint every dataset without group ids had before group ids existed (studies record it).
FINGERPRINT_BEFORE_GROUPS = "808eea80f03a1ca9463bae4c5b1ab7e0cd9197ecf315bdadde01eee36afbaa32"


def fixed_arrays() -> dict[str, torch.Tensor]:
    """Arrays that need no random generator, so their fingerprint can be written down."""
    arrays = {}
    for index, split in enumerate(("train", "val", "test")):
        arrays[f"X_{split}"] = torch.arange(6 * 2 * 5, dtype=torch.float32).reshape(6, 2, 5) / (index + 3)
        arrays[f"y_{split}"] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    return arrays


def make_groups(n: int = 12, shared: int | None = None) -> dict[str, torch.Tensor]:
    """Four patients of three windows per split, ids distinct across splits; `shared` also in test."""
    groups = {f"groups_{split}": torch.arange(n) // 3 + 10 * index for index, split in enumerate(SPLITS)}
    if shared is not None:
        groups["groups_test"][0] = shared
    return groups


def with_rows_numbered(arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """X[i, 0, 0] = i in every split, so a row can be traced through subsets."""
    for split in SPLITS:
        arrays[f"X_{split}"][:, 0, 0] = torch.arange(len(arrays[f"y_{split}"]), dtype=torch.float32)
    return arrays


def test_group_ids_round_trip_through_load_save_subset_to_and_normalised(tmp_path: Path) -> None:
    arrays = with_rows_numbered(make_arrays(n=30))
    groups = {f"groups_{split}": torch.arange(30) % 7 + 100 * i for i, split in enumerate(SPLITS)}
    data = load_dataset(write_folder(tmp_path / "in", {**arrays, **groups}))
    assert data.has_groups and data.groups_train.dtype == torch.int64
    assert torch.equal(data.groups("val"), groups["groups_val"])

    small = data.subset(max_train=10, max_val=8, max_test=6, seed=2)
    for split in SPLITS:
        rows = small.split(split)[0][:, 0, 0].long()  # which original rows were kept
        assert torch.equal(small.groups(split), groups[f"groups_{split}"][rows])
    small.save(tmp_path / "out")
    back = load_dataset(tmp_path / "out")
    assert {f"groups_{s}.pt" for s in SPLITS} <= set(back.meta["files"])
    assert back.has_groups and back.fingerprint() == small.fingerprint()
    for split in SPLITS:
        assert torch.equal(back.groups(split), small.groups(split))
    scaled, _ = back.to("cpu").normalised()
    assert torch.equal(scaled.groups_test, back.groups_test)


def test_npz_group_keys_are_read(tmp_path: Path) -> None:
    arrays = {name: value.numpy() for name, value in {**make_arrays(), **make_groups()}.items()}
    arrays["groups_val"] = arrays["groups_val"].astype(np.int32)  # any integer type
    np.savez(tmp_path / "ecg.npz", **arrays)
    data = load_dataset(tmp_path / "ecg.npz")
    assert data.has_groups and data.groups_val.dtype == torch.int64
    assert data.groups_val.tolist() == arrays["groups_val"].tolist()


def test_partial_group_ids_are_refused_naming_what_is_missing(tmp_path: Path) -> None:
    partial = {**make_arrays(), "groups_train": make_groups()["groups_train"]}
    write_folder(tmp_path / "folder", partial)
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "folder")
    message = str(caught.value)
    assert "groups_val.pt" in message and "groups_test.pt" in message and "all three" in message
    assert caught.value.field == "groups_val, groups_test"

    arrays = {name: value.numpy() for name, value in {**make_arrays(), **make_groups()}.items()}
    del arrays["groups_test"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DataError, match=r"partial\.npz \[groups_test\]: missing groups_test"):
        load_dataset(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="groups_train only"):
        ECGDataset(**make_arrays(), groups_train=make_groups()["groups_train"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (torch.arange(12).float(), "expected integer patient ids"),
        (torch.arange(12).reshape(12, 1), "expected shape (N,)"),
        (torch.arange(11), "has 11 ids but y_val has 12 labels"),
        (np.array(["a"] * 12), "expected numbers"),
    ],
)
def test_bad_group_ids_name_file_field_and_expectation(tmp_path: Path, value: object, expected: str) -> None:
    error = load_error(tmp_path, **{**make_groups(), "groups_val": value})
    assert error.field == "groups_val" and "groups_val.pt" in str(error) and expected in str(error)


def test_fingerprint_covers_group_ids_and_is_unchanged_without_them() -> None:
    assert ECGDataset.from_arrays(fixed_arrays()).fingerprint() == FINGERPRINT_BEFORE_GROUPS
    grouped = {**fixed_arrays(), **make_groups(n=6)}
    with_groups = ECGDataset.from_arrays(grouped).fingerprint()
    assert with_groups != FINGERPRINT_BEFORE_GROUPS
    grouped["groups_test"] = grouped["groups_test"].clone()
    grouped["groups_test"][2] = 99
    assert ECGDataset.from_arrays(grouped).fingerprint() != with_groups


def test_saving_without_groups_removes_stale_group_files(tmp_path: Path) -> None:
    ECGDataset.from_arrays({**make_arrays(), **make_groups()}).save(tmp_path)
    assert (tmp_path / "groups_train.pt").is_file()
    ECGDataset.from_arrays(make_arrays(seed=1)).save(tmp_path)
    assert not any(tmp_path.glob("groups_*.pt")) and not load_dataset(tmp_path).has_groups


def test_completed_write_needs_every_file_it_recorded(tmp_path: Path) -> None:
    from search.data.store import completed_write

    settings = {"dataset": "unit"}
    ECGDataset.from_arrays({**make_arrays(), **make_groups()}, meta={"prepare": settings}).save(tmp_path)
    assert completed_write(tmp_path, settings) is not None
    (tmp_path / "groups_val.pt").unlink()
    assert completed_write(tmp_path, settings) is None


def test_sampling_rate_comes_from_meta_json(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, make_arrays())
    assert load_dataset(folder).fs is None
    (folder / "meta.json").write_text(json.dumps({"fs": 250}))
    data = load_dataset(folder)
    assert data.fs == 250.0 and data.subset(max_train=6).fs == 250.0
    (folder / "meta.json").write_text(json.dumps({"fs": "fast"}))
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert caught.value.field == "fs" and "meta.json" in str(caught.value) and "positive number" in str(caught.value)


def test_a_pickled_object_names_its_type_and_never_advises_unsafe_loading(tmp_path: Path) -> None:
    write_folder(tmp_path, make_arrays())
    torch.save({"window": Fraction(1, 3)}, tmp_path / "X_val.pt")  # not allowlisted for weights-only loading
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    message = str(caught.value)
    assert caught.value.field == "X_val" and "fractions.Fraction" in message
    assert "saved with torch.save" in message
    for advice in ("weights_only` set to `False", "Re-running", "can still be loaded", "safe_globals", "\x1b"):
        assert advice not in message


def test_load_failure_reason_keeps_the_cause_and_drops_the_advice() -> None:
    from search.data.loading import load_failure_reason

    truncated = RuntimeError(
        "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal "
        "miniz error. If you are seeing this error, there is a high likelihood that your checkpoint file is corrupted."
    )
    assert (
        load_failure_reason(truncated)
        == "PytorchStreamReader failed reading zip archive: failed finding central directory"
    )
    advice_only = pickle.UnpicklingError(
        "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but it can result in "
        "arbitrary code execution.\nWeightsUnpickler error: \n\nUnsupported operand 110\n\nCheck the documentation"
    )
    assert load_failure_reason(advice_only) == "Unsupported operand 110"
    assert load_failure_reason(pickle.UnpicklingError("Re-running with weights_only=False")) == "UnpicklingError"


def test_cli_check_reports_patients_and_shared_patients(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "grouped", {**make_arrays(), **make_groups(shared=11)})
    (folder / "meta.json").write_text(json.dumps({"dataset": "unit", "fs": 4}))
    assert main(["data", "check", str(folder)]) == 0
    output = " ".join(capsys.readouterr().out.split())
    assert "patients" in output and "4 Hz (10-second windows of 40 samples)" in output
    assert "1 patient is in both a training split and test: 11 (val, test)" in output
    assert load_dataset(folder).fingerprint() in output


def test_cli_check_says_what_missing_groups_and_rate_mean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(write_folder(tmp_path, make_arrays()))]) == 0
    output = " ".join(capsys.readouterr().out.split())
    assert "--cv will treat each window as its own patient" in output
    assert "sampling rate: unknown" in output and "assume 10-second windows, i.e. 4 Hz for 40 samples" in output
    assert "warning" not in output


def test_the_data_layer_imports_nothing_above_it() -> None:
    code = (
        "import sys; import search.data, search.data.check, search.data.folds, search.data.mitdb, "
        "search.data.synth; print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    above = ("search.cli", "search.optimize", "search.ship", "search.report", "search.training", "search.tracking")
    others = ("studies", "spaces", "ecgmodels", "optuna", "mlflow", "rich", "sklearn", "wfdb")  # sklearn, wfdb: lazily
    assert [name for name in loaded if name.startswith(above) or name.split(".")[0] in others] == []
