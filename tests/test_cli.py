"""The click CLI itself: every bad flag refused (exit 2) before anything is written, help with examples,
user text printed as written, storage that must exist, and what `start` says about an unreachable MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from search.cli import cli, main

# (extra `start` flags, the flag the message must name); each must exit 2 before a study exists.
BAD_START_FLAGS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-1"], "--epochs"),
    (["--min-epochs", "5", "--epochs", "3"], "--min-epochs"),
    (["--grace-period", "30", "--heartbeat-interval", "30"], "--grace-period"),
    (["--grace-period", "10", "--heartbeat-interval", "30"], "--grace-period"),
    (["--workers", "0"], "--workers"),
    (["--workers-per-gpu", "0"], "--workers-per-gpu"),
    (["--trials", "0"], "--trials"),
    (["--max-params", "0"], "--max-params"),
    (["--objective", "auc"], "--objective"),
    (["--sampler", "annealing"], "--sampler"),
    (["--pruner", "early"], "--pruner"),
    (["--threads", "0"], "--threads"),
    (["--timeout", "0"], "--timeout"),
    (["--gpus", "0"], "--gpus"),  # no CUDA device on a CPU machine
    (["--workers-per-gpu", "2"], "--workers-per-gpu"),  # ... so no GPU to put two workers on
]


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += all_commands(command, (*prefix, name))
    return paths


@pytest.mark.parametrize(
    ("extra", "flag"), BAD_START_FLAGS, ids=lambda value: " ".join(value) if isinstance(value, list) else None
)
def test_every_bad_start_flag_exits_2_before_anything_is_written(
    extra, flag, tmp_path, monkeypatch, capsys, start_args
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("search.optimize.launcher.cuda_device_count", lambda: 0)
    (tmp_path / "data").mkdir()  # exists, so only the flag can be what is refused
    assert main(start_args(tmp_path / "data", f"sqlite:///{tmp_path / 's.db'}", "--space", "cnn", *extra)) == 2
    message = capsys.readouterr().err
    assert flag in message, message
    assert "Traceback" not in message
    assert not (tmp_path / "s.db").exists(), "a study database was created before the flags were checked"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"], "something was written"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--space", "nope"], ["--space", "nope", "cnn_lstm"]),
        (["--space", "cnn", "--sampler", "annealing"], ["annealing", "tpe"]),
        (["--space", "cnn", "--objective", "auc"], ["auc", "roc_auc"]),
    ],
)
def test_unknown_names_list_the_valid_ones(extra, words, tmp_path, monkeypatch, capsys, start_args):
    monkeypatch.chdir(tmp_path)
    assert main(start_args(tmp_path, f"sqlite:///{tmp_path / 's.db'}", *extra)) == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message


@pytest.mark.parametrize("extra", [["--workers", "0"], ["--grace-period", "5", "--heartbeat-interval", "5"]])
def test_bad_worker_flags_exit_2(extra, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--study", "s", "--storage", f"sqlite:///{tmp_path / 's.db'}", *extra]) == 2
    assert extra[0] in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_worker_on_a_missing_sqlite_file_is_refused_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo.db"
    assert main(["worker", "--study", "cnn", "--storage", f"sqlite:///{missing}", "--mlflow-uri", "off"]) == 4
    message = " ".join(capsys.readouterr().err.split())
    assert str(missing) in message and "does not exist" in message
    assert not missing.exists()
    assert main(["status", "--storage", f"sqlite:///{missing}"]) == 4  # every reader refuses the same way
    assert not missing.exists()


def test_every_command_has_help_with_an_example(capsys):
    paths = all_commands()
    assert {path[0] for path in paths} == {
        "start", "worker", "status", "dashboard", "report", "retrain", "predict", "mlflow-sync", "data",
        "storage-proxy",
    }  # fmt: skip
    for path in [(), *paths]:
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert re.search(r"Example:\n\s+ecgsearch ", text), path


def test_version_and_no_command(capsys):
    from search import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ecgsearch {__version__}"
    assert main([]) == 2
    assert "Commands:" in capsys.readouterr().err
    assert main(["nope"]) == 2
    assert "No such command 'nope'" in capsys.readouterr().err


def test_user_text_is_printed_as_written(tmp_path, capsys):
    """Rich markup is off: a `[/x]` in a path cannot crash the output, a `[y_train]` does not vanish."""
    odd = tmp_path / "runs[/x]" / "data[bold]"
    assert main(["data", "check", str(odd)]) == 3
    assert "[/x]" in capsys.readouterr().err

    folder = tmp_path / "set[/x]"  # a folder `set[` holding `x]`
    folder.mkdir(parents=True)
    arrays = {f"X_{split}": torch.randn(12, 3, 40) for split in ("train", "val", "test")}
    arrays |= {f"y_{split}": torch.tensor([0.0, 1.0] * 6) for split in ("train", "val", "test")}
    arrays["y_train"] = torch.full((12,), 2.0)  # not 0/1: the message names the field in brackets
    for name, tensor in arrays.items():
        torch.save(tensor, folder / f"{name}.pt")
    assert main(["data", "check", str(folder)]) == 3
    message = " ".join(capsys.readouterr().err.split())
    assert "[y_train]" in message and "set[/x]" in message


def test_start_with_mlflow_down_warns_without_an_experiment_none(
    tiny_real_dir, tmp_path, monkeypatch, capsys, start_args
):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = start_args(tiny_real_dir, storage, "--space", "cnn", "--create-only", mlflow_uri="http://127.0.0.1:1")
    assert main(args) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "MLflow at http://127.0.0.1:1 is not reachable" in shown and "mlflow-sync --study cnn" in shown
    assert "experiment None" not in shown


def test_environment_is_read_by_the_cli_only(tmp_path, monkeypatch, parse_command):
    """$ECGSEARCH_STORAGE and $MLFLOW_TRACKING_URI reach the code below the CLI as flag values, and only so."""
    monkeypatch.setenv("ECGSEARCH_STORAGE", "sqlite:///from-env.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    _, params = parse_command(["status"])
    assert params["storage"] == "sqlite:///from-env.db"
    _, params = parse_command(["worker", "--study", "s", "--storage", "sqlite:///flag.db", "--mlflow-uri", "off"])
    assert (params["storage"], params["mlflow_uri"]) == ("sqlite:///flag.db", "off")
    _, params = parse_command(["mlflow-sync", "--study", "s"])
    assert params["mlflow_uri"] == "http://env:5000"

    from search.tracking import resolve_tracking_uri

    assert resolve_tracking_uri(None, f"sqlite:///{tmp_path / 'x.db'}") == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_status_renders_the_running_workers(make_definition):
    """`status` rendering lives in the CLI; `studies` only answers with the data."""
    import io

    from rich.console import Console

    from search.cli.status import render_summary
    from studies import BestTrial, RunningTrial, StudySummary

    running = RunningTrial(4, "gpu-box[1]", 4242, "cuda:1", 3, 5.0, 7.0, "lstm", None)
    summary = StudySummary(
        study_name="mixed",
        definition=make_definition(trials_budget=10),
        counts={"RUNNING": 1, "COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "WAITING": 0},
        n_trials=5,
        trials_remaining=7,
        best=BestTrial(1, 0.9, {}, "lstm", None),
        running=[running],
        exported=(0, "the best trial, 1, is not confirmed"),
    )
    console = Console(file=io.StringIO(), width=160, markup=False)
    console.print(render_summary(summary))
    text = console.file.getvalue()
    assert "Study mixed" in text and "gpu-box[1]" in text and "cuda:1" in text and "0.9000" in text
    assert "3 of a budget of 10 trials finished" in " ".join(text.split())
    assert "Retrain exports: trial 0 (the best trial, 1, is not confirmed)" in " ".join(text.split())
    console = Console(file=io.StringIO(), width=160)
    console.print(render_summary(StudySummary("empty", make_definition(), {"COMPLETE": 0}, 0, None, None)))
    assert "No completed trial yet" in console.file.getvalue()


def test_required_services_fail_instead_of_skipping():
    """With ECGSEARCH_REQUIRE_SERVICES=1 (CI), a test whose PostgreSQL is missing fails; without it, it skips."""
    test = "tests/test_storage_postgres.py::test_missing_database_suggests_createdb"
    repo = Path(__file__).resolve().parents[1]
    # CI itself sets ECGSEARCH_REQUIRE_SERVICES: the "skips" half must run without it.
    inherited = {key: value for key, value in os.environ.items() if key != "ECGSEARCH_REQUIRE_SERVICES"}
    unreachable = {**inherited, "ECGSEARCH_TEST_PG_PORT": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test]
    skipped = subprocess.run(command, cwd=repo, env=unreachable, capture_output=True, text=True)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    required = subprocess.run(
        command, cwd=repo, env={**unreachable, "ECGSEARCH_REQUIRE_SERVICES": "1"}, capture_output=True, text=True
    )
    assert required.returncode != 0 and "ECGSEARCH_REQUIRE_SERVICES is set" in required.stdout, required.stdout


def test_a_table_written_to_a_log_keeps_each_row_on_one_line(capsys) -> None:
    """Piped or logged, rich assumes 80 columns and folds a wide table's labels in two; a seed table
    (retrain) must stay one row per metric so a log can be grepped."""
    from rich.table import Table

    from search.cli.console import out, print_table

    table = Table(title="test metrics per seed")
    for column in ("metric", "seed 17", "seed 18", "seed 19", "mean ± std", "ensemble"):
        table.add_column(column)
    table.add_row("test precision_macro", "0.8256", "0.7413", "0.7781", "0.7816 ± 0.0423", "0.7818")
    width_before = out.width
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert any("test precision_macro" in line and "0.7818" in line for line in lines), lines
    assert max(len(line) for line in lines) > 80 and out.width == width_before
