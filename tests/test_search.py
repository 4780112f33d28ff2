"""`ecgsearch start` / `worker` end to end on a real MIT-BIH slice: budget, resume, pruning, sampling, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from studies import is_infeasible, open_storage
from study_fixtures import wait_for_training_trial

REPO_ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load(storage_url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials in the budget: COMPLETE + PRUNED, less those stopped before training as infeasible."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if not is_infeasible(t)]


def assert_clean_budget(study: optuna.Study, budget: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), f"a trial number twice: {numbers}"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], "trials left RUNNING"
    assert len(finished(study)) == budget


def assert_no_repeated_configs(study: optuna.Study) -> None:
    """Every worker process samples from its own seed: no two trials (re-queued copies aside) share params."""
    sampled = [t for t in study.get_trials(deepcopy=False) if t.params and "fixed_params" not in t.system_attrs]
    seen: dict[str, int] = {}
    for trial in sampled:
        key = repr(sorted(trial.params.items()))
        assert key not in seen, f"trials {seen[key]} and {trial.number} ran the same params {trial.params}"
        seen[key] = trial.number


def spawn_worker(study: str, storage: str, *extra: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, ECGSEARCH_THREADS="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search.cli",
            "worker",
            "--study",
            study,
            "--storage",
            storage,
            "--mlflow-uri",
            "off",
            "--no-progress",
            *extra,
        ],
        cwd=log.parent,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def test_start_runs_budget_then_resume_adds_exactly_the_difference(
    tiny_real_dir, tmp_path, monkeypatch, capsys, start_args
):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", "--trials", "4", "--epochs", "2")) == 0
    study = load(storage, "cnn")
    assert len(finished(study)) == 4
    first_numbers = {t.number for t in finished(study)}
    for trial in finished(study):
        assert trial.user_attrs["family"] == "cnn"
        assert trial.user_attrs["config"]["epochs"] == 2
        assert trial.user_attrs["n_params"] > 0
        assert trial.user_attrs["worker_pid"] == os.getpid()
        assert len(trial.user_attrs["history"]) == len(trial.intermediate_values) >= 1

    capsys.readouterr()
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", "--trials", "6", "--epochs", "3")) == 0
    assert "ignored: --epochs 3 (the study keeps 2)" in " ".join(capsys.readouterr().out.split())
    study = load(storage, "cnn")
    assert_clean_budget(study, 6)
    assert {t.user_attrs["config"]["epochs"] for t in finished(study)} == {2}
    assert first_numbers < {t.number for t in finished(study)}
    # A resume samples from a new seed: it does not replay the first run's configs.
    assert_no_repeated_configs(study)

    # Settings left at their defaults are not "ignored", even where the default differs from the study's.
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", "--create-only")) == 0
    assert "ignored" not in capsys.readouterr().out


def test_hyperband_prunes_some_trials(tiny_real_dir, tmp_path, monkeypatch, start_args):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = start_args(
        tiny_real_dir,
        storage,
        "--space",
        "cnn",
        "--study",
        "pruned",
        "--trials",
        "10",
        "--epochs",
        "6",
        "--sampler",
        "random",
        "--max-params",
        "60000",
    )
    assert main(args) == 0
    study = load(storage, "pruned")
    # Architectures over --max-params end PRUNED before training too (a constraint the sampler sees): not these.
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if not is_infeasible(t)]
    assert pruned, "hyperband pruned nothing in 10 trials × 6 epochs"
    for trial in pruned:
        assert trial.user_attrs["pruned_at_epoch"] == max(trial.intermediate_values)
        assert trial.user_attrs["pruned_at_epoch"] < 6


@pytest.mark.postgres
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_standalone_workers_on_postgres_never_propose_the_same_trial(
    sampler, tiny_real_dir, tmp_path, monkeypatch, postgres_url, start_args
):
    """Two `ecgsearch worker` processes on one study (as on two machines) each sample from their own seed."""
    monkeypatch.chdir(tmp_path)
    args = ["--space", "cnn", "--study", "shared", "--trials", "4", "--epochs", "3", "--sampler", sampler]
    args += ["--pruner", "none", "--max-params", "60000", "--create-only"]
    assert main(start_args(tiny_real_dir, postgres_url, *args)) == 0
    workers = [spawn_worker("shared", postgres_url, log=tmp_path / f"worker{i}.log") for i in range(2)]
    codes = [worker.wait(timeout=400) for worker in workers]
    logs = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert codes == [0, 0], logs
    study = load(postgres_url, "shared")
    assert_clean_budget(study, 4)
    assert len({t.user_attrs["worker_pid"] for t in study.get_trials(deepcopy=False)}) == 2, logs
    assert_no_repeated_configs(study)


def test_start_with_two_cpu_workers_shares_a_sqlite_study(tiny_real_dir, tmp_path, monkeypatch, start_args):
    """The launcher path: `start --workers 2` runs two worker processes on one SQLite study."""
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        main(
            start_args(
                tiny_real_dir,
                storage,
                "--space",
                "cnn",
                "--study",
                "shared",
                "--trials",
                "6",
                "--epochs",
                "2",
                "--max-params",
                "60000",
                "--workers",
                "2",
            )
        )
        == 0
    )
    study = load(storage, "shared")
    assert_clean_budget(study, 6)
    pids = {t.user_attrs["worker_pid"] for t in finished(study)}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.postgres
def test_killed_worker_trial_fails_and_is_rerun(tiny_real_dir, tmp_path, monkeypatch, postgres_url, start_args):
    monkeypatch.chdir(tmp_path)
    storage = postgres_url
    assert (
        main(
            start_args(
                tiny_real_dir,
                storage,
                "--space",
                "cnn",
                "--study",
                "killed",
                "--trials",
                "3",
                "--epochs",
                "6",
                "--pruner",
                "none",
                "--max-params",
                "60000",
                "--create-only",
            )
        )
        == 0
    )
    heartbeat = ["--heartbeat-interval", "1", "--grace-period", "4"]
    victim = spawn_worker("killed", storage, *heartbeat, log=tmp_path / "victim.log")
    killed_number = wait_for_training_trial(storage, "killed", process=victim, log=tmp_path / "victim.log").number
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    survivor = spawn_worker("killed", storage, *heartbeat, log=tmp_path / "survivor.log")
    assert survivor.wait(timeout=400) == 0, (tmp_path / "survivor.log").read_text()
    study = load(storage, "killed")
    assert_clean_budget(study, 3)
    assert study.trials[killed_number].state == TrialState.FAIL
    reruns = [t for t in finished(study) if t.system_attrs.get("failed_trial") == killed_number]
    assert len(reruns) == 1
    assert reruns[0].params == study.trials[killed_number].params
    assert reruns[0].user_attrs["retried_from"] == killed_number


def test_worker_with_different_data_is_refused(
    tiny_real_dir, small_real_dir, tmp_path, monkeypatch, capsys, start_args
):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", "--study", "s", "--create-only")) == 0
    code = main(
        [
            "worker",
            "--study",
            "s",
            "--storage",
            storage,
            "--data",
            str(small_real_dir),
            "--mlflow-uri",
            "off",
            "--no-progress",
        ]
    )
    assert code == 5
    message = capsys.readouterr().err
    assert "data_fingerprint" in message and str(small_real_dir) in message.replace("\n", "")
    # The study's starting points are still waiting: the refused worker ran none of them.
    assert {t.state for t in load(storage, "s").get_trials()} == {TrialState.WAITING}


def test_missing_data_folder_is_a_data_error(tmp_path, monkeypatch, capsys, start_args):
    monkeypatch.chdir(tmp_path)
    code = main(start_args(tmp_path / "no-such-data", f"sqlite:///{tmp_path / 's.db'}", "--space", "cnn"))
    assert code == 3
    assert "no-such-data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "storage",
    ["postgresql+psycopg://ecg:s3cret@127.0.0.1:1/ecgsearch", "mysql://ecg:s3cret@localhost/x", "not a url"],
)
def test_bad_storage_fails_with_masked_message(storage, tiny_real_dir, tmp_path, monkeypatch, capsys, start_args):
    monkeypatch.chdir(tmp_path)
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn")) == 4
    message = capsys.readouterr().err
    assert "s3cret" not in message
    assert len(message.strip().splitlines()) <= 6


def test_status_shows_states_best_and_budget(tiny_real_dir, tmp_path, monkeypatch, capsys, start_args):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        main(
            start_args(
                tiny_real_dir, storage, "--space", "cnn", "--trials", "2", "--epochs", "1", "--max-params", "60000"
            )
        )
        == 0
    )
    capsys.readouterr()
    assert main(["status", "--study", "cnn", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    best = load(storage, "cnn").best_trial
    assert "COMPLETE" in shown and f"{best.value:.4f}" in shown
    assert "2 of a budget of 2 trials finished" in " ".join(shown.split())
    assert main(["status", "--storage", storage]) == 0
    assert "cnn" in capsys.readouterr().out
    assert main(["status", "--study", "nope", "--storage", storage]) == 5
    assert "cnn" in capsys.readouterr().err  # the message lists the studies that exist


def test_out_of_memory_and_divergence_fail_the_trial_not_the_worker(tiny_real_dir, tmp_path, monkeypatch, start_args):
    import torch

    import search.optimize.objective
    from search.training.loop import TrainingDiverged

    monkeypatch.chdir(tmp_path)
    real_fit = search.optimize.objective.fit
    failures = iter(
        [
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            TrainingDiverged(1, 3, "the training loss", 3e-3),
        ]
    )

    def flaky_fit(*args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(search.optimize.objective, "fit", flaky_fit)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        main(
            start_args(
                tiny_real_dir, storage, "--space", "cnn", "--trials", "2", "--epochs", "1", "--max-params", "60000"
            )
        )
        == 0
    )
    study = load(storage, "cnn")
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.get_trials(states=(TrialState.FAIL,))]
    assert any(reason.startswith("out of memory on cpu") for reason in reasons), reasons
    assert any("diverged at epoch 1, batch 3" in reason for reason in reasons), reasons
    assert len(finished(study)) == 2


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_fails_the_running_trial_and_requeues_it(tiny_real_dir, tmp_path, monkeypatch, start_args, interrupt):
    """Ctrl-C, and SIGTERM (how docker compose and Kubernetes stop a worker), alike."""
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        main(
            start_args(
                tiny_real_dir,
                storage,
                "--space",
                "cnn",
                "--study",
                "ctrlc",
                "--trials",
                "2",
                "--epochs",
                "8",
                "--pruner",
                "none",
                "--max-params",
                "60000",
                "--create-only",
                # Only the interrupted trial may be waiting afterwards.
                "--no-starting-points",
            )
        )
        == 0
    )
    worker = spawn_worker("ctrlc", storage, log=tmp_path / "worker.log")
    running = wait_for_training_trial(storage, "ctrlc", process=worker, log=tmp_path / "worker.log")
    worker.send_signal(interrupt)
    assert worker.wait(timeout=60) == 130, (tmp_path / "worker.log").read_text()

    study = load(storage, "ctrlc")
    interrupted = study.trials[running.number]
    assert interrupted.state == TrialState.FAIL
    assert "interrupted" in interrupted.user_attrs["fail_reason"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [interrupted.params]
    # The study stays usable: the next worker takes the re-queued trial first and finishes the budget.
    assert main(["worker", "--study", "ctrlc", "--storage", storage, "--mlflow-uri", "off", "--no-progress"]) == 0
    study = load(storage, "ctrlc")
    assert_clean_budget(study, 2)
    assert any(t.user_attrs.get("retried_from") == running.number for t in finished(study))


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_trial_is_never_pruned_at_its_last_epoch(tiny_real_dir, make_definition, epochs):
    """Pruning after the last epoch would save no training and discard a finished value."""
    import torch

    from search.data import load_dataset
    from search.optimize.objective import TrialObjective
    from studies import write_definition

    dataset = load_dataset(tiny_real_dir)
    definition = make_definition(
        data_fingerprint=dataset.fingerprint(),
        n_channels=dataset.n_channels,
        seq_len=dataset.seq_len,
        fs=dataset.fs,
        epochs=epochs,
    )
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    write_definition(study, definition)
    objective = TrialObjective(definition=definition, splits=[dataset], device=torch.device("cpu"))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    if epochs == 1:
        assert trial.state == TrialState.COMPLETE and "pruned_at_epoch" not in trial.user_attrs
    else:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_epoch"] == 1
