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
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FAMILIES = ("cnn", "cnn_lstm", "cnn_transformer")
BATCH_SIZE = 128
CPU_TARGET = 1.5
GPU_TARGET = 5.0


def build_model(family: str, dataset: Any) -> Any:
    import torch

    import ecgmodels

    torch.manual_seed(0)  # the same initial weights for contender and baseline
    return ecgmodels.build(family, n_channels=dataset.n_channels, seq_len=dataset.seq_len)


def train_config(epochs: int) -> Any:
    from search.training.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, optimizer="adam", lr=1e-3, objective="roc_auc", seed=0)


def run_contender(family: str, dataset_on_device: Any, epochs: int, device: Any) -> None:
    from search.training.loop import fit

    model = build_model(family, dataset_on_device)
    fit(model, dataset_on_device, train_config(epochs), autoencoder=False, device=device)


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


def measure(family: str, dataset: Any, *, epochs: int, repeats: int, device: Any, warmup: Any) -> dict[str, Any]:
    import statistics
    import time

    on_device = dataset.to(device)
    warm_device = warmup.to(device)
    run_contender(family, warm_device, 1, device)  # first runs are several times slower: not timed
    run_baseline(family, warmup, 1, device)
    times: dict[str, list[float]] = {"ecgsearch": [], "notebook": []}
    for repeat in range(repeats):
        order = ("ecgsearch", "notebook") if repeat % 2 == 0 else ("notebook", "ecgsearch")
        for name in order:
            started = time.perf_counter()
            if name == "ecgsearch":
                run_contender(family, on_device, epochs, device)
            else:
                run_baseline(family, dataset, epochs, device)
            _synchronize(device)
            times[name].append(time.perf_counter() - started)
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
    _common.write_json(args.json, "throughput", [{**row, "quick": args.quick} for row in rows], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
