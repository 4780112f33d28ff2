"""The training loop: a `TrainingRun` advanced one epoch at a time; `fit` runs one to its end, and
`fit_lockstep` runs several side by side (cross-validation folds, reported together to a pruner).

One epoch, top to bottom (`TrainingRun.step`): train on shuffled batches (augmented when configured),
choose the threshold on a fixed sample of training windows, validate at that threshold, keep the
weights the selection rule picks, step the scheduler.

Fast by construction: the data lives on the device, batches are index slices of it (no DataLoader),
the loss is summed on the device and read back once per epoch (a NaN flag every NAN_CHECK_EVERY
batches), bf16 autocast and fused AdamW on CUDA.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ecgmodels import adapt_to_data, record_rr_for
from search.interrupts import raise_swallowed_interrupt
from search.training.augment import Augmentation
from search.training.config import ConfigError, TrainConfig
from search.training.curve import curve_value
from search.training.device import seed_everything
from search.training.losses import make_loss
from search.training.metrics import choose_threshold, classification_metrics, scalar_metrics
from search.training.scoring import (
    ScoringModel,
    autocast,
    check_reconstruction,
    check_training_logits,
    eval_batch_size,
    score,
)
from search.training.threshold import threshold_metric, threshold_sample, threshold_sample_size

# How often (in batches) the device-side NaN/inf flag is read back: one host sync per this many steps.
NAN_CHECK_EVERY = 25
# ReduceLROnPlateau settings: halve the learning rate after this many epochs without improvement.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2

EpochCallback = Callable[[int, dict[str, float]], None]
LockstepCallback = Callable[[int, list[dict[str, float]]], None]


class SplitData(Protocol):
    """What a run needs of an `ECGDataset` (or of one cross-validation fold of it).

    `X_val`/`y_val` may hold no window: a final fit on every labelled window (after cross-validation
    chose its epochs) has nothing left to validate on; it then keeps its last epoch. Optional attributes
    `groups_train` / `groups_val`, the patient of each window, are read only for a model with
    record-relative timing (which needs them).
    """

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or inf; continuing would train on garbage."""

    def __init__(self, epoch: int, batch: int | None, what: str, lr: float) -> None:
        where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
        super().__init__(
            f"training diverged at {where}: {what} became NaN or inf; "
            f"try a lower learning rate (lr={lr:g}), gradient clipping (grad_clip), or loss='bce'"
        )
        self.epoch, self.batch, self.what, self.lr = epoch, batch, what, lr

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.epoch, self.batch, self.what, self.lr))


@dataclass
class FitResult:
    history: list[dict[str, Any]]  # one entry per finished epoch, confusion matrix included
    best_epoch: int  # the epoch the selection rule picked; its weights are kept
    best_value: float  # the selection rule's value of the objective's curve (e.g. a 3-epoch mean)
    best_metrics: dict[str, Any]  # the history entry of best_epoch
    best_state: dict[str, Tensor] = field(repr=False)  # CPU copy; also loaded into the model
    threshold: float  # chosen on training windows at best_epoch (see threshold.py)
    stopped_early: bool
    selection: str  # the rule that made best_value and best_epoch (see curve.py)


def reported_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """The scalars of a history entry that `on_epoch` receives (no epoch number, no confusion matrix)."""
    return {k: v for k, v in scalar_metrics(entry).items() if k != "epoch"}


def _make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
    fused = device.type == "cuda"  # one kernel per step instead of one per parameter
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
    return None


class _OwnRandomness:
    """A run's own state of torch's global RNG (dropout draws from it), swapped in while the run trains,
    so runs advanced in lockstep train exactly as each would alone."""

    def __init__(self, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.states = [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):  # restores the caller's state on the way out
            torch.set_rng_state(self.states[0])
            for device, state in zip(self.devices, self.states[1:], strict=True):
                torch.cuda.set_rng_state(state, device)
            yield
            self.states = [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in self.devices]


class TrainingRun:
    """One model training on one split: its data views, optimizer, scheduler, generator, history and kept
    weights. `step()` runs one epoch; `result()` loads the kept weights and summarises the run.

    Classifiers train on every training window with BCE (or focal) loss. Autoencoders train on the
    normal training windows (y == 0) with reconstruction MSE; their score is the reconstruction error.
    `data` is normalised; it is moved to `device`. `fs` (Hz) lets augmentation bound baseline wander.
    """

    def __init__(
        self,
        model: nn.Module,
        data: SplitData,
        cfg: TrainConfig,
        *,
        autoencoder: bool,
        device: torch.device | str = "cpu",
        fs: float | None = None,
    ) -> None:
        self.cfg, self.autoencoder, self.device = cfg, autoencoder, torch.device(device)
        seed_everything(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        self.amp = cfg.amp and self.device.type == "cuda"
        self.model = model.to(self.device)
        self.scorer = ScoringModel(self.model, autoencoder)

        X_train, y_train = data.X_train.to(self.device), data.y_train.to(self.device).float()
        self.X_val, self.y_val = data.X_val.to(self.device), data.y_val.to(self.device).float()
        # A model with record-relative timing takes each window's record RR as a second input: per split,
        # from the windows of the same patient (ecgmodels/rhythm.py). None for every other model.
        rr_train = self._record_rr(X_train, getattr(data, "groups_train", None), "training")
        self.rr_val = self._record_rr(self.X_val, getattr(data, "groups_val", None), "validation")
        sample = threshold_sample(y_train, threshold_sample_size(y_train.numel()), seed=cfg.seed).to(self.device)
        self.X_threshold, self.y_threshold = X_train[sample], y_train[sample].cpu()
        self.rr_threshold = rr_train[sample] if rr_train is not None else None
        if autoencoder:  # they learn what normal looks like; anomalies are what they reconstruct badly
            X_train, y_train = X_train[y_train == 0], y_train[y_train == 0]
        if X_train.shape[0] == 0:
            raise ValueError(
                f"the training split has no {'normal (y == 0) ' if autoencoder else ''}windows to train on"
            )
        self.X_train, self.y_train, self.rr_train = X_train, y_train, rr_train
        if not autoencoder:  # a rhythm branch starts from the training windows' features (ecgmodels/rhythm.py)
            adapt_to_data(self.model, X_train, y_train, rr_train)
        self.y_val_cpu = self.y_val.cpu()  # metrics are computed by scikit-learn on the host
        self.validated = self.X_val.shape[0] > 0
        if not self.validated and (cfg.selection != "last" or cfg.patience):
            raise ConfigError(
                "a run without validation windows keeps its last epoch: it needs selection 'last' and no "
                f"early stopping (got selection {cfg.selection!r}, patience {cfg.patience})"
            )

        self.augment = Augmentation.from_config(cfg, fs)
        if self.augment.lead_dropout and X_train.shape[1] < 2:
            raise ConfigError("config field 'aug_lead_dropout': needs at least 2 leads, the data has 1")
        self.loss_fn = make_loss(cfg, autoencoder=autoencoder, y_train=y_train, device=self.device)
        self.optimizer = _make_optimizer(self.model, cfg, self.device)
        self.scheduler = _make_scheduler(self.optimizer, cfg)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)  # order and augmentation
        self.randomness = _OwnRandomness(self.device)
        self.eval_batch = eval_batch_size(self.device, cfg.batch_size)
        self.threshold_metric = threshold_metric(cfg.objective)
        self.history: list[dict[str, Any]] = []
        self.kept_epoch = 0  # the epoch whose weights kept_state holds
        self.kept_state: dict[str, Tensor] = {}

    def _record_rr(self, X: Tensor, groups: Tensor | None, split: str) -> Tensor | None:
        try:
            return record_rr_for(self.model, X, None if groups is None else groups.to(self.device))
        except ValueError as error:
            raise ConfigError(
                f"config field 'rhythm_relative': record-relative timing needs the patient of every {split} "
                "window; the data has no patient ids (groups_*.pt), so train without it"
            ) from error

    @property
    def epoch(self) -> int:
        """Epochs finished so far."""
        return len(self.history)

    def objective_curve(self) -> list[float]:
        """The validation objective per epoch (NaN throughout for a run without validation windows)."""
        return [entry.get(f"val_{self.cfg.objective}", math.nan) for entry in self.history]

    @property
    def patience_exhausted(self) -> bool:
        """`patience` epochs have passed without a new best validation value (whatever the selection rule)."""
        if self.cfg.patience == 0 or not self.history:
            return False
        return self.epoch - curve_value(self.objective_curve(), "best")[1] >= self.cfg.patience

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.epochs or self.patience_exhausted

    def step(self) -> dict[str, Any]:
        """Run the next epoch; its history entry (full metrics, confusion matrix included)."""
        if self.epoch >= self.cfg.epochs:
            raise RuntimeError(f"the run has trained all {self.cfg.epochs} epochs of its budget")
        epoch, started = self.epoch + 1, time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        with self.randomness.active():
            train_loss, train_seconds = self._train_epoch(epoch)
        threshold = self._choose_threshold(epoch)
        validation = self._validate(epoch, threshold) if self.validated else {}
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            **validation,
            "threshold": threshold,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
            "samples_per_s": self.X_train.shape[0] / train_seconds,
        }
        self.history.append(entry)
        self._keep_selected_weights()
        # Without validation the plateau scheduler follows the training loss (higher is better: its negative).
        self._step_scheduler(entry.get(f"val_{self.cfg.objective}", -train_loss))
        return entry

    def _classifier_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss on the logits, summed over the parts of a model that returns several while training."""
        logits = check_training_logits(out, y.shape[0])
        if logits.dim() == 1:
            return self.loss_fn(logits, y)
        return sum((self.loss_fn(part, y) for part in logits.unbind(dim=-1)), torch.zeros((), device=y.device))

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the shuffled training windows: (mean training loss, seconds)."""
        cfg, model, device = self.cfg, self.model, self.device
        started = time.perf_counter()
        model.train()
        n_train = self.X_train.shape[0]
        order = torch.randperm(n_train, device=device, generator=self.generator)
        loss_sum = torch.zeros((), device=device)
        first_bad_batch = torch.full((), -1, device=device, dtype=torch.long)
        for batch in range(math.ceil(n_train / cfg.batch_size)):
            raise_swallowed_interrupt()  # a Ctrl-C that landed in a finalizer stops the run here
            idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
            xb = self.augment(self.X_train[idx], self.generator)
            with autocast(device, self.amp):
                out = model(xb) if self.rr_train is None else model(xb, self.rr_train[idx])
                if self.autoencoder:
                    loss = self.loss_fn(check_reconstruction(out, xb), xb)
                else:
                    loss = self._classifier_loss(out, self.y_train[idx])
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

            # Bookkeeping stays on the device; the host reads it back every NAN_CHECK_EVERY batches.
            loss = loss.detach()
            loss_sum += loss * idx.shape[0]
            newly_bad = ~torch.isfinite(loss) & (first_bad_batch < 0)
            first_bad_batch = torch.where(newly_bad, batch + 1, first_bad_batch)
            if (batch + 1) % NAN_CHECK_EVERY == 0 and int(first_bad_batch) >= 0:
                raise TrainingDiverged(epoch, int(first_bad_batch), "the training loss", cfg.lr)
        train_loss = float(loss_sum) / n_train  # the one host sync of the epoch
        if int(first_bad_batch) >= 0 or not math.isfinite(train_loss):
            bad = int(first_bad_batch)
            raise TrainingDiverged(epoch, bad if bad >= 0 else None, "the training loss", cfg.lr)
        return train_loss, time.perf_counter() - started

    def _choose_threshold(self, epoch: int) -> float:
        """The cut that maximises the threshold metric on the fixed sample of training windows."""
        scores = score(
            self.scorer, self.X_threshold, record_rr=self.rr_threshold, batch_size=self.eval_batch, amp=self.amp
        ).cpu()
        if not bool(torch.isfinite(scores).all()):
            raise TrainingDiverged(epoch, None, "the scores of training windows", self.cfg.lr)
        return choose_threshold(scores, self.y_threshold, self.threshold_metric)

    def _validate(self, epoch: int, threshold: float) -> dict[str, Any]:
        """`val_loss` and every validation metric at `threshold`, named `val_<metric>`."""
        raw = score(self.scorer, self.X_val, record_rr=self.rr_val, batch_size=self.eval_batch, amp=self.amp, raw=True)
        if self.autoencoder:  # the loss it trains on: reconstruction error of normal windows
            normal = self.y_val == 0
            val_loss_t = raw[normal].mean() if bool(normal.any()) else raw.mean()
            scores = raw.cpu()
        else:
            val_loss_t = self.loss_fn(raw, self.y_val)
            scores = torch.sigmoid(raw).cpu()
        val_loss = float(val_loss_t)
        if not (math.isfinite(val_loss) and bool(torch.isfinite(scores).all())):
            raise TrainingDiverged(epoch, None, "the validation loss or outputs", self.cfg.lr)
        metrics = classification_metrics(self.y_val_cpu, scores, threshold)
        return {"val_loss": val_loss, **{f"val_{name}": value for name, value in metrics.items()}}

    def _keep_selected_weights(self) -> None:
        # The rule's pick over a longer curve is always the epoch it picked when that epoch ended (or a
        # later one), so a copy taken now is the one `result()` needs.
        _, chosen = curve_value(self.objective_curve(), self.cfg.selection, self.cfg.selection_window)
        if chosen == self.epoch:
            self.kept_epoch = chosen
            self.kept_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _step_scheduler(self, value: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        elif self.scheduler is not None:
            self.scheduler.step()

    def result(self) -> FitResult:
        """The selection rule's value and epoch, with that epoch's weights loaded into the model."""
        if not self.history:
            raise RuntimeError("no epoch has run yet")
        value, epoch = curve_value(self.objective_curve(), self.cfg.selection, self.cfg.selection_window)
        if epoch != self.kept_epoch:
            raise RuntimeError(f"kept the weights of epoch {self.kept_epoch}, but the rule picks epoch {epoch}")
        self.model.load_state_dict(self.kept_state)
        entry = self.history[epoch - 1]
        return FitResult(
            history=list(self.history),
            best_epoch=epoch,
            best_value=value,
            best_metrics=entry,
            best_state=self.kept_state,
            threshold=entry["threshold"],
            stopped_early=self.patience_exhausted and self.epoch < self.cfg.epochs,
            selection=self.cfg.selection,
        )


def fit(
    model: nn.Module,
    data: SplitData,
    cfg: TrainConfig,
    *,
    autoencoder: bool,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
    fs: float | None = None,
) -> FitResult:
    """Train `model` on `data` (normalised) and keep the weights the selection rule picks.

    `on_epoch(epoch, scalar_metrics)` runs after every epoch (from 1); whatever it raises propagates.
    On return the model holds the kept weights.
    """
    run = TrainingRun(model, data, cfg, autoencoder=autoencoder, device=device, fs=fs)
    while not run.finished:
        entry = run.step()
        if on_epoch is not None:
            on_epoch(run.epoch, reported_metrics(entry))
    return run.result()


def fit_lockstep(runs: Sequence[TrainingRun], on_epoch: LockstepCallback | None = None) -> list[FitResult]:
    """Advance `runs` together, one epoch each per round, until every one of them is finished.

    `on_epoch(epoch, [scalar metrics of run 1..K])` runs after each round; whatever it raises (e.g.
    `optuna.TrialPruned` on the mean over folds) stops all runs. The runs share one epoch budget; a run
    whose patience is exhausted keeps training until all are, so every round reports every run.
    Each run trains exactly as it would alone.
    """
    if not runs:
        raise ValueError("fit_lockstep needs at least one run")
    budgets = sorted({run.cfg.epochs for run in runs})
    if len(budgets) > 1:
        raise ValueError(f"runs in lockstep share one epoch budget; got epochs {budgets}")
    while not all(run.finished for run in runs):
        entries = [run.step() for run in runs]
        if on_epoch is not None:
            on_epoch(runs[0].epoch, [reported_metrics(entry) for entry in entries])
    return [run.result() for run in runs]
