"""`ecgsearch report`: one offline HTML page built from a real study in a real SQLite storage."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.cli import main
from search.errors import EXIT_NOTHING_TO_DO
from search.tracking.uri import mlflow_run_link
from studies import StudyDefinition, create_or_load_study, open_storage
from study_fixtures import make_definition

FAMILIES = ("cnn", "cnn_lstm", "transformer")
MLFLOW_SERVER = "http://mlflow.lab:5000"


def report_definition(*, mlflow_tracking_uri: str | None = MLFLOW_SERVER) -> StudyDefinition:
    return make_definition(
        space="all",
        seq_len=360,
        trials_budget=40,
        mlflow_experiment_id="7" if mlflow_tracking_uri else None,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )


def add_trial(study: optuna.Study, number: int, state: TrialState, rng: random.Random) -> None:
    """One trial as a worker leaves it: sampled params, per-epoch values, the worker's user attrs."""
    family = FAMILIES[number % len(FAMILIES)]
    params: dict = {
        "family": family,
        "lr": 10 ** rng.uniform(-4, -2),
        "batch_size": rng.choice([32, 64, 128]),
    }
    distributions: dict = {
        "family": CategoricalDistribution(FAMILIES),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "batch_size": CategoricalDistribution([32, 64, 128]),
    }
    if family == "cnn_lstm":
        params["lstm_hidden"] = rng.choice([32, 64])
        distributions["lstm_hidden"] = CategoricalDistribution([32, 64])
    elif family == "transformer":
        params["tf_layers"] = rng.randint(1, 4)
        distributions["tf_layers"] = IntDistribution(1, 4)
    else:
        params["conv_dropout"] = rng.uniform(0.0, 0.5)
        distributions["conv_dropout"] = FloatDistribution(0.0, 0.5)
    epochs = {TrialState.COMPLETE: 6, TrialState.PRUNED: 2, TrialState.FAIL: 1}[state]
    curve = {e: min(0.99, 0.6 + 0.05 * e + 0.05 * rng.random()) for e in range(1, epochs + 1)}
    user_attrs = {
        "family": family,
        "n_params": 10_000 + 1000 * number,
        "mlflow_run_id": f"run{number:04d}" + "f" * 24,
        "config": {**params, "epochs": 6},
        "worker_host": "gpu-node-1",
        "epoch": epochs,
    }
    if state == TrialState.PRUNED:
        user_attrs["pruned_at_epoch"] = epochs
    if state == TrialState.FAIL:
        user_attrs["fail_reason"] = "TrainingDiverged: loss is nan at epoch 1"
    study.add_trial(
        create_trial(
            state=state,
            value=curve[epochs] if state == TrialState.COMPLETE else None,
            params=params,
            distributions=distributions,
            intermediate_values=curve,
            user_attrs=user_attrs,
        )
    )


def make_study(storage_url: str, name: str, states: list[TrialState], **definition_kwargs) -> optuna.Study:
    study, _, created = create_or_load_study(open_storage(storage_url), name, report_definition(**definition_kwargs))
    assert created
    rng = random.Random(name)
    for number, state in enumerate(states):
        add_trial(study, number, state, rng)
    return study


MIXED = [TrialState.COMPLETE] * 9 + [TrialState.PRUNED] * 5 + [TrialState.FAIL] * 2


@pytest.fixture()
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def run_report(storage_url: str, study: str, out: Path, *extra: str) -> int:
    return main(["report", "--study", study, "--storage", storage_url, "--out", str(out), *extra])


def plotly_figures(page: str) -> dict[str, dict]:
    """div id -> the figure plotly.js is given (data and layout), parsed back out of the page."""
    decoder = json.JSONDecoder()
    figures = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"(?P<id>[^"]+)",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        layout_start = re.compile(r",\s*").match(page, end).end()
        layout, _ = decoder.raw_decode(page, layout_start)
        figures[match["id"]] = {"data": data, "layout": layout}
    return figures


def test_report_holds_every_figure_and_the_top_trials(storage_url: str, tmp_path: Path, capsys) -> None:
    study = make_study(storage_url, "mixed", MIXED)
    out = tmp_path / "out" / "report.html"

    assert run_report(storage_url, "mixed", out, "--top", "5") == 0

    page = out.read_text()
    figures = plotly_figures(page)
    assert set(figures) == {"fig-history", "fig-curves", "fig-importance", "fig-parallel", "fig-families"}
    assert figures["fig-history"]["layout"]["title"]["text"] == "Optimisation history"
    # Self-contained: plotly.js embedded exactly once, nothing fetched from the network.
    assert page.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img\b", page)

    # Learning curves: one trace per trial with reported epochs, pruned ones dashed, failed dotted.
    curves = figures["fig-curves"]["data"]
    assert len(curves) == len(MIXED)
    dash_by_state = {trace["legendgroup"]: trace["line"]["dash"] for trace in curves}
    assert dash_by_state == {"COMPLETE": "solid", "PRUNED": "dash", "FAIL": "dot"}
    assert sum(trace["showlegend"] for trace in curves) == 3

    # Best value per family: every family that completed a trial, with its true best.
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    bars = figures["fig-families"]["data"][0]
    expected = {f: max(t.value for t in completed if t.user_attrs["family"] == f) for f in FAMILIES}
    assert dict(zip(bars["x"], bars["y"], strict=True)) == pytest.approx(expected)

    importance = figures["fig-importance"]["data"][0]
    assert set(importance["y"]) <= {"family", "lr", "batch_size", "lstm_hidden", "tf_layers", "conv_dropout"}
    assert sum(importance["x"]) == pytest.approx(1.0)

    # Top-5 table, best first, with MLflow links built from the study's tracking server.
    rows = re.findall(r'<tr id="trial-(\d+)">', page)
    best_five = sorted(completed, key=lambda t: t.value, reverse=True)[:5]
    assert [int(n) for n in rows] == [t.number for t in best_five]
    best = best_five[0]
    link = f"{MLFLOW_SERVER}/#/experiments/7/runs/{best.user_attrs['mlflow_run_id']}"
    assert f'href="{link}"' in page
    assert f"{best.user_attrs['n_params']:,}" in page

    # Header facts.
    assert "9 complete, 5 pruned, 2 fail (16 in all)" in page
    assert f"{best.value:.4f} (trial {best.number}" in page
    assert "Space</th><td>all" in page
    assert f"Wrote {out}: 16 trials (9 completed)" in capsys.readouterr().out


def test_local_mlflow_store_shows_run_ids_and_the_ui_command(storage_url: str, tmp_path: Path) -> None:
    make_study(storage_url, "local", MIXED[:10], mlflow_tracking_uri="sqlite:///mlflow.db")
    out = tmp_path / "report.html"
    assert run_report(storage_url, "local", out) == 0
    page = out.read_text()
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in page
    assert "<code>run0000ffffffffffffffffffffffff</code>" in page
    assert "#/experiments/" not in page


def test_password_in_storage_url_never_reaches_the_page(tmp_path: Path, monkeypatch) -> None:
    """The study is reached through a URL with a password; the page shows it masked only."""
    from search.report.page import write_report
    from studies import load_study_with_definition

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    make_study(url, "secret", MIXED[:6], mlflow_tracking_uri="http://u:s3cret@mlflow.lab:5000")
    study, definition = load_study_with_definition(open_storage(url), "secret")
    out = tmp_path / "report.html"
    from studies import mask_secrets

    write_report(study, definition, out, storage_label=mask_secrets("postgresql+psycopg://u:s3cret@h/db"))
    page = out.read_text()
    assert "s3cret" not in page
    assert "postgresql+psycopg://u:***@h/db" in page
    # Run links carry no credentials either.
    assert 'href="http://mlflow.lab:5000/#/experiments/7/runs/run0000' in page


def test_single_trial_study_explains_missing_importances(storage_url: str, tmp_path: Path) -> None:
    make_study(storage_url, "one", [TrialState.COMPLETE])
    out = tmp_path / "report.html"
    assert run_report(storage_url, "one", out) == 0
    page = out.read_text()
    assert "Parameter importances need at least 5 completed trials; this study has 1." in page
    assert "Parallel coordinates need at least 2 completed trials; this study has 1." in page
    assert set(plotly_figures(page)) == {"fig-history", "fig-curves", "fig-families"}
    assert page.count("plotly.js v") == 1
    assert len(re.findall(r'<tr id="trial-', page)) == 1


def test_no_completed_trial_gives_a_page_that_says_so(storage_url: str, tmp_path: Path) -> None:
    make_study(storage_url, "pruned-only", [TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED])
    out = tmp_path / "report.html"
    assert run_report(storage_url, "pruned-only", out) == 0
    page = out.read_text()
    assert "none yet: no trial has completed" in page
    assert "No trial has completed yet, so there is no objective value to plot." in page
    assert "table of top trials appears once one does" in page
    # The learning curves of the pruned trials are still there, and carry plotly.js.
    assert set(plotly_figures(page)) == {"fig-curves"}
    assert page.count("plotly.js v") == 1


def test_study_without_trials_is_nothing_to_do(storage_url: str, tmp_path: Path, capsys) -> None:
    make_study(storage_url, "empty", [])
    out = tmp_path / "report.html"
    assert run_report(storage_url, "empty", out) == EXIT_NOTHING_TO_DO
    assert not out.exists()
    assert "has no trials yet" in " ".join(capsys.readouterr().err.split())


def test_missing_sqlite_file_is_a_storage_error_not_an_empty_database(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere.db"
    assert run_report(f"sqlite:///{missing}", "x", tmp_path / "r.html") == 4
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
    assert not missing.exists()


def test_unknown_study_lists_the_existing_ones(storage_url: str, tmp_path: Path, capsys) -> None:
    make_study(storage_url, "real-one", [TrialState.COMPLETE])
    assert run_report(storage_url, "typo", tmp_path / "r.html") != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "typo" in err and "real-one" in err


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://mlflow:5000", "http://mlflow:5000/#/experiments/3/runs/abc"),
        ("https://u:***@ml.example.org/mlflow/", "https://ml.example.org/mlflow/#/experiments/3/runs/abc"),
        ("sqlite:///mlflow.db", None),
        (None, None),
    ],
)
def test_mlflow_run_link(uri: str | None, expected: str | None) -> None:
    assert mlflow_run_link(uri, "3", "abc") == expected
