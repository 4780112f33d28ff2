"""Samplers by name, so a study can record its sampler as a string and rebuild it on resume."""

from __future__ import annotations

import threading
from typing import Any

import optuna

from studies.errors import UnknownComponent

SAMPLERS = ("tpe", "random", "gp", "nsgaii")


def make_sampler(name: str, *, seed: int | None = None, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """The sampler called `name`.

    tpe: multivariate TPE with `group=True`, which models each family's conditional
    parameters jointly (the spaces are define-by-run), and `constant_liar=True`, so parallel
    workers do not all propose the same point while trials are running.
    random: uniform sampling, a baseline.
    gp: Gaussian-process BO (needs torch and scipy, both installed). It models only parameters
    present in every trial (the intersection space: `family` and the training parameters);
    family-specific parameters are sampled at random. Use it for single-family spaces.
    nsgaii: the genetic NSGA-II, for multi-objective studies (TPE is the default there too). It breeds
    only from COMPLETE trials: an infeasible architecture, stopped before training, is never a parent.

    TPE and NSGA-II read each trial's constraints (`Trial.set_constraint`), so they learn where the
    infeasible architectures are; TPE also from trials stopped before training.
    """
    if name == "tpe":
        return OncePerTrialTPESampler(
            multivariate=True,
            group=True,
            constant_liar=True,
            seed=seed,
            n_startup_trials=n_startup_trials,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        # Conditional parameters are sampled independently by design; the per-parameter warning
        # for each of them on every trial would only bury the logs.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise UnknownComponent("sampler", name, SAMPLERS)


class OncePerTrialTPESampler(optuna.samplers.TPESampler):
    """TPE that reads the study's trials from the storage once per trial, as Optuna means it to.

    Optuna caches the trial list once per trial (`Study._get_trials(use_cache=True)`, reset by `ask`), but
    with the Hyperband pruner every independently sampled parameter gets a fresh `_BracketStudy` with an
    empty cache, so TPE re-reads every trial of the study for every parameter: ≈ 30 database queries per
    cnn trial, most of its sampling time on PostgreSQL. This sampler hands the first read of a trial to
    the later bracket studies of the same trial. TPE reads that unfiltered list (`_get_trials`) whatever
    the bracket, so the values it samples are the ones Optuna's own cache would give.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._snapshot = threading.local()  # (trial id, the trials read for it), per sampling thread

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        cache = study._thread_local
        kept = getattr(self._snapshot, "trials", None)
        if cache.cached_all_trials is None and kept is not None and kept[0] == trial._trial_id:
            cache.cached_all_trials = kept[1]
        value = super().sample_independent(study, trial, param_name, param_distribution)
        if cache.cached_all_trials is not None:
            self._snapshot.trials = (trial._trial_id, cache.cached_all_trials)
        return value
