"""Record-relative timing: the rate features over the patient's own median RR, a second model input that
training, retraining, the ONNX graph and `predict` all compute the same way from the patient ids."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

import ecgmodels
import spaces
from ecgmodels.rhythm import FEATURE_NAMES, RELATIVE_FEATURE_NAMES, RhythmFeatures
from search.cli import main
from search.data import load_dataset
from search.training.config import ConfigError, TrainConfig, join_config
from search.training.loop import TrainingRun, fit
from studies import create_or_load_study, open_storage
from test_rhythm import SECONDS, beat_train

FS = 250.0
TINY_RELATIVE_CNN = {
    "out_channels": [4],
    "kernel_sizes": [7],
    "pool_sizes": [4],
    "fc_units": [],
    "rhythm_branch": True,
    "rhythm_fusion": "average",
    "rhythm_relative": True,
}


def regular_windows(rr_by_patient: dict[int, list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One regular beat train per listed RR (seconds), with the patient id of each."""
    windows, groups = [], []
    for patient, rrs in rr_by_patient.items():
        for rr in rrs:
            windows.append(beat_train(FS, tuple(np.arange(0.3, SECONDS - 0.1, rr)), noise=0.01))
            groups.append(patient)
    return torch.cat(windows), torch.tensor(groups)


def test_record_rr_is_the_median_over_each_patient_s_windows_of_their_median_rr() -> None:
    X, groups = regular_windows({7: [0.6, 0.64, 0.9], 3: [1.0, 1.1, 1.2, 1.3]})
    record = ecgmodels.record_rr(X, groups, fs=FS)
    assert record.shape == (7,) and record.dtype == torch.float32
    one_sample = 1 / FS
    np.testing.assert_allclose(record[:3].numpy(), 0.64, atol=one_sample)  # the middle of 0.6, 0.64, 0.9
    np.testing.assert_allclose(record[3:].numpy(), 1.1, atol=one_sample)  # torch's lower median of an even count
    # The windows' order does not matter, only who they belong to.
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ecgmodels.record_rr(X[order], groups[order], fs=FS), record[order])
    with pytest.raises(ValueError, match="one patient id per window"):
        ecgmodels.record_rr(X, groups[:3], fs=FS)


def test_a_patient_without_a_valid_rhythm_gets_the_neutral_rr() -> None:
    X = torch.zeros(2, 3, round(SECONDS * FS))  # flat: no beat at all
    assert ecgmodels.record_rr(X, torch.tensor([5, 5]), fs=FS).tolist() == [1.0, 1.0]


def test_relative_features_replace_the_two_rate_features_and_keep_the_rest() -> None:
    X, groups = regular_windows({0: [0.6, 0.8, 1.0]})
    extractor = RhythmFeatures(fs=FS, seq_len=X.shape[-1])
    absolute = extractor(X)
    record = ecgmodels.record_rr(X, groups, fs=FS)
    relative = extractor(X, record)
    assert RELATIVE_FEATURE_NAMES[2:] == FEATURE_NAMES[2:] and len(RELATIVE_FEATURE_NAMES) == len(FEATURE_NAMES)
    torch.testing.assert_close(relative[:, 2:], absolute[:, 2:])
    torch.testing.assert_close(relative[:, 0], absolute[:, 0] * record)
    torch.testing.assert_close(relative[:, 1], absolute[:, 1] - record.log())
    # The window at the patient's own rate sits at 0; faster and slower windows on either side of it.
    assert relative[1, 1].abs() < 0.01 and relative[0, 1] < -0.2 and relative[2, 1] > 0.2
    # The same windows from a patient whose usual rate is slower look fast, not normal.
    slower = extractor(X, torch.full((3,), 1.2))
    assert bool((slower[:, 1] < relative[:, 1]).all())


def test_a_relative_model_needs_the_second_input_and_the_config_needs_the_branch() -> None:
    X, groups = regular_windows({0: [0.7, 0.9]})
    model = ecgmodels.build("cnn", n_channels=3, seq_len=X.shape[-1], fs=FS, **TINY_RELATIVE_CNN).eval()
    assert ecgmodels.uses_record_rr(model)
    with pytest.raises(ValueError, match="record-relative timing"):
        model(X)
    with pytest.raises(ValueError, match="patient of every window"):
        ecgmodels.record_rr_for(model, X, None)
    assert model(X, ecgmodels.record_rr_for(model, X, groups)).shape == (2,)
    plain = ecgmodels.build(
        "cnn", n_channels=3, seq_len=X.shape[-1], fs=FS, **{**TINY_RELATIVE_CNN, "rhythm_relative": False}
    )
    assert not ecgmodels.uses_record_rr(plain) and ecgmodels.record_rr_for(plain, X, groups) is None
    with pytest.raises(ecgmodels.InvalidArchitecture, match="rhythm_relative needs rhythm_branch"):
        ecgmodels.build("cnn", n_channels=3, seq_len=X.shape[-1], fs=FS, rhythm_relative=True)
    family = ecgmodels.build("rhythm", n_channels=3, seq_len=X.shape[-1], fs=FS, rhythm_relative=True).eval()
    assert ecgmodels.uses_record_rr(family) and family(X, ecgmodels.record_rr(X, groups, fs=FS)).shape == (2,)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_the_onnx_graph_takes_record_rr_as_a_second_input_and_matches_pytorch(tmp_path) -> None:
    from search.ship.onnx import ONNX_RECORD_RR, export_onnx, onnx_scores
    from search.training.scoring import ScoringModel

    X, groups = regular_windows({0: [0.6, 0.7], 1: [0.9, 1.0, 1.1]})
    model = ecgmodels.build("cnn", n_channels=3, seq_len=X.shape[-1], fs=FS, **TINY_RELATIVE_CNN)
    ecgmodels.adapt_to_data(model, X, torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0]), ecgmodels.record_rr(X, groups, fs=FS))
    record = ecgmodels.record_rr(X, groups, fs=FS)
    difference = export_onnx(
        ScoringModel(model, False), family="cnn", windows=X, record_rr=record, path=tmp_path / "m.onnx"
    )
    assert difference < 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", ONNX_RECORD_RR]
    # The record RR reaches the score: another patient's usual rate gives other scores.
    same = onnx_scores(tmp_path / "m.onnx", X.numpy(), record_rr=record.numpy())
    other = onnx_scores(tmp_path / "m.onnx", X.numpy(), record_rr=np.full(5, 1.3, dtype=np.float32))
    assert np.abs(same - other).max() > 1e-3


def test_the_trainer_feeds_each_window_its_record_rr_and_refuses_data_without_patient_ids(small_real_dir) -> None:
    data, _ = load_dataset(small_real_dir).normalised()
    assert data.has_groups and data.fs is not None
    cfg = TrainConfig(epochs=1, batch_size=32, lr=3e-3, seed=0)
    model = ecgmodels.build("cnn", n_channels=data.n_channels, seq_len=data.seq_len, fs=data.fs, **TINY_RELATIVE_CNN)
    run = TrainingRun(model, data, cfg, autoencoder=False, fs=data.fs)
    torch.testing.assert_close(run.rr_train, ecgmodels.record_rr(data.X_train, data.groups_train, fs=data.fs))
    torch.testing.assert_close(run.rr_val, ecgmodels.record_rr(data.X_val, data.groups_val, fs=data.fs))
    entry = run.step()
    assert np.isfinite(entry["train_loss"]) and 0.0 <= entry["val_roc_auc"] <= 1.0
    without_ids = SimpleNamespace(X_train=data.X_train, y_train=data.y_train, X_val=data.X_val, y_val=data.y_val,
                                  groups_train=None, groups_val=None)  # fmt: skip
    fresh = ecgmodels.build("cnn", n_channels=data.n_channels, seq_len=data.seq_len, fs=data.fs, **TINY_RELATIVE_CNN)
    with pytest.raises(ConfigError, match=r"'rhythm_relative'.*no patient ids"):
        TrainingRun(fresh, without_ids, cfg, autoencoder=False, fs=data.fs)


def test_spaces_offer_record_relative_timing_only_with_patient_ids() -> None:
    def sampled(ctx: spaces.SpaceContext, n: int) -> dict[str, set]:
        seen: dict[str, set] = defaultdict(set)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        for _ in range(n):
            trial = study.ask()
            config = spaces.get("classifiers")(trial, ctx)
            seen[config["family"]].add(config.get("rhythm_relative", False))
            assert ("rhythm_relative" in trial.params) == (
                ctx.patient_ids and (config["family"] == "rhythm" or bool(config.get("rhythm_branch")))
            )
            spaces.validate_config(config, n_channels=3, seq_len=2000, fs=360.0)
            study.tell(trial, 0.5)
        return seen

    with_ids = sampled(spaces.SpaceContext(n_channels=3, seq_len=2000, fs=360.0, patient_ids=True), 80)
    assert with_ids["rhythm"] == {False, True} and True in with_ids["cnn"]
    without = sampled(spaces.SpaceContext(n_channels=3, seq_len=2000, fs=360.0), 40)
    assert set().union(*without.values()) == {False}


def _study_with_a_relative_trial(data_dir, storage_url: str, make_definition) -> None:
    """A study on `data_dir` whose one COMPLETE trial is a tiny cnn with record-relative timing, trained for
    real as a worker would (its flat config in user attr `config`)."""
    dataset = load_dataset(data_dir)
    data, _ = dataset.normalised()
    definition = make_definition(data_path=str(data_dir), data_fingerprint=dataset.fingerprint(),
                                 n_channels=data.n_channels, seq_len=data.seq_len, epochs=2, fs=data.fs,
                                 patient_ids=True)  # fmt: skip
    study, _, _ = create_or_load_study(open_storage(storage_url), "relative", definition)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=3e-3, seed=0)
    config = join_config("cnn", TINY_RELATIVE_CNN, cfg)
    model = ecgmodels.build("cnn", n_channels=data.n_channels, seq_len=data.seq_len, fs=data.fs, **TINY_RELATIVE_CNN)
    fitted = fit(model, data, cfg, autoencoder=False, fs=data.fs)
    study.add_trial(
        optuna.trial.create_trial(
            params={"family": "cnn"},
            distributions={"family": CategoricalDistribution(["cnn"])},
            value=fitted.best_value,
            state=TrialState.COMPLETE,
            user_attrs={"config": config, "family": "cnn", "n_params": ecgmodels.count_params(model)},
        )
    )


def test_retrain_and_predict_compute_the_record_rr_the_same_way(small_real_dir, tmp_path, make_definition, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _study_with_a_relative_trial(small_real_dir, storage, make_definition)
    out = tmp_path / "bundle"
    code = main(["retrain", "--study", "relative", "--storage", storage, "--seeds", "2", "--ensemble",
                 "--out", str(out), "--mlflow-uri", "off", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert "note: the model uses record-relative timing" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["record_rr"]["name"] == "record_rr" and config["onnx"]["record_rr_input"] == "record_rr"
    assert config["config"]["rhythm_relative"] is True and metrics["onnx_max_abs_diff"] < 1e-4

    # The raw test windows and their patients, as a user would hand them to predict.
    windows, groups = tmp_path / "windows.npy", tmp_path / "groups.npy"
    np.save(windows, torch.load(small_real_dir / "X_test.pt").numpy())
    np.save(groups, torch.load(small_real_dir / "groups_test.pt").numpy())
    torch.save(torch.load(small_real_dir / "groups_test.pt"), tmp_path / "g.pt")
    scores = {}
    for runtime in ("torch", "onnx"):
        path = tmp_path / f"{runtime}.json"
        args = ["predict", "--model", str(out), "--input", str(windows), "--groups", str(groups)]
        assert main([*args, "--runtime", runtime, "--out", str(path)]) == 0
        scores[runtime] = np.array([row["score"] for row in json.loads(path.read_text())["predictions"]])
    np.testing.assert_allclose(scores["onnx"], scores["torch"], atol=1e-4)
    from search.ship.bundle import load_bundle

    in_python = load_bundle(out).score(
        torch.load(small_real_dir / "X_test.pt"), groups=torch.load(groups.parent / "g.pt")
    )
    np.testing.assert_allclose(in_python, scores["torch"], atol=1e-6)
    assert "--groups patients.npy" in (out / "README.md").read_text()  # the model card says how to call it
    # The scores retrain reported on the test split are the ones predict gives for the same windows.
    from sklearn.metrics import roc_auc_score

    y_test = torch.load(small_real_dir / "y_test.pt").numpy()
    assert roc_auc_score(y_test, scores["torch"]) == pytest.approx(metrics["test"]["roc_auc"], abs=1e-6)

    capsys.readouterr()
    code = main(["predict", "--model", str(out), "--input", str(windows)])
    assert code == 2
    assert "--groups FILE" in capsys.readouterr().err
    np.save(groups, np.zeros(3, dtype=np.int64))
    code = main(["predict", "--model", str(out), "--input", str(windows), "--groups", str(groups)])
    assert code != 0
    assert "expected one integer patient id per window" in capsys.readouterr().err
