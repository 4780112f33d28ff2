"""`ecgsearch` command line: one module per subcommand under `search/cli/`.

Each command module defines `register(subparsers) -> argparse.ArgumentParser` (adding its own
parser with `help`, a description and an `Example:` epilog) and sets `func=run` on it, where
`run(args) -> int` returns the exit code. Errors that a user can fix are raised as the packages'
own error types and turned into a one-paragraph message and an exit code here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

# Order is the order `ecgsearch --help` lists them.
COMMAND_MODULES = (
    "start",
    "worker",
    "status",
    "dashboard",
    "report",
    "retrain",
    "predict",
    "mlflow_sync",
    "data",
)

err_console = Console(stderr=True, highlight=False)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in epilogs as written and shows defaults that say something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from search import __version__

    parser = argparse.ArgumentParser(
        prog="ecgsearch",
        description="Hyperparameter and architecture search for ECG deep-learning models.",
        epilog="Example:\n  ecgsearch start --space cnn_lstm --data data/mitdb --trials 50",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecgsearch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"search.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"search.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def quiet_library_logs() -> None:
    """Optuna's per-trial log lines and experimental-API warnings would tear through the progress display;
    the workers report every trial themselves, with its reason when it failed."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_library_logs()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted.[/yellow]")
        return 130
    except Exception as error:  # every error a user can cause maps to a message and an exit code
        from search.errors import EXIT_UNEXPECTED, exit_code_for

        code = exit_code_for(error)
        if code == EXIT_UNEXPECTED:
            raise
        err_console.print(f"[bold red]error:[/bold red] {error}")
        return code


if __name__ == "__main__":
    sys.exit(main())
