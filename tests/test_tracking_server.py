"""The MLflow mirror against a real (lean) `mlflow server`: two worker processes mirroring one study at
once, and a server that is down while trials run and comes up later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import REPO_ROOT, Server
from search.tracking import TrialMirror, names, setup_study_mirror
from search.tracking.runs import find_runs, update_parent_best
from search.tracking.spool import Spool


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


WORKER_SCRIPT = """
import json, sys, time
from pathlib import Path
from search.tracking import TrialMirror, setup_study_mirror

uri, study, spool, numbers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
experiment_id, parent_run_id = setup_study_mirror(tracking_uri=uri, study_name=study,
                                                  tags={"ecgsearch.objective": "roc_auc"})
mirror = TrialMirror(tracking_uri=uri, study_name=study, experiment_id=experiment_id,
                     parent_run_id=parent_run_id, spool_dir=Path(spool))
costs = []
for n in numbers:
    started = time.perf_counter()
    mirror.trial_started(trial_number=n, trial_id=n, params={"lr": 0.001 * (n + 1)},
                         config={"family": "cnn", "out_channels": [8, 16]}, n_params=100 + n,
                         tags={"ecgsearch.worker_host": "proc-" + sys.argv[5]})
    history = []
    for epoch in (1, 2, 3):
        metrics = {"val_loss": 1.0 / (n + epoch), "val_roc_auc": 0.5 + 0.01 * (n + epoch)}
        history.append({"epoch": epoch, **metrics})
        mirror.epoch(trial_number=n, epoch=epoch, metrics=metrics)
    mirror.trial_finished(trial_number=n, state="COMPLETE", value=0.5 + 0.01 * (n + 3), history=history,
                          confusion_matrix=[[5, 1], [1, 5]], best_value=0.5 + 0.01 * (n + 3), best_trial_number=n)
    costs.append(time.perf_counter() - started)
# As a worker does before it exits: a request that timed out on the loaded server left events spooled.
mirror.flush()
print(json.dumps({"ids": [experiment_id, parent_run_id], "costs": costs,
                  "pending": mirror.spool.pending_trials()}))
"""


def child_runs(client: MlflowClient, experiment_id: str, study: str) -> dict[int, list]:
    runs: dict[int, list] = {}
    for run in find_runs(client, experiment_id, {names.TAG_STUDY: study, names.TAG_ROLE: names.ROLE_TRIAL}):
        runs.setdefault(int(run.data.tags[names.TAG_TRIAL_NUMBER]), []).append(run)
    return runs


def test_server_down_then_up_catches_up_without_duplicates(server: Server, tmp_path: Path) -> None:
    # `start` created the experiment while the server was up (here: straight into its backend database).
    ids = setup_study_mirror(tracking_uri=server.backend, study_name="downup", tags={})
    spool = tmp_path / "spool"
    mirror = TrialMirror(
        tracking_uri=server.url, study_name="downup", experiment_id=ids[0], parent_run_id=ids[1], spool_dir=spool
    )
    for n in range(3):
        started = time.perf_counter()
        mirror.trial_started(
            trial_number=n, trial_id=n, params={"lr": 0.01}, config={"family": "cnn"}, n_params=10, tags={}
        )
        for epoch in (1, 2):
            mirror.epoch(trial_number=n, epoch=epoch, metrics={"val_loss": 1.0 / epoch})
        mirror.trial_finished(
            trial_number=n,
            state="PRUNED" if n == 1 else "COMPLETE",
            value=None if n == 1 else 0.7,
            pruned_at_epoch=2 if n == 1 else None,
            history=[{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}],
            best_value=0.7,
            best_trial_number=0,
        )
        assert time.perf_counter() - started < 3.0  # 4 calls, each returning at once
    assert mirror.spool.pending_trials() == [0, 1, 2]

    server.start()
    assert mirror.flush() == 3 * 4
    assert mirror.flush() == 0
    client = MlflowClient(server.url)
    runs = child_runs(client, ids[0], "downup")
    assert sorted(runs) == [0, 1, 2] and all(len(r) == 1 for r in runs.values())
    for n, (run,) in runs.items():
        assert run.info.status == ("KILLED" if n == 1 else "FINISHED")
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [
            (1, 1.0),
            (2, 0.5),
        ]
    best = client.get_metric_history(ids[1], "best_value")
    assert sorted((m.step, m.value) for m in best) == [(0, 0.7), (1, 0.7), (2, 0.7)]


def test_two_processes_mirror_one_study_concurrently(server: Server, tmp_path: Path) -> None:
    server.start()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    shares = {"a": [0, 2, 4], "b": [1, 3, 5]}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_SCRIPT,
                server.url,
                "duo",
                str(tmp_path / "spool"),
                json.dumps(numbers),
                name,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, numbers in shares.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results[name] = json.loads(out.strip().splitlines()[-1])
    assert results["a"]["ids"] == results["b"]["ids"]
    experiment_id, parent_run_id = results["a"]["ids"]
    # A request the loaded SQLite-backed server failed stays spooled until the next flush, which the next
    # worker (or `mlflow-sync`) does; after one, nothing is pending and nothing is duplicated below.
    mirror = TrialMirror(
        tracking_uri=server.url,
        study_name="duo",
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        spool_dir=tmp_path / "spool",
    )
    mirror.flush()
    assert Spool(tmp_path / "spool", "duo").pending_trials() == []
    costs = sorted(results["a"]["costs"] + results["b"]["costs"])
    print(f"per-trial mirror cost through mlflow server (2 processes): median {costs[len(costs) // 2]:.3f} s")

    client = MlflowClient(server.url)
    parents = find_runs(client, experiment_id, {names.TAG_STUDY: "duo", names.TAG_ROLE: names.ROLE_STUDY})
    assert [p.info.run_id for p in parents] == [parent_run_id]
    runs = child_runs(client, experiment_id, "duo")
    assert sorted(runs) == list(range(6)) and all(len(r) == 1 for r in runs.values())
    for n, (run,) in runs.items():
        assert run.data.tags[names.TAG_WORKER_HOST] == ("proc-a" if n % 2 == 0 else "proc-b")
        assert run.data.params["config.out_channels"] == "[8, 16]"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")] == [1, 2, 3]
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id, "plots"))
        assert artifacts == ["plots/confusion_matrix.html", "plots/training_curves.html"]
    best = client.get_metric_history(parent_run_id, "best_value")
    assert sorted(m.step for m in best) == list(range(6))
    # The parent's best tags are read-then-written by each process, so two finishing at once can leave an
    # older best (MLflow has no compare-and-set); the next finishing trial moves them to the true best.
    update_parent_best(client, parent_run_id, trial_number=5, best_value=0.5 + 0.01 * 8, best_trial_number=5)
    assert client.get_run(parent_run_id).data.tags[names.TAG_BEST_TRIAL_NUMBER] == "5"
