"""Tag, param and metric names the mirror writes to MLflow: one place, so the worker, `mlflow-sync`
and anyone filtering runs in the MLflow UI spell them alike."""

from __future__ import annotations

# Tags on every run of a study (parent and children): how a run is found again without its id.
TAG_STUDY = "optuna.study"
TAG_ROLE = "ecgsearch.role"
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"

# Child-run tags (one child run per Optuna trial).
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_ID = "optuna.trial_id"
TAG_WORKER_HOST = "ecgsearch.worker_host"
TAG_WORKER_PID = "ecgsearch.worker_pid"
TAG_DEVICE = "ecgsearch.device"
TAG_FAMILY = "ecgsearch.family"
TAG_RETRIED_FROM = "ecgsearch.retried_from"
TAG_STATE = "ecgsearch.state"
TAG_PRUNED_AT_EPOCH = "ecgsearch.pruned_at_epoch"
TAG_FAIL_REASON = "ecgsearch.fail_reason"
TAG_CV_EPOCH = "ecgsearch.cv_epoch"
TAG_INFEASIBLE = "ecgsearch.infeasible"  # which constraint a trial stopped before training violated

# Parent-run tags (one parent run per study).
TAG_SPACE = "ecgsearch.space"
TAG_STORAGE = "ecgsearch.storage"
TAG_SAMPLER = "ecgsearch.sampler"
TAG_PRUNER = "ecgsearch.pruner"
TAG_OBJECTIVE = "ecgsearch.objective"
TAG_DIRECTION = "ecgsearch.direction"
TAG_BEST_VALUE = "ecgsearch.best_value"
TAG_BEST_TRIAL_NUMBER = "ecgsearch.best_trial_number"
TAG_OBJECTIVES = "ecgsearch.objectives"  # a multi-objective study's metric names, in the order of its values
# A multi-objective study's Pareto front, one `trial N: metric=value …` line per trial, cheapest first.
TAG_PARETO_FRONT = "ecgsearch.pareto_front"
# MLflow 3's UI opens an experiment by its kind: without it, on an empty GenAI "Traces" overview.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# MLflow's own tags.
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"

# Params: Optuna's sampled params keep their own names; the flat config is prefixed.
CONFIG_PARAM_PREFIX = "config."

# Metrics.
METRIC_OBJECTIVE = "objective"
METRIC_N_PARAMS = "n_params"
METRIC_BEST_VALUE = "best_value"  # on the parent run, step = the trial number that just finished
# A trial's measured costs (user attr `cost`): `cost_params`, `cost_flops`, `cost_latency_ms`.
METRIC_COST_PREFIX = "cost_"
# MLflow keeps tags up to 8,000 characters; a longer front is cut with a count of what was left out.
TAG_VALUE_LIMIT = 8000

# Artifacts of completed trials.
ARTIFACT_CURVES = "plots/training_curves.html"
ARTIFACT_CONFUSION = "plots/confusion_matrix.html"

# Optuna trial state -> MLflow run status.
RUN_STATUS_FOR_STATE = {
    "RUNNING": "RUNNING",
    "COMPLETE": "FINISHED",
    "PRUNED": "KILLED",
    "FAIL": "FAILED",
}


def experiment_name(study_name: str) -> str:
    return f"ecgsearch/{study_name}"


def run_name(trial_number: int) -> str:
    return f"trial-{trial_number}"
