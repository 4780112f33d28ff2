"""search.training.loop: the loop on toy problems (fast, exact assertions) and on a real MIT-BIH slice."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from search.errors import UsageError
from search.training.config import ConfigError, TrainConfig
from search.training.loop import (
    FitResult,
    TrainingDiverged,
    fit,
    focal_loss,
    resolve_device,
    seed_everything,
)
from search.training.metrics import OBJECTIVES, classification_metrics
from search.training.scoring import score_windows

CHANNELS, LENGTH = 2, 32


@dataclass
class ToyData:
    """Just the six tensors `fit` needs, shaped like an ECGDataset."""

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor


def make_toy_data(n_train: int = 256, n_val: int = 96, n_test: int = 64, seed: int = 0) -> ToyData:
    """Anomalies carry a bump in lead 0: learnable by a tiny conv net in a few epochs."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = (torch.rand(n, generator=g) < 0.3).float()
        y[:2] = torch.tensor([0.0, 1.0])  # both classes in every split
        X = torch.randn(n, CHANNELS, LENGTH, generator=g) * 0.5
        X[:, 0, 8:24] += 1.5 * y[:, None]
        return X, y

    return ToyData(*split(n_train), *split(n_val), *split(n_test))


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, kernel_size=5, padding=2)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=-1)).squeeze(-1)


class TinyAutoencoder(nn.Module):
    """Squeezes each window through 4 numbers: normals (noise) reconstruct, bumps do not."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(CHANNELS * LENGTH, 4)
        self.decode = nn.Linear(4, CHANNELS * LENGTH)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.decode(self.encode(x.flatten(1))).view_as(x)


class NaNAfter(nn.Module):
    """Emits NaN logits from the n-th training forward pass on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.inner = TinyClassifier()
        self.after, self.calls = after, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += self.training
        out = self.inner(x)
        return out * float("nan") if self.calls >= self.after else out


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 1e-2, **overrides})


def fresh_classifier(seed: int = 0) -> TinyClassifier:
    seed_everything(seed)
    return TinyClassifier()


EPOCH_KEYS = {"train_loss", "val_loss", "lr", "epoch_seconds", "samples_per_s"} | {
    f"val_{m}" for m in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1", *OBJECTIVES)
}


def test_fit_lowers_the_loss_and_learns_a_learnable_problem() -> None:
    data = make_toy_data()
    result = fit(fresh_classifier(), data, quick(epochs=6), autoencoder=False)
    assert isinstance(result, FitResult)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.best_value == result.history[result.best_epoch - 1]["val_roc_auc"]
    assert result.best_value > 0.9
    assert result.threshold == 0.5 and not result.stopped_early
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
    result = fit(model, data, quick(epochs=20, patience=2, objective="recall_1"), autoencoder=False, on_epoch=record)
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


def test_autoencoder_trains_on_normal_windows_only_and_thresholds_on_validation() -> None:
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
    assert result.threshold != 0.5 and result.threshold == result.best_metrics["threshold"]
    assert result.best_metrics["val_f1_macro"] > 0.8
    errors = score_windows(model, data.X_val, autoencoder=True)
    normal_val = (data.y_val == 0).numpy()
    assert result.best_metrics["val_loss"] == pytest.approx(errors[normal_val].mean().item(), rel=1e-5)


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
@pytest.mark.parametrize("family", sorted(TINY_REAL_MODELS))
def test_short_run_on_real_mitdb_slice_lowers_loss_with_finite_metrics(family, small_real_dir) -> None:
    import ecgmodels
    from search.data import load_dataset

    data, _ = load_dataset(small_real_dir).normalised()
    autoencoder = ecgmodels.is_autoencoder(family)
    seed_everything(0)
    model = ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, **TINY_REAL_MODELS[family])
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-3, seed=0)
    result = fit(model, data, cfg, autoencoder=autoencoder)

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
