"""Samplers by name, so a study can record its sampler as a string and rebuild it on resume."""

from __future__ import annotations

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
        return optuna.samplers.TPESampler(
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
