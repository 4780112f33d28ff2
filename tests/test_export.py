"""The export bundle: reloadable from its files alone, ONNX equal to PyTorch for every family, clear errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnxruntime
import pytest
import torch

import ecgmodels
from retrained_study import ensemble_bundle, retrained
from search.cli import main
from search.data import load_dataset
from search.errors import EXIT_DATA
from search.ship.bundle import BUNDLE_FILES, BundleError, load_bundle, write_bundle
from search.ship.onnx import OnnxExportError, export_onnx, onnx_scores
from search.training.config import TrainConfig, join_config
from search.training.device import seed_everything
from search.training.metrics import classification_metrics, scalar_metrics
from search.training.scoring import ScoringModel, score_windows

# Small enough that an LSTM over 2000 raw samples exports and runs in well under a second.
TINY_OVERRIDES = {
    "out_channels": [4, 8],
    "kernel_sizes": [5, 3],
    "pool_sizes": [4, 4],
    "fc_units": [8],
    "lstm_hidden": 8,
    "d_model": 16,
    "nhead": 2,
    "tf_layers": 1,
    "dim_feedforward": 32,
    "latent_channels": 4,
    "latent_dim": 8,
    "downsample": 8,
}


def tiny_params(family: str) -> dict:
    names = ecgmodels.model_param_names(family)
    return {**ecgmodels.default_params(family), **{k: v for k, v in TINY_OVERRIDES.items() if k in names}}


@pytest.fixture(scope="module")
def real(small_real_dir):
    dataset = load_dataset(small_real_dir)
    normalised, norm = dataset.normalised()
    return dataset, normalised, norm


def test_model_pt_reloads_from_config_json_alone_and_reproduces_test_metrics(small_real_dir, session_root, real):
    _, result = retrained(small_real_dir, session_root, "best")
    dataset, _, _ = real
    cfg = json.loads((result.out / "config.json").read_text())
    model = ecgmodels.build(
        cfg["family"], n_channels=cfg["n_channels"], seq_len=cfg["window_length"], **cfg["model_params"]
    )
    model.load_state_dict(torch.load(result.out / "model.pt", weights_only=True))
    model.eval()
    mean = torch.tensor(cfg["normalisation"]["mean"]).view(1, -1, 1)
    std = torch.tensor(cfg["normalisation"]["std"]).view(1, -1, 1)
    x = (dataset.X_test - mean) / std
    assert cfg["normalisation"]["zero_flat_leads"] is True
    # MIT-BIH records lack one of V1/V5: that lead is flat in their windows and 0 once normalised
    flat = (dataset.X_test.amax(dim=-1) == dataset.X_test.amin(dim=-1)).unsqueeze(-1)
    assert bool(flat.any())
    x = x.masked_fill(flat, 0.0)
    with torch.no_grad():
        scores = torch.sigmoid(model(x)).numpy()

    reproduced = classification_metrics(dataset.y_test, scores, cfg["threshold"])
    stored = json.loads((result.out / "metrics.json").read_text())["test"]
    assert reproduced["confusion_matrix"] == stored["confusion_matrix"]
    for name, value in scalar_metrics(reproduced).items():
        assert stored[name] == pytest.approx(value, abs=1e-6), name


def test_onnx_gives_the_pytorch_scores_on_real_windows_for_any_batch(small_real_dir, session_root, real):
    _, result = retrained(small_real_dir, session_root, "best")
    dataset, normalised, _ = real
    bundle = load_bundle(result.out)
    session = onnxruntime.InferenceSession(str(result.out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["score"]
    X = normalised.X_test.numpy()
    expected = score_windows(bundle.scorer.model, normalised.X_test, autoencoder=False)
    for batch in (X[:1], X[:7], X):
        got = session.run(["score"], {"x": batch})[0]
        assert got.shape == (batch.shape[0],)
        assert np.max(np.abs(got - expected[: batch.shape[0]])) < 1e-4
    # The same scores `fit`/`evaluate` produced: the score head in the graph is the one training used.
    assert np.max(np.abs(bundle.score(dataset.X_test) - expected)) < 1e-6


WITH_RHYTHM = [
    ("cnn", {"rhythm_branch": True, "rhythm_fusion": "average"}),
    ("cnn_lstm", {"rhythm_branch": True, "rhythm_fusion": "concat"}),
]


@pytest.mark.parametrize(
    ("family", "extra"),
    [(family, {}) for family in ecgmodels.FAMILIES] + WITH_RHYTHM,
    ids=[*ecgmodels.FAMILIES, "cnn-rhythm-average", "cnn_lstm-rhythm-concat"],
)
def test_every_family_exports_to_onnx_with_the_same_scores(family, extra, real, tmp_path):
    dataset, normalised, norm = real
    seed_everything(0)
    params = {**tiny_params(family), **extra}
    model = ecgmodels.build(
        family, n_channels=dataset.n_channels, seq_len=dataset.seq_len, fs=dataset.meta["fs"], **params
    )
    config = join_config(family, params, TrainConfig())
    out = tmp_path / family
    cfg = write_bundle(
        out,
        models=[model],
        seeds=[0],
        config=config,
        norm=norm,
        threshold=0.25,
        meta=dataset.meta,
        source=dataset.source,
        metrics={"study": "t", "trial_number": 0},
        check_windows=normalised.X_test[:8],
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    autoencoder = ecgmodels.is_autoencoder(family)
    assert cfg["autoencoder"] is autoencoder
    assert cfg["score_kind"] == ("reconstruction_error" if autoencoder else "probability")

    bundle = load_bundle(out)
    windows = normalised.X_test[8:13]  # windows the export check did not see, another batch size
    from_onnx = onnx_scores(out / "model.onnx", windows.numpy())
    expected = score_windows(bundle.scorer.model, windows, autoencoder=autoencoder)
    assert np.max(np.abs(from_onnx - expected)) < 1e-4
    assert np.max(np.abs(bundle.score(dataset.X_test[8:13]) - expected)) < 1e-5
    assert json.loads((out / "metrics.json").read_text())["onnx_max_abs_diff"] < 1e-4


def test_export_refuses_an_onnx_graph_that_scores_differently(real, tmp_path, monkeypatch):
    dataset, normalised, _ = real
    model = ecgmodels.build("cnn", n_channels=3, seq_len=dataset.seq_len, **tiny_params("cnn"))
    real_onnx_scores = onnx_scores
    monkeypatch.setattr("search.ship.onnx.onnx_scores", lambda path, X, **kw: real_onnx_scores(path, X) + 1e-3)
    with pytest.raises(OnnxExportError, match=r"'cnn' scores differently .* max abs difference 0\.001"):
        export_onnx(ScoringModel(model, False), family="cnn", windows=normalised.X_test[:4], path=tmp_path / "m.onnx")


def test_export_failure_names_the_family(real, tmp_path, monkeypatch):
    dataset, normalised, _ = real
    model = ecgmodels.build("lstm", n_channels=3, seq_len=dataset.seq_len, **tiny_params("lstm"))

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::made_up")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(OnnxExportError, match=r"'lstm' could not be exported to ONNX .*aten::made_up"):
        export_onnx(ScoringModel(model, False), family="lstm", windows=normalised.X_test[:2], path=tmp_path / "m.onnx")


def _bundle_dir(kind: str, small_real_dir, session_root):
    if kind == "ensemble":
        return ensemble_bundle(small_real_dir, session_root)[0]
    return retrained(small_real_dir, session_root, kind)[1].out


@pytest.mark.parametrize("kind", ["best", "ensemble", "ae-ensemble"])
def test_readme_explains_the_model_and_its_code_runs(kind, small_real_dir, session_root, real, monkeypatch):
    out = _bundle_dir(kind, small_real_dir, session_root)
    dataset, _, _ = real
    readme = (out / "README.md").read_text()
    for words in (
        "cnn",
        "ODC-By",
        "Moody GB, Mark RG",
        "Goldberger AL",
        "ecgsearch predict",
        "onnxruntime",
        "ecgmodels.build",
        "roc_auc",
        "Threshold",
        "study `retrain-small`",
    ):
        assert words in readme, words
    if kind != "best":
        assert "An ensemble of 2" in readme and "exported the ensemble of seeds 0, 1" in readme
    # The PyTorch and ONNX snippets work as written, from the folder holding the bundle.
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    torch_block = next(b for b in blocks if "ecgmodels.build" in b)
    onnx_block = next(b for b in blocks if "InferenceSession" in b)
    monkeypatch.chdir(out.parent)
    namespace = {"X": dataset.X_test[:5]}
    exec(torch_block, namespace)
    expected = load_bundle(out).score(dataset.X_test[:5])
    np.testing.assert_allclose(namespace["score"].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    namespace["X"] = dataset.X_test[:5].numpy()
    exec(onnx_block, namespace)
    np.testing.assert_allclose(namespace["score"], expected, rtol=1e-4, atol=1e-4)


def test_ensemble_bundle_holds_every_seed_in_one_onnx_graph(small_real_dir, session_root, real, tmp_path):
    out = _bundle_dir("ensemble", small_real_dir, session_root)
    _, normalised, _ = real
    states = torch.load(out / "model.pt", weights_only=True)
    assert isinstance(states, list) and len(states) == 2
    bundle = load_bundle(out)
    assert bundle.ensemble == 2 and not bundle.scorer.training
    one_seed = ecgmodels.count_params(bundle.scorer.members[0].model)
    assert bundle.config["n_params"] == 2 * one_seed
    # The graph is the whole ensemble: its scores are the mean of the members', not any one member's.
    windows = normalised.X_test[:9]
    from_onnx = onnx_scores(out / "model.onnx", windows.numpy())
    members = [score_windows(member.model, windows, autoencoder=False) for member in bundle.scorer.members]
    assert np.max(np.abs(from_onnx - np.mean(members, axis=0))) < 1e-4
    assert all(np.max(np.abs(from_onnx - member)) > 1e-4 for member in members)

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    torch.save(states[:1], broken / "model.pt")
    with pytest.raises(BundleError, match=r"model\.pt does not fit config\.json: expected a list of 2 state_dicts"):
        load_bundle(broken)


def test_no_mitdb_attribution_for_other_data(real, tmp_path):
    dataset, normalised, norm = real
    model = ecgmodels.build("cnn", n_channels=3, seq_len=dataset.seq_len, **tiny_params("cnn"))
    write_bundle(
        tmp_path,
        models=[model],
        seeds=[0],
        config=join_config("cnn", tiny_params("cnn"), TrainConfig()),
        norm=norm,
        threshold=0.5,
        meta={"dataset": "synthetic ECG-like beats", "fs": 250},
        source="data/synth",
        metrics={},
        check_windows=normalised.X_test[:2],
    )
    assert "ODC-By" not in (tmp_path / "README.md").read_text()
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["leads"] is None and cfg["sampling_rate_hz"] == 250


def test_load_bundle_errors_name_the_file(small_real_dir, session_root, tmp_path, capsys):
    _, result = retrained(small_real_dir, session_root, "best")
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(result.out, broken)
    (broken / "config.json").unlink()
    with pytest.raises(BundleError, match=r"config\.json is missing"):
        load_bundle(broken)
    shutil.copy(result.out / "config.json", broken / "config.json")
    cfg = json.loads((broken / "config.json").read_text())
    cfg["model_params"]["out_channels"] = [6, 8]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=r"model\.pt does not fit the model in config\.json"):
        load_bundle(broken)
    code = main(["predict", "--model", str(broken), "--input", str(tmp_path / "x.npy")])
    assert code == EXIT_DATA and "model.pt" in capsys.readouterr().err


def test_loaded_bundle_is_in_eval_mode_with_its_stats(small_real_dir, session_root, real):
    _, result = retrained(small_real_dir, session_root, "best")
    _, _, norm = real
    bundle = load_bundle(result.out)
    assert not bundle.scorer.training and bundle.norm == norm
    assert bundle.threshold == json.loads((result.out / "config.json").read_text())["threshold"]
    assert bundle.ensemble is None and bundle.config["seeds"] == [0]
    assert bundle.family == "cnn" and bundle.n_channels == 3 and bundle.window_length == 2000


def test_versions_come_from_package_metadata_as_the_study_records_them():
    """One collector for the bundle and the worker's compatibility check: the same strings the running
    packages report, and None for a package that is not installed."""
    import optuna

    import search
    from search.versions import package_versions, study_versions

    expected = {"ecgsearch": search.__version__, "optuna": optuna.__version__, "torch": torch.__version__}
    assert study_versions() == expected
    assert package_versions(["onnxruntime", "no-such-package-for-ecgsearch"]) == {
        "onnxruntime": onnxruntime.__version__,
        "no-such-package-for-ecgsearch": None,
    }
