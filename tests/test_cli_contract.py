"""The four CLIs share one contract: `--version`, and every usage error is one line `pgolf-X: error: …`, exit 2."""

from __future__ import annotations

import pytest

from audit import __version__
from audit.cli import main as audit_main
from audit.precommit import main as hook_main
from reference_trainer.cli import main as train_main
from verify.cli import main as verify_main
from verify.stats.cli import main as stats_main

CLIS = {
    "pgolf-audit": audit_main,
    "pgolf-verify": verify_main,
    "pgolf-stats": stats_main,
    "pgolf-train": train_main,
    "pgolf-audit-hook": hook_main,
}


def run(capsys, main, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_version(capsys, prog):
    code, out, _ = run(capsys, CLIS[prog], "--version")
    assert code == 0 and out == f"{prog}, version {__version__}\n"


@pytest.mark.parametrize("prog", sorted(CLIS))
@pytest.mark.parametrize("args", [("--no-such-option",), ("--version", "--no-such-option")])
def test_an_unknown_option_is_one_line_and_exit_2(capsys, prog, args):
    code, out, err = run(capsys, CLIS[prog], *args[::-1])
    assert code == 2 and out == ""
    assert err.startswith(f"{prog}: error: No such option") and err.count("\n") == 1
