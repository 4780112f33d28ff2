"""The one way the CLI prints: rich consoles with markup off.

User text is printed as written: a path holding `[/x]` cannot break rich's markup parser and a field name
in brackets (`[y_train]`) stays in the message. Styles come from `rich.text.Text` objects, never from markup
in strings. Long lines are left to the terminal to wrap, so one record stays one line in a log.
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def labelled(label: str, style: str, message: str) -> Text:
    """`label: message` with the label styled and the message exactly as given."""
    return Text.assemble((f"{label}:", style), " ", message)


def print_table(table: Table) -> None:
    """A table at the terminal's width; written to a log or a pipe, at its own width, so no row is folded in two
    (rich assumes 80 columns there)."""
    if out.is_terminal:
        out.print(table)
        return
    natural = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
    terminal_width = out.width
    out.width = max(natural, terminal_width)
    try:
        out.print(table)
    finally:
        out.width = terminal_width


def print_note(message: str) -> None:
    out.print(labelled("note", "cyan", message))


def print_warning(message: str, *, stderr: bool = False) -> None:
    (err if stderr else out).print(labelled("warning", "yellow", message))


def print_error(message: str) -> None:
    err.print(labelled("error", "bold red", message))
