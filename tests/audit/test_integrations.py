"""The GitHub Action and the pre-commit hook call pgolf-audit with options it really has, and the hook audits the
record folders a commit touches."""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib

import click
import pytest

from audit.cli import cli
from audit.precommit import main as hook_main
from audit.precommit import record_folders
from tests.support import EXAMPLES, ROOT

yaml = pytest.importorskip("yaml")


def _commands(text: str, inputs: dict) -> list[list[str]]:
    """Each `pgolf-audit …` command in a workflow `run:`; `${{ inputs.NAME }}` becomes the input's default and any
    other expression a placeholder."""

    def value(m: re.Match) -> str:
        name = re.fullmatch(r"\s*inputs\.([\w-]+)\s*", m.group(1))
        return str(inputs[name.group(1)].get("default", "X")) if name else "X"

    text = re.sub(r"\$\{\{([^}]*)\}\}", value, text)
    return [shlex.split(line)[1:] for line in text.split("\n") if line.strip().startswith("pgolf-audit ")]


def test_every_action_step_calls_the_cli_with_options_it_has():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    runs = [step["run"].replace("\n", " ") for step in action["runs"]["steps"] if "pgolf-audit" in step.get("run", "")]
    commands = [cmd for r in runs for cmd in _commands(r, action["inputs"])]
    assert len(commands) == 3
    for args in commands:
        ctx = cli.make_context("pgolf-audit", list(args))  # raises on an option the CLI does not have
        assert ctx.params["checkout"] is True
    formats = [cli.make_context("pgolf-audit", list(a)).params["fmt"] for a in commands]
    assert formats == ["sarif", "markdown", "github"]
    uses = [s.get("uses", "") for s in action["runs"]["steps"]]
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    with pytest.raises(click.UsageError):  # the check itself can fail
        cli.make_context("pgolf-audit", [".", "--no-such-option"])


def test_the_pre_commit_hook_names_an_installed_entry_point():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert hook["entry"] in scripts and hook["language"] == "python" and hook["pass_filenames"] is True
    assert re.match(hook["files"], "records/track_10min_16mb/x/train_gpt.py")


def test_record_folders_of_changed_files():
    files = [
        "records/track_10min_16mb/2026-01-01_A/train_gpt.py",
        "records/track_10min_16mb/2026-01-01_A/README.md",
        "records/track_non_record_16mb/B/logs/seed1.log",
        "README.md",
        "records/track_10min_16mb/loose_file.md",
    ]
    assert [str(p) for p in record_folders(files)] == [
        "records/track_10min_16mb/2026-01-01_A",
        "records/track_non_record_16mb/B",
    ]


def test_the_hook_fails_a_commit_that_adds_a_flagged_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "records/track_10min_16mb/good"
    bad = tmp_path / "records/track_10min_16mb/bad"
    shutil.copytree(EXAMPLES / "clean_baseline", good)
    shutil.copytree(EXAMPLES / "prequant_ttt", bad)
    for files, expected in (
        ([str(good / "train_gpt.py")], 0),
        ([str(good / "README.md"), str(bad / "train_gpt.py")], 1),
    ):
        with pytest.raises(SystemExit) as exc:
            hook_main(files)
        assert exc.value.code == expected
    assert "FLAG" in capsys.readouterr().err
