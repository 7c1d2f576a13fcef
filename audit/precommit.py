"""pgolf-audit-hook: the pre-commit entry. pre-commit passes the changed file names; each belongs to a record
folder (`records/<track>/<record>/…`), and every such folder is audited once, as `pgolf-audit FOLDER` would."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .clirun import VERSION, run_click


def record_folders(files: list[str]) -> list[Path]:
    """The record folders the changed files live in, in first-seen order; files outside records/ are ignored."""
    seen: dict[Path, None] = {}
    for f in files:
        parts = Path(f).parts
        if "records" in parts:
            i = parts.index("records")
            if len(parts) > i + 3:  # records/<track>/<record>/<file>
                seen.setdefault(Path(*parts[: i + 3]), None)
    return list(seen)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pgolf-audit-hook")
@click.argument("files", nargs=-1)
@click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default="error", show_default=True)
def cli(files: tuple[str, ...], fail_on: str) -> int:
    """Audit the record folders that FILES belong to (pre-commit passes the staged files)."""
    from .cli import cli as audit_cli  # the full CLI, imported when there is work

    worst = 0
    for folder in record_folders(list(files)):
        if not folder.is_dir():
            continue  # the folder was deleted in this commit
        code = audit_cli.main([str(folder), "--fail-on", fail_on], standalone_mode=False)
        worst = max(worst, code or 0)
    return worst


def main(argv: list[str] | None = None) -> None:
    run_click(cli, "pgolf-audit-hook", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
