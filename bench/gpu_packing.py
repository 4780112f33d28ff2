"""GPU packing: aggregate training samples/s and trials/hour with K worker processes sharing one GPU.

Small ECG models leave a big GPU mostly idle with one process; `ecgsearch start --workers-per-gpu K`
runs K. This benchmark starts K spawned processes (as the launcher does: one process per slot,
`CUDA_VISIBLE_DEVICES` from the launcher's `slot_environment`), each loading the data onto the device once
and then running `search.training.loop.fit` on one fixed config trial after trial. All start together
after a warm-up; the aggregate rate over the common window is compared with K = 1.

Full mode needs CUDA (it says so and exits 0 without it). `--quick` runs the same machinery on the
CPU with K = 1, 2 and a tiny model, so CI proves the script works; its numbers mean nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

# A config of the cnn family as the search samples them: big enough to be a real trial, small enough
# that one process cannot fill an H100.
FULL_CONFIG: dict[str, Any] = {
    "family": "cnn",
    "out_channels": [32, 64, 128],
    "kernel_sizes": [7, 5, 5],
    "pool_sizes": [2, 2, 2],
    "batch_norm": True,
    "activation": "relu",
    "conv_dropout": 0.1,
    "head": "avg",
    "fc_units": [64],
    "fc_dropout": 0.3,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 1e-3,
}
TINY_CONFIG: dict[str, Any] = {
    "family": "cnn",
    "out_channels": [8, 8],
    "kernel_sizes": [5, 3],
    "pool_sizes": [4, 4],
    "fc_units": [],
    "batch_size": 32,
}


def worker(
    index: int,
    gpu: str | None,
    data_folder: str,
    config: dict[str, Any],
    epochs: int,
    inbox: Any,
    results: Any,
) -> None:
    """One slot: data on the device once, one warm-up trial, then a timed window per command.

    A command is (start_at, seconds): wait until wall-clock `start_at` (so all K slots start together),
    then run trials until `seconds` have passed and report. `None` ends the process.
    """
    from search.optimize.launcher import Slot, slot_environment

    # Before torch initialises CUDA, with the launcher's own rule: exactly the slot's GPU, or none on CPU.
    os.environ.update(slot_environment(Slot(index, gpu, f"slot{index}")))
    import torch

    import ecgmodels
    from search.data import load_dataset
    from search.training.config import split_config
    from search.training.loop import fit

    device = torch.device("cuda" if gpu is not None else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    data = load_dataset(data_folder).normalised()[0].to(device)
    family, model_params, train_cfg = split_config({**config, "epochs": epochs, "seed": index})

    def one_trial() -> None:
        model = ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, **model_params)
        fit(model, data, train_cfg, autoencoder=False, device=device)

    one_trial()  # warm-up: cuDNN autotuning, allocator, first-run costs
    results.put({"index": index, "ready": True})
    while (command := inbox.get()) is not None:
        start_at, seconds = command
        time.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        trials = 0
        while time.time() - started < seconds:
            one_trial()
            trials += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        results.put(
            {
                "index": index,
                "trials": trials,
                "samples": trials * epochs * int(data.X_train.shape[0]),
                "started": started,
                "ended": time.time(),
            }
        )


class SlotPool:
    """max(K) spawned worker processes, started and warmed up once; each K uses the first K of them."""

    def __init__(self, n: int, *, gpu: str | None, data_folder: Path, config: dict[str, Any], epochs: int) -> None:
        context = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.results = context.Queue()
        self.inboxes = [context.Queue() for _ in range(n)]
        self.processes = [
            context.Process(
                target=worker, args=(index, gpu, str(data_folder), config, epochs, self.inboxes[index], self.results)
            )
            for index in range(n)
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self._get()

    def _get(self) -> dict[str, Any]:
        while True:
            try:
                return self.results.get(timeout=5)
            except queue.Empty:
                dead = [p.exitcode for p in self.processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a worker process exited with code {dead[0]}") from None

    def run(self, k: int, seconds: float) -> dict[str, Any]:
        start_at = time.time() + 0.5
        for inbox in self.inboxes[:k]:
            inbox.put((start_at, seconds))
        reports = [self._get() for _ in range(k)]
        window = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
        trials = sum(r["trials"] for r in reports)
        return {
            "K": k,
            "trials": trials,
            "window_s": window,
            "samples_per_s": sum(r["samples"] for r in reports) / window,
            "trials_per_hour": trials / window * 3600,
        }

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0", help="GPU index to pack the workers onto (full mode)")
    parser.add_argument("--ks", default="1,2,4,8", help="numbers of worker processes to compare (full mode)")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed window per K (full mode)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (full mode)")
    args = parser.parse_args(argv)

    import torch

    if args.quick:
        ks, gpu, config, epochs, seconds, limits = [1, 2], None, TINY_CONFIG, 1, 2.0, (32, 16)
    else:
        if not torch.cuda.is_available():
            print(
                "gpu_packing: full mode needs a CUDA GPU and none is visible to PyTorch on this machine "
                f"(torch {torch.__version__}); nothing measured. `--quick` runs the same machinery on the CPU."
            )
            return 0
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
        gpu, config, epochs, seconds, limits = args.gpu, FULL_CONFIG, args.epochs, args.seconds, (None, None)

    data = _common.prepared_data()
    info = _common.print_header(
        "gpu packing: K worker processes on one device"
        + (" (--quick on CPU: numbers mean nothing)" if args.quick else ""),
        data_label=data.label,
        extra={
            "setup": f"device {'cuda:' + gpu if gpu is not None else 'cpu'}, K = {ks}, config {config}, "
            f"{epochs} epoch(s) per trial, {seconds:g} s timed window per K after one warm-up trial each",
        },
    )
    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-packing-") as tmp:
        # Each slot loads only the windows it trains on (the whole prepared set is ~170 MB).
        data_folder = Path(tmp) / "data"
        _common.load_split(data, max_train=limits[0], max_val=limits[1], max_test=2).save(data_folder)
        pool = SlotPool(max(ks), gpu=gpu, data_folder=data_folder, config=config, epochs=epochs)
        try:
            rows = [pool.run(k, seconds) for k in ks]
        finally:
            pool.close()
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["vs_K1"] = row["samples_per_s"] / base
    best = max(rows, key=lambda row: row["samples_per_s"])
    print()
    _common.print_table(rows, ["K", "trials", "window_s", "samples_per_s", "trials_per_hour", "vs_K1"])
    print(f"\nbest K = {best['K']}: {best['vs_K1']:.2f}x the aggregate samples/s of K = 1")
    _common.write_json(
        args.json,
        "gpu_packing",
        [{**row, "device": "cpu" if gpu is None else f"cuda:{gpu}", "quick": args.quick} for row in rows],
        info,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
