"""The CUDA path in one run: GPU tests, `--gpus all --workers-per-gpu 1,2,4` searches, throughput and packing.

Run it once on any machine with a CUDA GPU (about 8 minutes in all) and copy the summary it prints
into bench/RESULTS.md:

    python bench/gpu_check.py --out gpu_check_results          # on the GPU machine

It runs, each step under its own time limit so the whole stays under `--budget-s`:
1. the `gpu`-marked tests (bf16 autocast, fused AdamW, cudnn.benchmark, device placement);
2. a real short search (`ecgsearch start --space cnn --gpus all --workers-per-gpu K`) for K = 1, 2, 4,
   each on its own SQLite study: trials finished, wall seconds and trained samples/s (from the trials'
   per-epoch history) — the ratio against K = 1 says which `--workers-per-gpu` default to use;
3. `bench/throughput.py --device cuda` (ecgsearch's loop vs the notebook loop, same run);
4. `bench/gpu_packing.py` (K processes on one GPU, aggregate samples/s vs K = 1).
Everything goes into one folder: `results.json` (every step's command, exit code, seconds and
numbers) and `summary.md`. `--quick` runs step 2's machinery on the CPU with tiny sizes (what
`make test` checks: one tiny CPU search and the results files); without CUDA and without `--quick`
it says so and exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

SEARCH_KS = (1, 2, 4)


def run_step(name: str, command: list[str], *, timeout_s: float, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one command with a time limit; its exit code, seconds and the tail of its output."""
    print(f"\n== {name}: {' '.join(command)}  (limit {timeout_s:.0f} s)", flush=True)
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        code, output = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as expired:
        code = 124
        output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
    seconds = time.monotonic() - started
    tail = output.strip().splitlines()[-15:]
    print("\n".join(tail), flush=True)
    print(f"-> exit {code} after {seconds:.1f} s", flush=True)
    return {"step": name, "command": command, "exit_code": code, "seconds": round(seconds, 1), "output_tail": tail}


def search_numbers(database: Path, study: str) -> dict[str, Any]:
    """Trials by state and trained samples/s (sum over epochs of the trials' own `samples_per_s`)."""
    import optuna

    storage = f"sqlite:///{database}"
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    by_state: dict[str, int] = {}
    epoch_rates = []
    for trial in trials:
        by_state[trial.state.name] = by_state.get(trial.state.name, 0) + 1
        epoch_rates += [h["samples_per_s"] for h in trial.user_attrs.get("history") or [] if "samples_per_s" in h]
    devices = sorted({str(t.user_attrs.get("device")) for t in trials if t.user_attrs.get("device")})
    return {
        "trials": by_state,
        "median_epoch_samples_per_s": sorted(epoch_rates)[len(epoch_rates) // 2] if epoch_rates else None,
        "devices": devices,
    }


def search_steps(args: Any, work: Path, data_dir: Path, env: dict[str, str], cuda: bool) -> list[dict[str, Any]]:
    results = []
    trials, epochs, limit = (2, 1, 120) if args.quick else (8, 3, 100)
    for k in SEARCH_KS[:1] if args.quick else SEARCH_KS:
        database = work / f"search_k{k}.db"
        placement = ["--gpus", "all", "--workers-per-gpu", str(k)] if cuda else ["--device", "cpu", "--workers", "1"]
        command = [
            sys.executable, "-m", "search.cli", "start", "--space", "cnn", "--study", f"gpu-check-k{k}",
            "--data", str(data_dir), "--storage", f"sqlite:///{database}", "--mlflow-uri", "off",
            "--trials", str(trials * k), "--epochs", str(epochs), "--pruner", "none", "--no-progress", *placement,
        ]  # fmt: skip
        label = f"search --gpus all --workers-per-gpu {k}" if cuda else "search --device cpu (dry run)"
        result = run_step(label, command, timeout_s=limit, cwd=_common.REPO_ROOT, env=env)
        if database.exists():
            result.update(search_numbers(database, f"gpu-check-k{k}"))
            finished = result["trials"].get("COMPLETE", 0) + result["trials"].get("PRUNED", 0)
            result["trials_per_minute"] = round(60 * finished / result["seconds"], 2) if result["seconds"] else None
        results.append(result)
    base = results[0].get("trials_per_minute")
    for result in results:
        if base and result.get("trials_per_minute"):
            result["vs_K1"] = round(result["trials_per_minute"] / base, 2)
    return results


def summary_lines(info: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    machine = f"{info.get('nproc')} cores, {info.get('cpu')}, torch {info.get('torch')}, CUDA {info.get('cuda')}"
    lines = ["# GPU check", "", f"machine: {machine}", f"date: {info.get('date')}", ""]
    lines += ["| step | exit | seconds | numbers |", "| --- | --- | --- | --- |"]
    for step in steps:
        numbers = {
            k: step[k] for k in ("trials", "trials_per_minute", "vs_K1", "median_epoch_samples_per_s") if k in step
        }
        lines.append(f"| {step['step']} | {step['exit_code']} | {step['seconds']} | {json.dumps(numbers)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: gpu_check_results; --quick: a temp dir)",
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole check")
    args = parser.parse_args(argv)

    import torch

    from search.data import load_dataset

    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_check: no CUDA device is visible to PyTorch here; nothing to check (`--quick` runs the CPU dry run)")
        return 0
    started = time.monotonic()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="ecgsearch-gpu-check-")) if args.quick else Path("gpu_check_results")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    data = _common.prepared_data(synthetic_sizes=(96, 48, 16) if args.quick else (600, 200, 80))
    data_dir = work / "data"
    limits = (32, 16) if args.quick else (1024, 256)
    load_dataset(data.folder).subset(max_train=limits[0], max_val=limits[1], max_test=8).save(data_dir)
    info = _common.print_header("gpu check" + (" (--quick on CPU)" if args.quick else ""), data_label=data.label)
    env = {**os.environ, "PYTHONPATH": str(_common.REPO_ROOT)}

    steps: list[dict[str, Any]] = []
    if cuda:
        tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
        steps.append(run_step("gpu tests", tests, timeout_s=120, cwd=_common.REPO_ROOT, env=env))
    steps += search_steps(args, work, data_dir, env, cuda)
    if cuda and not args.quick:
        # `make test` runs both benches' own --quick modes; here they run for real on the GPU.
        throughput = [sys.executable, "bench/throughput.py", "--json", str(args.out / "throughput.jsonl")]
        throughput += ["--device", "cuda", "--families", "cnn,cnn_lstm", "--repeats", "2"]
        steps.append(run_step("throughput", throughput, timeout_s=150, cwd=_common.REPO_ROOT, env=env))
        packing = [sys.executable, "bench/gpu_packing.py", "--json", str(args.out / "gpu_packing.jsonl")]
        packing += ["--ks", "1,2,4", "--seconds", "25"]
        remaining = args.budget_s - (time.monotonic() - started)
        steps.append(run_step("gpu packing", packing, timeout_s=max(60.0, remaining), cwd=_common.REPO_ROOT, env=env))
    _common.write_json(args.json, "gpu_check", steps, info)

    (args.out / "results.json").write_text(json.dumps({"info": info, "steps": steps}, indent=2) + "\n")
    (args.out / "summary.md").write_text("\n".join(summary_lines(info, steps)) + "\n")
    print("\n".join(["", *summary_lines(info, steps)]))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'summary.md'} in {time.monotonic() - started:.0f} s")
    failed = [step["step"] for step in steps if step["exit_code"] != 0]
    if failed:
        print(f"gpu_check: steps that did not exit 0: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
