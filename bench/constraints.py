"""Rejected proposals over a study: a size limit as FAIL (the old `--max-params`) vs as a constraint TPE sees.

Before: an architecture over the limit failed the trial (state FAIL); Optuna's samplers skip FAIL trials,
so TPE never learned where the limit lies. After (ecgsearch's constraints): the trial records
`set_constraint("params", n_params / limit - 1)` and ends PRUNED before training, and TPE ranks such
trials below every feasible one. Both runs sample the same space with the same TPE settings
(`studies.make_sampler("tpe")`, 10 random start-up trials) and the same seeds; only how a rejected
proposal is recorded differs. Nothing trains: building a model counts its parameters exactly, which
is all a rejection needs. A feasible trial's value stands in for quality by the model's size
(log of its parameter count, maximised): bigger models tend to score better, the pressure that
drives a real search into the limit. Printed: the fraction of proposals rejected in consecutive
windows of the study.
"""

from __future__ import annotations

import math
import statistics
import sys
import warnings

import _common

# The case the issue reports: cnn_lstm at 150k parameters (11 of 17 trials rejected).
SPACE, MAX_PARAMS = "cnn_lstm", 150_000
N_CHANNELS, SEQ_LEN, FS = 3, 2000, 200.0


def run_study(*, seed: int, n_trials: int, as_constraint: bool) -> list[bool]:
    """One study; whether each trial's proposal was rejected, in trial order."""
    import optuna

    import ecgmodels
    import spaces
    from studies import make_sampler

    space, ctx = spaces.get(SPACE), spaces.SpaceContext(n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)
    rejected: list[bool] = []

    def objective(trial: optuna.Trial) -> float:
        config = space(trial, ctx)
        try:
            _model, n_params = spaces.build_model(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)
        except ecgmodels.InvalidArchitecture:
            rejected.append(True)  # an impossible architecture is a FAIL in both runs
            raise
        over = n_params > MAX_PARAMS
        rejected.append(over)
        if as_constraint:
            trial.set_constraint("params", n_params / MAX_PARAMS - 1.0)
            if over:
                raise optuna.TrialPruned("infeasible")
        elif over:
            raise ecgmodels.InvalidArchitecture(f"{n_params} parameters > max_params {MAX_PARAMS}")
        return math.log(n_params)

    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed=seed))
    study.optimize(objective, n_trials=n_trials, catch=(ecgmodels.InvalidArchitecture,))
    return rejected


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=80, help="trials per study")
    parser.add_argument("--window", type=int, default=20, help="trials per window of the rejected fraction")
    parser.add_argument("--seeds", type=int, default=5, help="studies per method")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.window, args.seeds = 14, 7, 1
    if min(args.trials, args.window, args.seeds) < 1:
        parser.error("--trials, --window and --seeds must be positive")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    info = _common.print_header(
        f"rejected proposals: --max-params as FAIL vs as a constraint ({SPACE}, limit {MAX_PARAMS:,})"
        + (" (--quick: numbers mean nothing)" if args.quick else ""),
        extra={"trials": args.trials, "seeds": args.seeds, "sampler": "tpe (10 random start-up trials)"},
    )
    windows = [(start, min(start + args.window, args.trials)) for start in range(0, args.trials, args.window)]
    rows, records = [], []
    for label, as_constraint in (("FAIL (before)", False), ("constraint (after)", True)):
        runs = [run_study(seed=seed, n_trials=args.trials, as_constraint=as_constraint) for seed in range(args.seeds)]
        row = {"limit recorded as": label}
        for start, end in windows:
            row[f"trials {start + 1}-{end}"] = statistics.mean(sum(run[start:end]) / (end - start) for run in runs)
        row["all trials"] = statistics.mean(sum(run) / len(run) for run in runs)
        rows.append(row)
        records.append({"method": label, **row, "per_seed": [sum(run) / len(run) for run in runs]})
    print("\nfraction of proposals rejected (mean over seeds):")
    _common.print_table([{k: (f"{v:.0%}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows], rows[0])
    _common.write_json(args.json, "constraints", [{**r, "quick": args.quick} for r in records], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
