"""`ecgsearch predict`: real MIT-BIH test windows through an exported bundle, PyTorch and ONNX Runtime."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from retrained_study import ensemble_bundle, member_scores, retrained
from search.cli import main
from search.data import DataError, load_dataset
from search.errors import EXIT_DATA
from search.ship.bundle import load_bundle
from search.ship.predict import load_windows
from search.training.scoring import score_windows


@pytest.fixture
def bundle_dir(small_real_dir, session_root):
    return retrained(small_real_dir, session_root, "best")[1].out


@pytest.fixture(scope="module")
def real_windows(small_real_dir):
    dataset = load_dataset(small_real_dir)
    return dataset.X_test.numpy(), dataset.normalised()[0].X_test


def _expected(bundle_dir, normalised_X) -> tuple[np.ndarray, float]:
    """The model's scores computed in Python the way training evaluated it."""
    bundle = load_bundle(bundle_dir)
    scores = score_windows(bundle.scorer.model, normalised_X, autoencoder=bundle.autoencoder)
    return scores, bundle.threshold


def _read_csv(text: str) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text))
    return reader.fieldnames, list(reader)


@pytest.mark.parametrize("runtime,tolerance", [("torch", 1e-6), ("onnx", 1e-4)])
def test_predict_csv_gives_the_model_probabilities(runtime, tolerance, bundle_dir, real_windows, tmp_path):
    raw, normalised = real_windows
    np.save(tmp_path / "windows.npy", raw)
    out = tmp_path / "scores.csv"
    code = main(
        [
            "predict",
            "--model",
            str(bundle_dir),
            "--input",
            str(tmp_path / "windows.npy"),
            "--out",
            str(out),
            "--runtime",
            runtime,
            "--batch-size",
            "16",
        ]
    )
    assert code == 0
    header, rows = _read_csv(out.read_text())
    assert header == ["window", "probability", "label"]
    expected, threshold = _expected(bundle_dir, normalised)
    scores = np.array([float(r["probability"]) for r in rows])
    assert [int(r["window"]) for r in rows] == list(range(len(raw)))
    assert np.max(np.abs(scores - expected)) < tolerance
    assert [int(r["label"]) for r in rows] == [int(s >= threshold) for s in scores]


def test_predict_json_from_a_pt_tensor_with_onnx(bundle_dir, real_windows, tmp_path, capsys):
    raw, normalised = real_windows
    torch.save(torch.from_numpy(raw[:10]), tmp_path / "windows.pt")
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "predict",
                "--model",
                str(bundle_dir),
                "--input",
                str(tmp_path / "windows.pt"),
                "--out",
                str(out),
                "--runtime",
                "onnx",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    expected, threshold = _expected(bundle_dir, normalised[:10])
    assert result["score_kind"] == "probability" and result["threshold"] == threshold
    assert [p["window"] for p in result["predictions"]] == list(range(10))
    np.testing.assert_allclose([p["score"] for p in result["predictions"]], expected, atol=1e-4)
    assert [p["label"] for p in result["predictions"]] == [int(s >= threshold) for s in expected]
    assert "10 windows scored with onnx" in capsys.readouterr().err


def test_predict_without_out_prints_csv_and_takes_npz_and_single_windows(bundle_dir, real_windows, tmp_path, capsys):
    raw, normalised = real_windows
    np.savez(tmp_path / "test.npz", X_test=raw[:4], y_test=np.zeros(4, dtype=np.float32))
    assert main(["predict", "--model", str(bundle_dir), "--input", str(tmp_path / "test.npz")]) == 0
    _, rows = _read_csv(capsys.readouterr().out)
    expected, _ = _expected(bundle_dir, normalised[:4])
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected, atol=1e-6)

    np.save(tmp_path / "one.npy", raw[3])  # (leads, samples): one window
    assert main(["predict", "--model", str(bundle_dir), "--input", str(tmp_path / "one.npy")]) == 0
    _, rows = _read_csv(capsys.readouterr().out)
    assert len(rows) == 1 and float(rows[0]["probability"]) == pytest.approx(float(expected[3]), abs=1e-6)

    np.savez(tmp_path / "only.npz", windows=raw[:2])
    assert load_windows(tmp_path / "only.npz").shape == (2, 3, 2000)


def test_autoencoder_bundle_predicts_reconstruction_errors(small_real_dir, session_root, real_windows, tmp_path):
    _, result = retrained(small_real_dir, session_root, "ae")
    raw, normalised = real_windows
    np.save(tmp_path / "w.npy", raw[:6])
    out = tmp_path / "errors.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(result.out),
                "--input",
                str(tmp_path / "w.npy"),
                "--out",
                str(out),
                "--runtime",
                "onnx",
            ]
        )
        == 0
    )
    header, rows = _read_csv(out.read_text())
    assert header == ["window", "reconstruction_error", "label"]
    expected, threshold = _expected(result.out, normalised[:6])
    errors = np.array([float(r["reconstruction_error"]) for r in rows])
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-5)
    assert [int(r["label"]) for r in rows] == [int(e >= threshold) for e in errors]


def _predict_csv(bundle_dir, windows_file, out, runtime: str) -> np.ndarray:
    args = ["predict", "--model", str(bundle_dir), "--input", str(windows_file), "--out", str(out)]
    assert main([*args, "--runtime", runtime]) == 0
    _, rows = _read_csv(out.read_text())
    return np.array([float(r["probability"]) for r in rows])


def test_ensemble_bundle_predicts_the_mean_of_its_seeds_scores(small_real_dir, session_root, real_windows, tmp_path):
    """`retrain --seeds 2 --ensemble` round-trips through predict: both runtimes agree, and give the
    mean of the two seeds' own scores (each seed built from model.pt and ecgmodels alone)."""
    bundle_dir, _ = ensemble_bundle(small_real_dir, session_root)
    raw, normalised = real_windows
    np.save(tmp_path / "windows.npy", raw)
    from_torch = _predict_csv(bundle_dir, tmp_path / "windows.npy", tmp_path / "torch.csv", "torch")
    from_onnx = _predict_csv(bundle_dir, tmp_path / "windows.npy", tmp_path / "onnx.csv", "onnx")
    assert np.max(np.abs(from_torch - from_onnx)) < 1e-4
    seeds = member_scores(bundle_dir, normalised)
    assert len(seeds) == 2 and np.max(np.abs(seeds[0] - seeds[1])) > 1e-4  # two different models
    assert np.max(np.abs(from_torch - np.mean(seeds, axis=0))) < 1e-6
    assert np.max(np.abs(from_onnx - np.mean(seeds, axis=0))) < 1e-4


@pytest.mark.parametrize(
    "cut,shape",
    [(lambda X: X[:, :2], "(48, 2, 2000)"), (lambda X: X[:, :, :1000], "(48, 3, 1000)")],
    ids=["lead-count", "window-length"],
)
def test_wrong_shapes_are_refused_naming_both(cut, shape, bundle_dir, real_windows, tmp_path, capsys):
    raw, _ = real_windows
    np.save(tmp_path / "bad.npy", np.ascontiguousarray(cut(raw)))
    code = main(["predict", "--model", str(bundle_dir), "--input", str(tmp_path / "bad.npy")])
    assert code == EXIT_DATA
    message = " ".join(capsys.readouterr().err.split())
    assert shape in message and "(N, 3, 2000)" in message and "bad.npy" in message


def test_unreadable_inputs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_windows(tmp_path / "missing.npy")
    (tmp_path / "w.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"expected one of \('.pt', '.npy', '.npz'\)"):
        load_windows(tmp_path / "w.csv")
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 3, 5)), b=np.zeros((1, 3, 5)))
    with pytest.raises(DataError, match="expected a key X or X_test, or exactly one array"):
        load_windows(tmp_path / "two.npz")
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(DataError, match=r"shape \(10,\)"):
        load_windows(tmp_path / "flat.npy")
    np.save(tmp_path / "nan.npy", np.full((1, 3, 5), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_windows(tmp_path / "nan.npy")


def test_out_suffix_must_be_csv_or_json(bundle_dir, real_windows, tmp_path, capsys):
    raw, _ = real_windows
    np.save(tmp_path / "w.npy", raw[:2])
    code = main(
        [
            "predict",
            "--model",
            str(bundle_dir),
            "--input",
            str(tmp_path / "w.npy"),
            "--out",
            str(tmp_path / "scores.txt"),
        ]
    )
    assert code == 2 and "expected a .csv or .json" in capsys.readouterr().err


def test_predict_help_has_an_example(capsys):
    assert main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Example:" in text and "--runtime" in text and "--batch-size" in text
