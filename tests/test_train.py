"""search.training.loop: the loop on toy problems (fast, exact assertions) and on a real MIT-BIH slice."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from search.errors import UsageError
from search.training.config import ConfigError, TrainConfig
from search.training.curve import curve_value
from search.training.device import resolve_device, seed_everything
from search.training.loop import FitResult, TrainingDiverged, fit
from search.training.losses import focal_loss
from search.training.metrics import OBJECTIVES, choose_threshold, classification_metrics
from search.training.scoring import score_windows
from training_toys import (
    EnergyAutoencoder,
    NaNAfter,
    TinyAutoencoder,
    TinyClassifier,
    ToyData,
    energy_windows,
    fresh_classifier,
    make_toy_data,
    quick,
)

EPOCH_KEYS = {"train_loss", "val_loss", "lr", "epoch_seconds", "samples_per_s"} | {
    f"val_{m}" for m in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1", *OBJECTIVES)
}


def test_fit_lowers_the_loss_and_learns_a_learnable_problem() -> None:
    data = make_toy_data()
    result = fit(fresh_classifier(), data, quick(epochs=6), autoencoder=False)
    assert isinstance(result, FitResult) and result.selection == "smoothed"
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    window = [h["val_roc_auc"] for h in result.history[result.best_epoch - 3 : result.best_epoch]]
    assert result.best_epoch >= 3 and result.best_value == pytest.approx(sum(window) / 3)
    assert result.best_value > 0.9
    assert result.threshold == result.best_metrics["threshold"] and not result.stopped_early
    assert result.best_metrics["epoch"] == result.best_epoch
    assert all(v.device.type == "cpu" for v in result.best_state.values())
    assert result.history[0]["val_confusion_matrix"][0][0] >= 0  # full metrics kept in history


def test_on_epoch_gets_every_scalar_metric_from_epoch_one() -> None:
    seen: list[tuple[int, dict]] = []
    result = fit(
        fresh_classifier(),
        make_toy_data(),
        quick(epochs=2),
        autoencoder=False,
        on_epoch=lambda e, m: seen.append((e, m)),
    )
    assert [e for e, _ in seen] == [1, 2]
    for _, metrics in seen:
        assert set(metrics) >= EPOCH_KEYS
        assert "val_confusion_matrix" not in metrics
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert metrics["samples_per_s"] > 0 and metrics["epoch_seconds"] > 0
    assert set(result.history[0]) >= EPOCH_KEYS | {"val_confusion_matrix", "epoch"}


def test_an_exception_in_on_epoch_propagates() -> None:
    class Pruned(Exception):
        pass

    def prune_at_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Pruned(epoch)

    with pytest.raises(Pruned):
        fit(fresh_classifier(), make_toy_data(), quick(epochs=5), autoencoder=False, on_epoch=prune_at_two)


def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    data = make_toy_data()
    seen_states: dict[int, dict[str, Tensor]] = {}
    model = fresh_classifier()

    def record(epoch: int, metrics: dict) -> None:
        seen_states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    # objective val_loss is not offered; "recall_1" saturates at 1.0 quickly and then cannot improve
    cfg = quick(epochs=20, patience=2, objective="recall_1", selection="best")
    result = fit(model, data, cfg, autoencoder=False, on_epoch=record)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2 < 20
    values = [h["val_recall_1"] for h in result.history]
    assert result.best_value == max(values) == values[result.best_epoch - 1]
    assert values.index(max(values)) == result.best_epoch - 1  # the first epoch reaching the best
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, seen_states[result.best_epoch][name])
        assert torch.equal(tensor, result.best_state[name])


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "adam", "scheduler": "cosine"},
        {"optimizer": "adamw", "scheduler": "plateau", "grad_clip": 1.0},
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05, "weight_decay": 1e-4},
        {"optimizer": "sgd", "momentum": 0.0, "lr": 0.05},
        {"loss": "focal", "focal_gamma": 2.0, "pos_weight": "auto"},
        {"loss": "bce", "pos_weight": 3.0},
    ],
)
def test_optimizers_schedulers_and_losses_train(overrides) -> None:
    result = fit(fresh_classifier(), make_toy_data(), quick(epochs=4, **overrides), autoencoder=False)
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_cosine_schedule_anneals_the_learning_rate() -> None:
    result = fit(fresh_classifier(), make_toy_data(), quick(epochs=4, scheduler="cosine"), autoencoder=False)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.5 * lrs[0]


def test_plateau_schedule_halves_the_rate_when_the_objective_stalls() -> None:
    # recall_1 reaches 1.0 and stays: after PLATEAU_PATIENCE flat epochs the rate drops
    result = fit(
        fresh_classifier(),
        make_toy_data(),
        quick(epochs=8, scheduler="plateau", objective="recall_1"),
        autoencoder=False,
    )
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(1e-2) and min(lrs) <= 0.5e-2


def test_focal_loss_down_weights_easy_examples() -> None:
    logits = torch.tensor([4.0, -4.0, 0.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert focal_loss(logits, targets, gamma=0.0, pos_weight=None) == pytest.approx(bce.mean().item())
    p_easy = torch.sigmoid(torch.tensor(4.0)).item()
    expected = ((1 - p_easy) ** 2 * bce[0] + (1 - p_easy) ** 2 * bce[1] + 0.5**2 * bce[2]) / 3
    assert focal_loss(logits, targets, gamma=2.0, pos_weight=None) == pytest.approx(expected.item())


def test_pos_weight_auto_needs_both_classes() -> None:
    data = make_toy_data()
    data.y_train = torch.zeros_like(data.y_train)
    with pytest.raises(ConfigError, match="pos_weight"):
        fit(fresh_classifier(), data, quick(pos_weight="auto"), autoencoder=False)


def test_nan_loss_raises_training_diverged_with_epoch_and_batch() -> None:
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 3.*lower learning rate") as info:
        # 256 windows / 32 = 8 batches per epoch: the 11th forward pass is epoch 2, batch 3
        fit(NaNAfter(after=11), make_toy_data(), quick(), autoencoder=False)
    assert (info.value.epoch, info.value.batch) == (2, 3)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)


def test_huge_learning_rate_diverges_instead_of_training_on_garbage() -> None:
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        fit(fresh_classifier(), make_toy_data(), quick(epochs=5, optimizer="sgd", lr=1e9), autoencoder=False)


def test_same_seed_same_result_different_seed_different_result() -> None:
    data = make_toy_data()
    a = fit(fresh_classifier(1), data, quick(seed=5), autoencoder=False)
    b = fit(fresh_classifier(1), data, quick(seed=5), autoencoder=False)
    c = fit(fresh_classifier(1), data, quick(seed=6), autoencoder=False)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for name in a.best_state:
        assert torch.equal(a.best_state[name], b.best_state[name])
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_autoencoder_trains_on_normal_windows_only_and_thresholds_on_training_windows() -> None:
    data = make_toy_data()
    seed_everything(0)
    model = TinyAutoencoder()
    result = fit(model, data, quick(epochs=8, objective="f1_macro"), autoencoder=True)
    normal = data.X_train[data.y_train == 0]
    seen = torch.cat(model.seen)
    assert seen.shape[0] == 8 * normal.shape[0]
    # every training window it saw is a normal one (rows compared by exact value)
    assert (seen.flatten(1)[:, None] == normal.flatten(1)[None]).all(dim=-1).any(dim=1).all()
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    # the cut is chosen on every training window, anomalies included, though it trains on normal ones only
    train_errors = score_windows(model, data.X_train, autoencoder=True)
    assert result.threshold == pytest.approx(choose_threshold(train_errors, data.y_train, "f1_macro"), rel=1e-5)
    assert result.threshold == result.best_metrics["threshold"]
    assert result.best_metrics["val_f1_macro"] > 0.8
    errors = score_windows(model, data.X_val, autoencoder=True)
    normal_val = (data.y_val == 0).numpy()
    assert result.best_metrics["val_loss"] == pytest.approx(errors[normal_val].mean().item(), rel=1e-5)


def _energy_split(n: int, anomaly_energy: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = (torch.rand(n, generator=g) < 0.3).float()
    y[:2] = torch.tensor([0.0, 1.0])
    energy = torch.where(y == 1, anomaly_energy, 1.0) + 0.2 * (torch.rand(n, generator=g) - 0.5)
    return energy_windows(energy), y


def test_autoencoder_validation_metrics_are_honest_when_a_validation_cut_would_flatter_them() -> None:
    # Training anomalies are loud (energy 3), validation anomalies subtle (1.5). A cut chosen on validation
    # separates them perfectly; the cut chosen on training windows misses them, and that is what is reported.
    g = torch.Generator().manual_seed(0)
    data = ToyData(*_energy_split(256, 3.0, g), *_energy_split(96, 1.5, g), *_energy_split(32, 1.5, g))
    model = EnergyAutoencoder()
    cfg = quick(objective="f1_macro", optimizer="sgd", momentum=0.0)
    result = fit(model, data, cfg, autoencoder=True)
    train_errors = score_windows(model, data.X_train, autoencoder=True)
    val_errors = score_windows(model, data.X_val, autoencoder=True)
    assert result.threshold == pytest.approx(choose_threshold(train_errors, data.y_train, "f1_macro"), rel=1e-5)
    assert 1.1 < result.threshold < 2.9
    honest = classification_metrics(data.y_val, val_errors, result.threshold)["f1_macro"]
    val_cut = choose_threshold(val_errors, data.y_val, "f1_macro")
    assert classification_metrics(data.y_val, val_errors, val_cut)["f1_macro"] == 1.0
    assert honest < 0.6
    assert result.best_metrics["val_f1_macro"] == pytest.approx(honest)
    assert result.best_value == pytest.approx(honest)


def test_classifier_threshold_is_chosen_on_training_windows_by_a_threshold_objective() -> None:
    data = make_toy_data()
    model = fresh_classifier()
    result = fit(model, data, quick(epochs=4, objective="accuracy", selection="last"), autoencoder=False)
    train_scores = score_windows(model, data.X_train, autoencoder=False)
    assert result.threshold == pytest.approx(choose_threshold(train_scores, data.y_train, "accuracy"), abs=1e-6)
    val_scores = score_windows(model, data.X_val, autoencoder=False)
    expected = classification_metrics(data.y_val, val_scores, result.threshold)
    assert result.best_metrics["val_accuracy"] == pytest.approx(expected["accuracy"])
    assert result.best_metrics["val_confusion_matrix"] == expected["confusion_matrix"]


def _record_states(model: nn.Module, states: dict[int, dict[str, Tensor]]):
    def record(epoch: int, metrics: dict) -> None:
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    return record


@pytest.mark.parametrize("selection", ["smoothed", "last", "best"])
def test_fit_keeps_the_weights_the_selection_rule_picks(selection) -> None:
    model, states = fresh_classifier(), {}
    cfg = quick(epochs=5, lr=3e-3, selection=selection, selection_window=2)
    result = fit(model, make_toy_data(), cfg, autoencoder=False, on_epoch=_record_states(model, states))
    values = [h["val_roc_auc"] for h in result.history]
    assert (result.best_value, result.best_epoch) == curve_value(values, selection, 2)
    assert result.selection == selection and result.best_metrics is result.history[result.best_epoch - 1]
    if selection == "last":
        assert result.best_epoch == 5
    if selection == "smoothed":
        assert result.best_value == pytest.approx(sum(values[result.best_epoch - 2 : result.best_epoch]) / 2)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, states[result.best_epoch][name])
        assert torch.equal(tensor, result.best_state[name])


def test_a_run_shorter_than_the_smoothing_window_keeps_its_last_epoch() -> None:
    model, states = fresh_classifier(), {}
    result = fit(model, make_toy_data(), quick(epochs=2), autoencoder=False, on_epoch=_record_states(model, states))
    values = [h["val_roc_auc"] for h in result.history]
    assert result.best_epoch == 2 and result.best_value == pytest.approx(sum(values) / 2)
    assert all(torch.equal(t, states[2][name]) for name, t in model.state_dict().items())


ALL_AUGMENTATIONS = {
    "aug_amplitude": 0.2,
    "aug_shift": 0.1,
    "aug_noise": 0.05,
    "aug_wander": 0.2,
    "aug_lead_dropout": 0.3,
}


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("epoch_seconds", "samples_per_s")} for h in history]


def test_augmentation_changes_training_batches_only_and_is_reproducible() -> None:
    data = make_toy_data()
    cfg = quick(epochs=2, objective="f1_macro", **ALL_AUGMENTATIONS)
    seed_everything(0)
    model = TinyAutoencoder()
    result = fit(model, data, cfg, autoencoder=True, fs=360.0)
    normal = data.X_train[data.y_train == 0]
    seen = torch.cat(model.seen)
    assert seen.shape == (2 * normal.shape[0], *normal.shape[1:])
    assert not (seen.flatten(1)[:, None] == normal.flatten(1)[None]).all(dim=-1).any()  # every batch augmented
    # the threshold sample and validation see the windows as they are
    train_errors = score_windows(model, data.X_train, autoencoder=True)
    assert result.threshold == pytest.approx(choose_threshold(train_errors, data.y_train, "f1_macro"), rel=1e-5)
    val_errors = score_windows(model, data.X_val, autoencoder=True)
    normal_val = (data.y_val == 0).numpy()
    assert result.best_metrics["val_loss"] == pytest.approx(val_errors[normal_val].mean().item(), rel=1e-5)
    seed_everything(0)
    again = fit(TinyAutoencoder(), data, cfg, autoencoder=True, fs=360.0)
    assert _untimed(again.history) == _untimed(result.history)


def test_an_augmented_classifier_still_learns() -> None:
    data = make_toy_data()
    plain = fit(fresh_classifier(), data, quick(epochs=5), autoencoder=False)
    augmented = fit(fresh_classifier(), data, quick(epochs=5, **ALL_AUGMENTATIONS), autoencoder=False)
    losses = [h["train_loss"] for h in augmented.history]
    assert losses[-1] < losses[0] and augmented.best_value > 0.85
    assert losses != [h["train_loss"] for h in plain.history]


def test_lead_dropout_needs_two_leads() -> None:
    data = make_toy_data()
    data.X_train, data.X_val = data.X_train[:, :1], data.X_val[:, :1]
    model = nn.Sequential(nn.Conv1d(1, 1, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(0))
    with pytest.raises(ConfigError, match=r"'aug_lead_dropout'.*2 leads"):
        fit(model, data, quick(aug_lead_dropout=0.2), autoencoder=False)


def test_score_windows_and_metrics() -> None:
    data = make_toy_data()
    model = fresh_classifier()
    result = fit(model, data, quick(epochs=4), autoencoder=False)
    scores = score_windows(model, data.X_test, autoencoder=False, batch_size=7)
    assert scores.shape == (data.X_test.shape[0],) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    metrics = classification_metrics(
        data.y_test, score_windows(model, data.X_test, autoencoder=False, batch_size=5), result.threshold
    )
    assert metrics["roc_auc"] > 0.9
    assert sum(map(sum, metrics["confusion_matrix"])) == data.X_test.shape[0]


def test_wrong_output_shape_is_explained() -> None:
    class TwoLogits(TinyClassifier):
        def forward(self, x: Tensor) -> Tensor:
            return torch.stack([super().forward(x)] * 2, dim=1)

    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        fit(TwoLogits(), make_toy_data(), quick(), autoencoder=False)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(UsageError, match="--device 'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_with_bf16_autocast() -> None:
    data = make_toy_data()
    result = fit(fresh_classifier(), data, quick(epochs=4, amp=True), autoencoder=False, device="cuda")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.best_value > 0.9
    seed_everything(0)
    ae = fit(TinyAutoencoder(), data, quick(epochs=3), autoencoder=True, device="cuda")
    assert math.isfinite(ae.threshold)


# ---- real MIT-BIH slice, real model families ----------------------------------------------------

TINY_REAL_MODELS = {
    "cnn": {"out_channels": [8, 16], "kernel_sizes": [7, 5], "pool_sizes": [4, 4], "fc_units": [16]},
    "cnn_ae": {"out_channels": [8, 16], "kernel_sizes": [7, 5], "pool_sizes": [4, 4], "latent_channels": 4},
}


@pytest.mark.mitdb
@pytest.mark.parametrize(
    ("family", "augmentation"),
    [("cnn", {}), ("cnn_ae", {}), ("cnn", ALL_AUGMENTATIONS)],
    ids=["cnn", "cnn_ae", "cnn+aug"],
)
def test_short_run_on_real_mitdb_slice_lowers_loss_with_finite_metrics(family, augmentation, small_real_dir) -> None:
    import ecgmodels
    from search.data import load_dataset

    data, _ = load_dataset(small_real_dir).normalised()
    autoencoder = ecgmodels.is_autoencoder(family)
    seed_everything(0)
    model = ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, **TINY_REAL_MODELS[family])
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-3, seed=0, **augmentation)
    result = fit(model, data, cfg, autoencoder=autoencoder, fs=data.meta.get("fs"))

    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for entry in result.history:
        scalars = {k: v for k, v in entry.items() if k != "val_confusion_matrix"}
        assert all(math.isfinite(v) for v in scalars.values()), scalars
    assert 0.0 <= result.best_value <= 1.0 and math.isfinite(result.threshold)
    test_metrics = classification_metrics(
        data.y_test, score_windows(model, data.X_test, autoencoder=autoencoder), result.threshold
    )
    assert all(math.isfinite(v) for k, v in test_metrics.items() if k != "confusion_matrix")


class TwoPartClassifier(nn.Module):
    """Two independent parts: the second sees only lead 1, which carries nothing. Training mode returns
    both logits (each to be supervised alone); eval mode returns the first, so the test can tell
    whether each part learned from its own loss."""

    def __init__(self) -> None:
        super().__init__()
        self.learner, self.blind = TinyClassifier(), nn.Linear(1, 1)

    def forward(self, x: Tensor) -> Tensor:
        blind = self.blind(x[:, 1:2, :].mean(dim=-1)).squeeze(-1)
        learner = self.learner(x)
        return torch.stack((learner, blind), dim=-1) if self.training else learner


def test_a_model_with_several_parts_has_each_part_supervised_on_its_own() -> None:
    seed_everything(0)
    model = TwoPartClassifier()
    blind_before = model.blind.weight.detach().clone()
    result = fit(model, make_toy_data(), quick(epochs=4), autoencoder=False)
    # Eval mode scores the learner alone: it learned the bump although its partner could not.
    assert result.best_value > 0.9
    assert not torch.equal(model.blind.weight.detach(), blind_before)  # the blind part got its own gradient
    # The reported training loss sums both parts' losses: the blind part alone keeps it above one BCE's floor.
    assert result.history[-1]["train_loss"] > 0.5
    with pytest.raises(ValueError, match=r"logits of shape \(batch,\)"):
        fit(_ThreeDimensional(), make_toy_data(), quick(epochs=1), autoencoder=False)


class _ThreeDimensional(TinyClassifier):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)[:, None, None]
