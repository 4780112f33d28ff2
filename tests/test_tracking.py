"""The MLflow mirror against a local SQLite tracking store: live mirroring, spooling while the store is
unreachable and resending without duplicates, and rebuilding from the Optuna database (`mlflow-sync`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mlflow_server import free_port
from search.tracking import TrialMirror, names, resolve_tracking_uri, setup_study_mirror, study_tags, sync_study
from search.tracking.runs import find_runs
from search.tracking.uri import artifact_location
from study_fixtures import make_definition

METRIC_KEYS = ("train_loss", "val_loss", "val_roc_auc")

# (trial number, final state, epochs run, value, reason)
SCENARIO = [
    (0, "COMPLETE", 3, 0.81, None),
    (1, "PRUNED", 2, None, None),
    (2, "COMPLETE", 3, 0.86, None),
    (3, "FAIL", 1, None, "TrainingDiverged: loss is nan at epoch 2, batch 5"),
    (4, "PRUNED", 1, None, None),
]


def epoch_metrics(number: int, epoch: int) -> dict[str, float]:
    return {
        "train_loss": 1.0 / (epoch + number),
        "val_loss": 1.2 / (epoch + number),
        "val_roc_auc": 0.5 + 0.01 * epoch + 0.001 * number,
    }


def trial_config(number: int) -> dict:
    return {
        "family": "cnn",
        "out_channels": [16, 32 + number],
        "lr": 10 ** -(number + 2),
        "batch_norm": True,
        "epochs": 3,
        "objective": "roc_auc",
        "scheduler": None,
    }


def feed(mirror: TrialMirror, durations: list[float] | None = None) -> None:
    """Drive the worker's calls for SCENARIO; the time of every call goes to `durations`."""

    def timed(call, **kwargs):
        started = time.perf_counter()
        result = call(**kwargs)
        if durations is not None:
            durations.append(time.perf_counter() - started)
        return result

    best: tuple[float, int] | None = None
    for number, state, epochs, value, reason in SCENARIO:
        tags = {
            names.TAG_WORKER_HOST: "host-a",
            names.TAG_WORKER_PID: "4242",
            names.TAG_DEVICE: "cpu",
            names.TAG_FAMILY: "cnn",
        }
        if number == 4:
            tags[names.TAG_RETRIED_FROM] = "3"
        timed(
            mirror.trial_started,
            trial_number=number,
            trial_id=100 + number,
            params={"lr": 10 ** -(number + 2), "n_conv": 2},
            config=trial_config(number),
            n_params=1000 + number,
            tags=tags,
        )
        history = []
        for epoch in range(1, epochs + 1):
            metrics = epoch_metrics(number, epoch)
            history.append({"epoch": epoch, **metrics})
            timed(mirror.epoch, trial_number=number, epoch=epoch, metrics=metrics)
        if value is not None and (best is None or value > best[0]):
            best = (value, number)
        timed(
            mirror.trial_finished,
            trial_number=number,
            state=state,
            value=value,
            reason=reason,
            pruned_at_epoch=epochs if state == "PRUNED" else None,
            history=history,
            confusion_matrix=[[40, 2], [3, 11]] if state == "COMPLETE" else None,
            best_value=best[0] if best else None,
            best_trial_number=best[1] if best else None,
        )


def snapshot(client: MlflowClient, experiment_id: str, study_name: str) -> dict:
    """Everything the mirror wrote for a study, without ids or timestamps; fails on duplicate runs."""
    parents = find_runs(client, experiment_id, {names.TAG_STUDY: study_name, names.TAG_ROLE: names.ROLE_STUDY})
    children = find_runs(client, experiment_id, {names.TAG_STUDY: study_name, names.TAG_ROLE: names.ROLE_TRIAL})
    assert len(parents) == 1
    parent = parents[0]
    out = {
        "parent": {
            "tags": {k: v for k, v in parent.data.tags.items() if k.startswith("ecgsearch.")},
            "best_value": [(m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "best_value")],
        }
    }
    numbers = [run.data.tags[names.TAG_TRIAL_NUMBER] for run in children]
    assert len(numbers) == len(set(numbers)), f"duplicate child runs: {sorted(numbers)}"
    for run in children:
        run_id = run.info.run_id
        assert run.data.tags[names.TAG_PARENT_RUN_ID] == parent.info.run_id
        out[int(run.data.tags[names.TAG_TRIAL_NUMBER])] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith(("ecgsearch.", "optuna.trial"))},
            "params": dict(run.data.params),
            "metrics": {
                key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics
            },
            "artifacts": sorted(a.path for a in client.list_artifacts(run_id, "plots")),
        }
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module (creating one costs ≈3 s of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def make_mirror(uri: str, study: str, ids: tuple[str, str], spool: Path, *, background: bool = False) -> TrialMirror:
    return TrialMirror(
        tracking_uri=uri,
        study_name=study,
        experiment_id=ids[0],
        parent_run_id=ids[1],
        spool_dir=spool,
        background=background,
    )


def parent_tags(study: str) -> dict[str, str]:
    return study_tags(
        study_name=study,
        space="cnn",
        storage_url="postgresql+psycopg://bob:s3cret@db:5432/ecg",
        sampler="tpe",
        pruner="hyperband",
        objective="roc_auc",
        direction="maximize",
    )


def test_resolve_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "studies" / "ecg.db"
    assert resolve_tracking_uri(None, f"sqlite:///{db}") == f"sqlite:///{db.parent / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "sqlite:///rel/ecg.db") == f"sqlite:///{tmp_path / 'rel' / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "postgresql+psycopg://u:p@h/db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("http://mlflow:5000", "sqlite:///x.db") == "http://mlflow:5000"
    assert resolve_tracking_uri("off", "sqlite:///x.db") is None
    assert resolve_tracking_uri("OFF", "sqlite:///x.db") is None
    # The environment is the CLI's to read (click passes $MLFLOW_TRACKING_URI in as the flag's value).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "sqlite:///x.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        artifact_location(f"sqlite:///{db.parent / 'mlflow.db'}", "my study")
        == (db.parent / "mlartifacts" / "my_study").as_uri()
    )
    assert artifact_location("http://mlflow:5000", "s") is None


@pytest.fixture(scope="module")
def live(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """SCENARIO mirrored live into study "live"; shared as the reference state of a complete mirror."""
    study = "live"
    spool = tmp_path_factory.mktemp("live-spool")
    ids = setup_study_mirror(tracking_uri=store, study_name=study, tags=parent_tags(study))
    durations: list[float] = []
    feed(make_mirror(store, study, ids, spool), durations)
    return {
        "ids": ids,
        "spool": spool,
        "durations": durations,
        "snapshot": snapshot(MlflowClient(store), ids[0], study),
    }


def test_live_mirror_of_five_trials(store: str, live: dict) -> None:
    study, ids, durations = "live", live["ids"], live["durations"]
    assert setup_study_mirror(tracking_uri=store, study_name=study, tags=parent_tags(study)) == ids
    client = MlflowClient(store)
    experiment = client.get_experiment(ids[0])
    assert experiment.name == "ecgsearch/live"
    assert experiment.artifact_location.endswith("/mlartifacts/live")

    snap = live["snapshot"]
    assert snapshot(client, ids[0], study) == snap
    assert sorted(k for k in snap if k != "parent") == [0, 1, 2, 3, 4]
    parent = snap["parent"]["tags"]
    assert parent[names.TAG_STORAGE] == "postgresql+psycopg://bob:***@db:5432/ecg"
    assert (parent[names.TAG_SPACE], parent[names.TAG_OBJECTIVE]) == ("cnn", "roc_auc")
    assert (parent[names.TAG_BEST_VALUE], parent[names.TAG_BEST_TRIAL_NUMBER]) == ("0.86", "2")
    assert snap["parent"]["best_value"] == [(0, 0.81), (1, 0.81), (2, 0.86), (3, 0.86), (4, 0.86)]
    expected_status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for number, state, epochs, value, reason in SCENARIO:
        run = snap[number]
        assert run["name"] == f"trial-{number}"
        assert run["status"] == expected_status[state]
        assert run["tags"][names.TAG_STATE] == state
        assert run["tags"][names.TAG_TRIAL_NUMBER] == str(number)
        assert run["tags"][names.TAG_TRIAL_ID] == str(100 + number)
        assert run["tags"][names.TAG_WORKER_HOST] == "host-a"
        assert run["tags"].get(names.TAG_PRUNED_AT_EPOCH) == (str(epochs) if state == "PRUNED" else None)
        assert run["tags"].get(names.TAG_FAIL_REASON) == reason
        assert run["tags"].get(names.TAG_RETRIED_FROM) == ("3" if number == 4 else None)
        assert run["params"]["lr"] == repr(10 ** -(number + 2))
        assert run["params"]["config.out_channels"] == f"[16, {32 + number}]"
        assert run["params"]["config.batch_norm"] == "true"
        assert run["params"]["config.scheduler"] == "null"
        assert run["params"]["config.family"] == "cnn"
        for key in METRIC_KEYS:
            assert run["metrics"][key] == [(e, epoch_metrics(number, e)[key]) for e in range(1, epochs + 1)]
        assert run["metrics"]["n_params"] == [(0, 1000.0 + number)]
        assert run["metrics"].get("objective") == ([(epochs, value)] if value is not None else None)
        plots = ["plots/confusion_matrix.html", "plots/training_curves.html"]
        assert run["artifacts"] == (plots if state == "COMPLETE" else [])
    assert not list(live["spool"].rglob("*.jsonl")), "the spool is emptied once MLflow has everything"
    # Per call against a local SQLite store (the report quotes the median).
    assert sorted(durations)[len(durations) // 2] < 1.0


def test_background_sender_mirrors_the_same_as_a_synchronous_one(store: str, live: dict, tmp_path: Path) -> None:
    """The worker's mode: epoch and finish events go out from a thread; after `flush()` nothing differs."""
    study = "background"
    ids = setup_study_mirror(tracking_uri=store, study_name=study, tags=parent_tags(study))
    mirror = make_mirror(store, study, ids, tmp_path / "spool", background=True)
    feed(mirror)
    mirror.flush()
    assert mirror.spool.pending_trials() == []
    assert snapshot(MlflowClient(store), ids[0], study) == live["snapshot"]


def test_unreachable_store_spools_fast_then_flush_catches_up(store: str, live: dict, tmp_path: Path) -> None:
    study = "offline"
    ids = setup_study_mirror(tracking_uri=store, study_name=study, tags=parent_tags(study))
    spool = tmp_path / "spool"
    down = make_mirror(f"http://127.0.0.1:{free_port()}", study, ids, spool)
    durations: list[float] = []
    feed(down, durations)
    assert max(durations[1:]) < 1.0, durations  # the first call pays the probe
    assert sum(durations) < 5.0
    files = sorted(p.name for p in (spool / study).glob("*.jsonl"))
    assert files == [f"trial-{n}.jsonl" for n in range(5)]
    client = MlflowClient(store)
    assert not find_runs(client, ids[0], {names.TAG_STUDY: study, names.TAG_ROLE: names.ROLE_TRIAL})

    saved = tmp_path / "saved"
    shutil.copytree(spool, saved)
    up = make_mirror(store, study, ids, spool)
    assert up.flush() == 5 * 2 + sum(s[2] for s in SCENARIO)  # started + finished + every epoch
    assert not list(spool.rglob("*.jsonl"))
    after_flush = snapshot(client, ids[0], study)

    reference = live["snapshot"]
    assert after_flush == reference

    # A resend after a partial failure (events already in MLflow, still in the spool) duplicates nothing.
    shutil.rmtree(spool)
    shutil.copytree(saved, spool)
    assert make_mirror(store, study, ids, spool).flush() == 5 * 2 + sum(s[2] for s in SCENARIO)
    assert snapshot(client, ids[0], study) == after_flush


def test_refused_event_is_set_aside_not_retried_forever(store: str, tmp_path: Path) -> None:
    mirror = make_mirror(store, "refused", ("987654321", "0" * 32), tmp_path / "spool")
    started = time.perf_counter()
    assert mirror.trial_started(trial_number=0, trial_id=1, params={}, config={}, n_params=None, tags={}) is None
    assert time.perf_counter() - started < 5.0
    folder = tmp_path / "spool" / "refused"
    assert not list(folder.glob("*.jsonl"))
    assert (folder / "trial-0.jsonl.rejected").read_text().count("\n") == 1


def optuna_study(name: str) -> optuna.Study:
    study = optuna.create_study(study_name=name, direction="maximize")
    dists = {"lr": FloatDistribution(1e-5, 1e-1, log=True), "n_conv": IntDistribution(1, 4)}

    def add(number: int, state: TrialState, value: float | None, epochs: int, *, history: bool) -> None:
        attrs = {
            "config": trial_config(number),
            "n_params": 2000 + number,
            "worker_host": "h1",
            "worker_pid": 7,
            "device": "cpu",
            "family": "cnn",
        }
        if history:
            attrs["history"] = [{"epoch": e, **epoch_metrics(number, e)} for e in range(1, epochs + 1)]
        if state == TrialState.PRUNED:
            attrs["pruned_at_epoch"] = epochs
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "CUDA out of memory"
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": 10 ** -(number + 2), "n_conv": 2},
                distributions=dists,
                user_attrs=attrs,
                intermediate_values={e: epoch_metrics(number, e)["val_roc_auc"] for e in range(1, epochs + 1)},
            )
        )

    add(0, TrialState.COMPLETE, 0.8, 3, history=True)
    add(1, TrialState.PRUNED, None, 2, history=True)
    add(2, TrialState.COMPLETE, 0.9, 2, history=False)  # an older worker: intermediate values only
    add(3, TrialState.FAIL, None, 1, history=True)
    return study


def test_sync_rebuilds_from_optuna_and_is_idempotent(store: str) -> None:
    study = optuna_study("synced")
    tags = parent_tags("synced")
    summary = sync_study(study, tracking_uri=store, experiment_id=None, parent_run_id=None, study_tags=tags)
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (4, 0, 0)
    client = MlflowClient(store)
    snap = snapshot(client, summary["experiment_id"], "synced")
    assert [snap[n]["status"] for n in range(4)] == ["FINISHED", "KILLED", "FINISHED", "FAILED"]
    assert snap[0]["metrics"]["val_loss"] == [(e, epoch_metrics(0, e)["val_loss"]) for e in (1, 2, 3)]
    assert snap[0]["metrics"]["objective"] == [(3, 0.8)]
    assert snap[0]["artifacts"] == ["plots/training_curves.html"]
    assert snap[2]["metrics"]["val_roc_auc"] == [(e, epoch_metrics(2, e)["val_roc_auc"]) for e in (1, 2)]
    assert "val_loss" not in snap[2]["metrics"]
    assert snap[1]["tags"][names.TAG_PRUNED_AT_EPOCH] == "2"
    assert snap[3]["tags"][names.TAG_FAIL_REASON] == "CUDA out of memory"
    assert snap[3]["tags"][names.TAG_WORKER_PID] == "7"
    assert snap[1]["params"]["config.out_channels"] == "[16, 33]"
    assert snap[1]["metrics"]["n_params"] == [(0, 2001.0)]
    assert snap["parent"]["best_value"] == [(0, 0.8), (1, 0.8), (2, 0.9), (3, 0.9)]
    assert snap["parent"]["tags"][names.TAG_BEST_TRIAL_NUMBER] == "2"

    again = sync_study(
        study,
        tracking_uri=store,
        experiment_id=summary["experiment_id"],
        parent_run_id=summary["parent_run_id"],
        study_tags=tags,
    )
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4)
    assert again["parent_run_id"] == summary["parent_run_id"]
    assert snapshot(client, summary["experiment_id"], "synced") == snap


def test_sync_completes_a_partial_live_mirror(store: str, tmp_path: Path) -> None:
    study = optuna_study("partial")
    tags = parent_tags("partial")
    ids = setup_study_mirror(tracking_uri=store, study_name="partial", tags=tags)
    live = make_mirror(store, "partial", ids, tmp_path / "spool")
    trial = study.trials[0]
    live.trial_started(
        trial_number=0,
        trial_id=trial._trial_id,
        params=trial.params,
        config=trial.user_attrs["config"],
        n_params=2000,
        tags={},
    )
    live.epoch(trial_number=0, epoch=1, metrics=epoch_metrics(0, 1))  # the worker died after epoch 1

    summary = sync_study(study, tracking_uri=store, experiment_id=ids[0], parent_run_id=ids[1], study_tags=tags)
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (3, 1, 0)
    snap = snapshot(MlflowClient(store), ids[0], "partial")
    assert snap[0]["metrics"]["train_loss"] == [(e, epoch_metrics(0, e)["train_loss"]) for e in (1, 2, 3)]
    assert snap[0]["status"] == "FINISHED"


def test_mlflow_sync_command(store: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from search.cli import main
    from studies import write_definition

    storage = f"sqlite:///{tmp_path / 'ecg.db'}"
    study = optuna.create_study(study_name="cli", storage=storage, direction="maximize")
    write_definition(
        study,
        make_definition(
            data_path="data/x", data_fingerprint="f" * 64, seq_len=360, epochs=3, sampler="random", pruner="median"
        ),
    )
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.7,
            params={"n_conv": 2},
            distributions={"n_conv": IntDistribution(1, 4)},
            intermediate_values={1: 0.6, 2: 0.7},
        )
    )
    argv = ["mlflow-sync", "--study", "cli", "--storage", storage, "--mlflow-uri", store]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 runs created, 0 updated, 0 unchanged" in out
    assert main(argv) == 0
    assert "0 runs created, 0 updated, 1 unchanged" in capsys.readouterr().out
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ecgsearch/cli")
    (run,) = find_runs(client, experiment.experiment_id, {names.TAG_STUDY: "cli", names.TAG_ROLE: "trial"})
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_roc_auc")] == [
        (1, 0.6),
        (2, 0.7),
    ]
    assert main(["mlflow-sync", "--study", "nope", "--storage", storage, "--mlflow-uri", store]) == 5
