"""One way every pgolf command ends: a result code, or one line on stderr and exit 2 — never a traceback.

The four CLIs (pgolf-audit, pgolf-verify, pgolf-stats, pgolf-train) run their click command through
`run_click`, so a bad option, an unreadable input and a bug all read the same way:
`pgolf-X: error: <what>` (exit 2), `pgolf-X: interrupted` (exit 130), `pgolf-X: internal error: <type>: <what>`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from . import __version__

VERSION = __version__


def one_line(text: object) -> str:
    """Whitespace (including newlines a hostile input put in a message) collapsed: one line, never empty."""
    return " ".join(str(text).split()) or "(no message)"


def fail(prog: str, message: object, code: int = 2) -> None:
    click.echo(f"{prog}: error: {one_line(message)}", err=True)
    sys.exit(code)


def run_click(
    command: click.Command,
    prog: str,
    argv: Sequence[str] | None,
    user_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """Run `command` and exit with its code. `user_errors` are the exceptions that mean bad input (their
    message is the one line); OSError is always one (a path that cannot be read or written)."""
    try:
        rv = command.main(args=list(argv) if argv is not None else None, prog_name=prog, standalone_mode=False)
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage: bad option or value, a path that does not exist
        fail(prog, e.format_message())
    except (*user_errors, OSError) as e:
        fail(prog, e)
    except Exception as e:  # noqa: BLE001 - a bug or an input nobody foresaw: say what, in one line
        click.echo(f"{prog}: internal error: {type(e).__name__}: {one_line(e)}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
