"""Training throughput: ecgsearch's `fit` against the training notebooks' loop, same model and data.

Contender: `search.training.loop.fit` (data resident on the device, index-slice batches, loss kept on the device,
logits + BCE-with-logits, bf16 autocast on CUDA, one metric pass per epoch).
Baseline: the loop the notebooks wrote — TensorDataset + DataLoader(batch 128, shuffle), fp32, a Sigmoid
inside the model with nn.BCELoss, `.item()` every batch, predictions gathered into CPU Python lists and
scikit-learn metrics at the end of every epoch.

Both train the same ecgmodels model (same seed, same initial weights) on the same windows for the same
number of epochs; a full epoch (training + validation pass + metrics) counts for both. Each is warmed up
once, then contender and baseline alternate and the median of the repeats is compared.
Targets: >= 1.5x on CPU, >= 5x on an H100/H200.

Then, each as a ratio measured in the same run (alternating): the cost of training-time augmentation
(the default cnn's `fit` with every augmentation on, AUGMENTATIONS, against none); the cost of the
rhythm branch (the default cnn with `rhythm_branch` and `average` fusion against without); the rhythm
features' QRS band-pass in polyphase form (what `RhythmFeatures.band` runs) against the same taps as one
one-channel conv1d (what it ran before), with the largest difference between the two; and the
evaluation batch size (`score` of the default cnn over the validation windows with the training batch
size against four times it: why `eval_batch_size` keeps the training batch on a CPU).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FAMILIES = ("cnn", "cnn_lstm", "cnn_transformer")
BATCH_SIZE = 128
# Every augmentation on, at strengths a search space might sample.
AUGMENTATIONS = {"aug_amplitude": 0.1, "aug_shift": 0.05, "aug_noise": 0.05, "aug_wander": 0.1, "aug_lead_dropout": 0.1}
CPU_TARGET = 1.5
GPU_TARGET = 5.0


RHYTHM = {"rhythm_branch": True, "rhythm_fusion": "average"}


def build_model(family: str, dataset: Any, **params: Any) -> Any:
    import torch

    import ecgmodels

    torch.manual_seed(0)  # the same initial weights for contender and baseline
    fs = dataset.meta.get("fs")
    return ecgmodels.build(family, n_channels=dataset.n_channels, seq_len=dataset.seq_len, fs=fs, **params)


def train_config(epochs: int, **augmentation: float) -> Any:
    from search.training.config import TrainConfig

    return TrainConfig(
        epochs=epochs, batch_size=BATCH_SIZE, optimizer="adam", lr=1e-3, objective="roc_auc", seed=0, **augmentation
    )


def run_contender(
    family: str, dataset_on_device: Any, epochs: int, device: Any, augmented: bool = False, **params: Any
) -> None:
    from search.training.loop import fit

    model = build_model(family, dataset_on_device, **params)
    cfg = train_config(epochs, **(AUGMENTATIONS if augmented else {}))
    fit(model, dataset_on_device, cfg, autoencoder=False, device=device, fs=dataset_on_device.meta.get("fs"))


def run_baseline(family: str, dataset_cpu: Any, epochs: int, device: Any) -> None:
    """The notebooks' loop, kept as they wrote it (the slow parts are the point of the comparison)."""
    import torch
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(build_model(family, dataset_cpu), nn.Sigmoid()).to(device)
    train_loader = DataLoader(
        TensorDataset(dataset_cpu.X_train, dataset_cpu.y_train.float()), batch_size=BATCH_SIZE, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(dataset_cpu.X_val, dataset_cpu.y_val.float()), batch_size=BATCH_SIZE)
    criterion = nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _epoch in range(epochs):
        model.train()
        running_loss = 0.0
        train_preds: list[float] = []
        train_labels: list[float] = []
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            train_preds.extend(outputs.detach().cpu().numpy().tolist())
            train_labels.extend(labels.cpu().numpy().tolist())
        model.eval()
        val_loss = 0.0
        val_preds: list[float] = []
        val_labels: list[float] = []
        with torch.no_grad():
            for inputs, labels in val_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                outputs = model(inputs)
                val_loss += criterion(outputs, labels).item() * inputs.size(0)
                val_preds.extend(outputs.cpu().numpy().tolist())
                val_labels.extend(labels.cpu().numpy().tolist())
        predicted = [1 if p > 0.5 else 0 for p in val_preds]
        history.append(
            {
                "train_loss": running_loss / len(train_loader.dataset),
                "train_acc": accuracy_score(train_labels, [1 if p > 0.5 else 0 for p in train_preds]),
                "val_loss": val_loss / len(val_loader.dataset),
                "val_acc": accuracy_score(val_labels, predicted),
                "val_precision": precision_score(val_labels, predicted, average="macro", zero_division=0),
                "val_recall": recall_score(val_labels, predicted, average="macro", zero_division=0),
                "val_f1": f1_score(val_labels, predicted, average="macro", zero_division=0),
                "val_auc": roc_auc_score(val_labels, val_preds),
                "val_cm": confusion_matrix(val_labels, predicted).tolist(),
            }
        )


def time_alternating(runners: dict[str, Callable[[], None]], *, repeats: int, device: Any) -> dict[str, list[float]]:
    """Seconds of each runner per repeat; the order alternates so drifting load hits both alike."""
    import time

    times: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            started = time.perf_counter()
            runners[name]()
            _synchronize(device)
            times[name].append(time.perf_counter() - started)
    return times


def measure(family: str, dataset: Any, *, epochs: int, repeats: int, device: Any, warmup: Any) -> dict[str, Any]:
    import statistics

    on_device = dataset.to(device)
    warm_device = warmup.to(device)
    run_contender(family, warm_device, 1, device)  # first runs are several times slower: not timed
    run_baseline(family, warmup, 1, device)
    runners = {
        "ecgsearch": lambda: run_contender(family, on_device, epochs, device),
        "notebook": lambda: run_baseline(family, dataset, epochs, device),
    }
    times = time_alternating(runners, repeats=repeats, device=device)
    samples = dataset.X_train.shape[0] * epochs
    contender_s = statistics.median(times["ecgsearch"])
    baseline_s = statistics.median(times["notebook"])
    return {
        "family": family,
        "n_train": int(dataset.X_train.shape[0]),
        "n_val": int(dataset.X_val.shape[0]),
        "epochs": epochs,
        "repeats": repeats,
        "ecgsearch_samples_per_s": samples / contender_s,
        "notebook_samples_per_s": samples / baseline_s,
        "speedup": baseline_s / contender_s,
        "ecgsearch_s": [round(t, 3) for t in times["ecgsearch"]],
        "notebook_s": [round(t, 3) for t in times["notebook"]],
    }


def measure_augmentation(dataset: Any, *, epochs: int, repeats: int, device: Any, warmup: Any) -> dict[str, Any]:
    """samples/s of the default cnn's `fit` with every augmentation on and with none, and their ratio."""
    import statistics

    on_device, warm_device = dataset.to(device), warmup.to(device)
    for augmented in (False, True):
        run_contender("cnn", warm_device, 1, device, augmented)
    runners = {
        "off": lambda: run_contender("cnn", on_device, epochs, device, False),
        "on": lambda: run_contender("cnn", on_device, epochs, device, True),
    }
    times = time_alternating(runners, repeats=repeats, device=device)
    samples = dataset.X_train.shape[0] * epochs
    off_s, on_s = statistics.median(times["off"]), statistics.median(times["on"])
    return {
        "family": "cnn",
        "augmentations": AUGMENTATIONS,
        "epochs": epochs,
        "repeats": repeats,
        "off_samples_per_s": samples / off_s,
        "on_samples_per_s": samples / on_s,
        "on_over_off": off_s / on_s,
        "off_s": [round(t, 3) for t in times["off"]],
        "on_s": [round(t, 3) for t in times["on"]],
    }


def measure_rhythm(dataset: Any, *, epochs: int, repeats: int, device: Any, warmup: Any) -> dict[str, Any]:
    """samples/s of the default cnn's `fit` with the rhythm branch (average fusion) and without, and their ratio."""
    import statistics

    on_device, warm_device = dataset.to(device), warmup.to(device)
    run_contender("cnn", warm_device, 1, device, **RHYTHM)
    runners = {
        "without": lambda: run_contender("cnn", on_device, epochs, device),
        "with": lambda: run_contender("cnn", on_device, epochs, device, **RHYTHM),
    }
    times = time_alternating(runners, repeats=repeats, device=device)
    samples = dataset.X_train.shape[0] * epochs
    without_s, with_s = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "family": "cnn",
        "variant": "rhythm_branch average",
        "without_samples_per_s": samples / without_s,
        "with_samples_per_s": samples / with_s,
        "with_over_without": without_s / with_s,
    }


def measure_bandpass(dataset: Any, *, repeats: int, device: Any) -> dict[str, Any]:
    """windows/s of the rhythm band-pass: polyphase (`RhythmFeatures.band`) against one one-channel conv1d."""
    import statistics

    import torch
    from torch.nn import functional

    from ecgmodels.rhythm import RhythmFeatures, qrs_bandpass_taps
    from search.data import ASSUMED_WINDOW_S

    fs = dataset.fs or dataset.seq_len / ASSUMED_WINDOW_S
    features = RhythmFeatures(fs=fs, seq_len=dataset.seq_len).to(device)
    taps = torch.tensor(qrs_bandpass_taps(fs), dtype=torch.float32, device=device).view(1, 1, -1)
    X = dataset.X_train.to(device).float()

    def one_channel() -> torch.Tensor:
        half = taps.shape[-1] // 2
        rows = functional.pad(X.reshape(-1, 1, X.shape[-1]), (half, half), mode="replicate")
        return functional.conv1d(rows, taps).reshape(X.shape)

    with torch.inference_mode():
        difference = float((features.band(X) - one_channel()).abs().max())
        runners = {"polyphase": lambda: features.band(X), "one_channel": one_channel}
        times = time_alternating(runners, repeats=max(3, repeats), device=device)
    windows = X.shape[0]
    return {
        "taps": taps.shape[-1],
        "phases": features.phases,
        "polyphase_windows_per_s": windows / statistics.median(times["polyphase"]),
        "one_channel_windows_per_s": windows / statistics.median(times["one_channel"]),
        "polyphase_over_one_channel": statistics.median(times["one_channel"]) / statistics.median(times["polyphase"]),
        "max_abs_difference": difference,
    }


def measure_eval_batch(dataset: Any, *, repeats: int, device: Any) -> dict[str, Any]:
    """windows/s of scoring the validation windows with the eval batch ecgsearch uses and with 4x it."""
    import statistics

    from search.training.scoring import ScoringModel, eval_batch_size, score

    on_device = dataset.to(device)
    scorer = ScoringModel(build_model("cnn", on_device).to(device), autoencoder=False)
    chosen = eval_batch_size(device)
    batches = {"chosen": chosen, "four_times": 4 * chosen}
    score(scorer, on_device.X_val, batch_size=chosen)  # warm-up
    runners = {
        name: (lambda size=size: score(scorer, on_device.X_val, batch_size=size)) for name, size in batches.items()
    }
    times = time_alternating(runners, repeats=max(3, repeats), device=device)
    windows = on_device.X_val.shape[0]
    return {
        "family": "cnn",
        "eval_batch": chosen,
        "windows_per_s": windows / statistics.median(times["chosen"]),
        "four_times_batch": 4 * chosen,
        "four_times_windows_per_s": windows / statistics.median(times["four_times"]),
        "chosen_over_four_times": statistics.median(times["four_times"]) / statistics.median(times["chosen"]),
    }


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(family: str, dataset: Any, device: Any, epochs: int) -> None:
    """Where one run of each loop spends its time (torch.profiler, self time by operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    on_device = dataset.to(device)
    for name, runner, data in (
        ("ecgsearch", run_contender, on_device),
        ("notebook", run_baseline, dataset),
    ):
        runner(family, data, 1, device)
        with torch_profile(activities=activities) as prof:
            runner(family, data, epochs, device)
        print(f"\n-- profile: {name} loop, {family}, {epochs} epoch(s); top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated model families")
    parser.add_argument("--max-train", type=int, default=768, help="training windows (full mode)")
    parser.add_argument("--max-val", type=int, default=256, help="validation windows (full mode)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run (full mode)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop (full mode)")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table per family")
    args = parser.parse_args(argv)

    from search.training.device import resolve_device

    device = resolve_device(args.device)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.quick:
        # One family: a first LSTM run alone can take 15 s on a loaded 2-core machine.
        args.max_train, args.max_val, args.epochs, args.repeats = 32, 32, 1, 1
        families = families[:1]
    data = _common.prepared_data()
    dataset = _common.load_split(data, max_train=args.max_train, max_val=args.max_val)
    warmup = dataset.subset(max_train=min(256, args.max_train), max_val=min(64, args.max_val), max_test=2)
    target = GPU_TARGET if device.type == "cuda" else CPU_TARGET
    title = "throughput: ecgsearch fit vs the notebooks' DataLoader loop"
    info = _common.print_header(
        title + (" (--quick: numbers mean nothing)" if args.quick else ""),
        data_label=data.label,
        extra={
            "setup": f"device {device}, batch {BATCH_SIZE}, {args.epochs} epoch(s) per run, "
            f"{len(dataset.y_train)} train / {len(dataset.y_val)} val windows of {tuple(dataset.X_train.shape[1:])}, "
            f"median of {args.repeats} alternating repeats after one warm-up each",
        },
    )
    rows = []
    for family in families:
        row = measure(family, dataset, epochs=args.epochs, repeats=args.repeats, device=device, warmup=warmup)
        row["device"] = str(device)
        row["target"] = target
        row["verdict"] = "quick run" if args.quick else _common.verdict(row["speedup"], target)
        rows.append(row)
        print(
            f"  {family}: ecgsearch {row['ecgsearch_s']} s, notebook {row['notebook_s']} s -> {row['speedup']:.2f}x",
            flush=True,
        )
        if args.profile:
            profile(family, dataset, device, 1)
    print()
    _common.print_table(
        rows,
        ["family", "ecgsearch_samples_per_s", "notebook_samples_per_s", "speedup", "target", "verdict"],
    )
    augmentation = measure_augmentation(dataset, epochs=args.epochs, repeats=args.repeats, device=device, warmup=warmup)
    augmentation["device"] = str(device)
    print(f"\naugmentation (cnn, all on: {AUGMENTATIONS}): off {augmentation['off_s']} s, on {augmentation['on_s']} s")
    _common.print_table([augmentation], ["family", "off_samples_per_s", "on_samples_per_s", "on_over_off"])
    rhythm = measure_rhythm(dataset, epochs=args.epochs, repeats=args.repeats, device=device, warmup=warmup)
    print(f"\nrhythm branch (cnn, {RHYTHM}):")
    _common.print_table([rhythm], ["family", "without_samples_per_s", "with_samples_per_s", "with_over_without"])
    bandpass = measure_bandpass(dataset, repeats=args.repeats, device=device)
    print("\nrhythm features' QRS band-pass (training windows):")
    _common.print_table(
        [bandpass],
        ["taps", "phases", "polyphase_windows_per_s", "one_channel_windows_per_s", "polyphase_over_one_channel",
         "max_abs_difference"],
    )  # fmt: skip
    eval_batch = measure_eval_batch(dataset, repeats=args.repeats, device=device)
    print("\nevaluation batch size (cnn, scoring the validation windows):")
    _common.print_table(
        [eval_batch],
        ["eval_batch", "windows_per_s", "four_times_batch", "four_times_windows_per_s", "chosen_over_four_times"],
    )
    extra_rows = [augmentation, rhythm, bandpass, eval_batch]
    rows_out = [{**row, "quick": args.quick} for row in rows + extra_rows]
    _common.write_json(args.json, "throughput", rows_out, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
