"""`ecgsearch` command line: a click group, one short module per command under `search/cli/`.

This package is the only place that sees argv, environment variables (through click's `envvar`) and exit
codes. `main(argv) -> int` is the entry point and the testable one: it never exits the interpreter. Errors a
user can fix are raised below as the packages' own types, each carrying its `exit_code`, and printed here as
one paragraph; click's usage errors exit 2 with click's message.
"""

from __future__ import annotations

import click

from search import __version__
from search.cli import (
    dashboard,
    data,
    mlflow_sync,
    predict,
    report,
    retrain,
    start,
    status,
    storage_proxy,
    worker,
)
from search.cli.console import err, print_error
from search.cli.options import example
from search.optimize.process import quiet_library_logs

# The order `ecgsearch --help` lists them in.
COMMANDS: tuple[click.Command, ...] = (
    start.command,
    worker.command,
    status.command,
    dashboard.command,
    report.command,
    retrain.command,
    predict.command,
    mlflow_sync.command,
    data.command,
    storage_proxy.command,
)


class _OrderedGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    "ecgsearch",
    cls=_OrderedGroup,
    epilog=example("ecgsearch start --space cnn_lstm --data data/mitdb --trials 50"),
)
@click.version_option(__version__, prog_name="ecgsearch", message="%(prog)s %(version)s")
def cli() -> None:
    """Hyperparameter and architecture search for ECG deep-learning models."""
    quiet_library_logs()


for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run `ecgsearch ARGV`; returns the exit code (0 done, 2 bad flag, … see search.errors)."""
    from search.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, exit_code_for

    try:
        result = cli.main(args=argv, prog_name="ecgsearch", standalone_mode=False)
    except click.ClickException as error:  # usage errors: exit 2 with click's own message
        error.show()
        return error.exit_code
    except (click.Abort, KeyboardInterrupt):
        err.print("Interrupted.", style="yellow")
        return EXIT_INTERRUPTED
    except Exception as error:  # every error a user can cause maps to a message and an exit code
        code = exit_code_for(error)
        if code == EXIT_UNEXPECTED:
            raise
        print_error(str(error))
        return code
    return int(result or 0)
