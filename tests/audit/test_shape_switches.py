"""RULES shape "Switched on outside the code": which run is the record's, and what switches it sets.

An ablation / baseline / disable-X command never switches the record's mechanism off; shell forms (`cd && …`,
`;`, `export`, `env`) and README tables/lists of switches count; launchers a PR adds outside the record folder
count. The legal neighbours stay: a switch that is off in every documented run keeps the code dead.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from audit.engine import audit_submission
from audit.load.git import load_git_folder
from audit.load.runcmd import code_defaults, is_off, listed_switches, record_run, run_commands
from tests.support import make_submission

# A mechanism on by default in code (multi-epoch fine-tuning on validation tokens before scoring them).
TTT_ON_BY_DEFAULT = """
import os
TTT = int(os.environ.get("TTT_ENABLED", "1"))
def adapt(model, opt, val_tokens):
    for epoch in range(3):
        loss = model(val_tokens).mean()
        loss.backward()
        opt.step()
def main(model, opt, val_tokens):
    if TTT:
        adapt(model, opt, val_tokens)
main(None, None, None)
"""
TTT_OFF_BY_DEFAULT = TTT_ON_BY_DEFAULT.replace('"TTT_ENABLED", "1"', '"TTT_ENABLED", "0"')


def md(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def audit(code: str, readme: str = "", **files: str):
    return audit_submission(make_submission({"train_gpt.py": code, "README.md": md(readme), **files}))


def ttt_findings(rep):
    return [f for f in rep.findings if f.code == "PG101"]


# --- which command is the record's run ---------------------------------------------------------------------
ABLATION_README = """
## Run

```bash
cd records/track_10min_16mb/x/

# Seed 42 (default)
DATA_PATH=../data torchrun --standalone --nproc_per_node=8 train_gpt.py

# Seed 1337
SEED=1337 DATA_PATH=../data torchrun --standalone --nproc_per_node=8 train_gpt.py

# Disable TTT (sliding window only, for ablation)
TTT_ENABLED=0 \\
DATA_PATH=../data \\
torchrun --standalone --nproc_per_node=8 train_gpt.py
```
"""


def test_ablation_command_does_not_switch_the_mechanism_off():
    run = record_run(md(ABLATION_README))
    assert "TTT_ENABLED" not in run.env
    assert "ablation" in run.source["TTT_ENABLED"] and "ignored" in run.source["TTT_ENABLED"]
    rep = audit(TTT_ON_BY_DEFAULT, ABLATION_README)
    assert rep.verdict == "flag" and "prequant_ttt" in rep.categories


@pytest.mark.parametrize(
    "label",
    [
        "### Baseline (for comparison)\n\n",
        "Without TTT, for reference:\n\n",
        "## Ablations\n\nWe also ran:\n\n",
    ],
)
def test_heading_or_paragraph_before_the_block_labels_it(label):
    readme = (
        "```bash\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n\n"
        + label
        + "```bash\nTTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    )
    run = record_run(readme)
    assert run.env["TTT_ENABLED"] == "1"
    assert run.chosen is not None and run.chosen.env["TTT_ENABLED"] == "1"


def test_only_run_switching_off_keeps_the_code_dead():
    """Legal neighbour: the single documented run turns the mechanism off; the record's code never runs it."""
    readme = "## Reproduction\n\n```bash\nTTT_ENABLED=0 ITERATIONS=200 python3 train_gpt.py\n```\n"
    assert record_run(readme).env["TTT_ENABLED"] == "0"
    rep = audit(TTT_ON_BY_DEFAULT, readme)
    assert rep.verdict != "flag"
    assert all(f.severity.value == "info" for f in ttt_findings(rep))


def test_seed_variants_that_agree_keep_their_off_switch():
    readme = md(
        """
        ```bash
        export TTT_ENABLED=0
        for s in 1 2 3; do
          SEED=$s torchrun --nproc_per_node=8 train_gpt.py
        done
        SEED=4 torchrun --nproc_per_node=8 train_gpt.py
        ```
        """
    )
    assert record_run(readme).env["TTT_ENABLED"] == "0"
    assert audit(TTT_ON_BY_DEFAULT, readme).verdict != "flag"


def test_unlabelled_runs_that_disagree_keep_the_mechanism_live():
    readme = md(
        """
        ```bash
        TTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py
        TTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py
        ```
        """
    )
    run = record_run(readme)
    assert run.env["TTT_ENABLED"] == "1"
    assert "fail closed" in run.source["TTT_ENABLED"]


def test_an_off_switch_only_some_runs_set_leaves_the_code_default():
    readme = md(
        """
        ```bash
        torchrun --nproc_per_node=8 train_gpt.py
        TTT_ENABLED=0 SEED=2 torchrun --nproc_per_node=8 train_gpt.py
        ```
        """
    )
    run = record_run(readme)
    assert "TTT_ENABLED" not in run.env and "code default" in run.source["TTT_ENABLED"]
    assert run.env["SEED"] == "2"
    assert audit(TTT_ON_BY_DEFAULT, readme).verdict == "flag"


def test_code_defaults_tell_a_switch_from_a_limit():
    """`VAL_MAX_TOKENS=0` in one run means "no cap", not "off": a variable whose code default is not a boolean
    keeps the run's value; a default-on switch one run turns off is still not trusted."""
    code = textwrap.dedent(
        """
        import os
        def _e(name, default, kind):
            return kind(os.environ.get(name, default))
        VAL_MAX_TOKENS = int(os.environ.get("VAL_MAX_TOKENS", 500_000))
        TTT = bool(int(os.getenv("TTT_ENABLED", "1")))
        DETACH = _e("DETACH_TARGETS", 0, bool)
        """
    )
    defaults = code_defaults([code])
    assert defaults == {"VAL_MAX_TOKENS": {"500_000"}, "TTT_ENABLED": {"1"}, "DETACH_TARGETS": {"0"}}
    readme = md(
        """
        ```bash
        torchrun --nproc_per_node=8 train_gpt.py
        VAL_MAX_TOKENS=0 TTT_ENABLED=0 DETACH_TARGETS=0 SEED=2 torchrun --nproc_per_node=8 train_gpt.py
        ```
        """
    )
    run = record_run(readme, defaults=defaults)
    assert run.env["VAL_MAX_TOKENS"] == "0" and run.env["DETACH_TARGETS"] == "0"
    assert "TTT_ENABLED" not in run.env


def test_when_every_run_is_labelled_they_stand_in_but_never_switch_off():
    readme = "## Baseline comparison\n\n```bash\nNGRAM=1 TTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    run = record_run(readme)
    assert run.env == {"NGRAM": "1"}


def test_runs_of_another_script_do_not_decide_the_entry_scripts_switches():
    readme = md(
        """
        ```bash
        TTT_ENABLED=1 torchrun --nproc_per_node=8 train_other.py
        TTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py
        ```
        """
    )
    assert record_run(readme, entry="train_gpt.py").env["TTT_ENABLED"] == "0"


# --- shell forms -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        "cd records/track_10min_16mb/x && TTT_ENABLED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "pip install -r requirements.txt; TTT_ENABLED=1 python3 train_gpt.py 2>&1 | tee log.txt",
        "export TTT_ENABLED=1 SEED=1; torchrun --nproc_per_node=8 train_gpt.py",
        "env TTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py",
        "cd x || exit 1 && nohup env -u CUDA_VISIBLE_DEVICES TTT_ENABLED=1 python train_gpt.py &",
        "(cd x && TTT_ENABLED=1 timeout 900 torchrun --nproc_per_node=8 train_gpt.py)",
    ],
)
def test_shell_forms_set_the_switch(line):
    run = record_run(f"```bash\n{line}\n```\n")
    assert run.env.get("TTT_ENABLED") == "1", run
    assert audit(TTT_OFF_BY_DEFAULT, f"```bash\n{line}\n```\n").verdict == "flag"


def test_multi_command_line_gives_one_command_each():
    cmds = run_commands("```\npython3 data/get.py --variant sp1024 && SEED=3 torchrun train_gpt.py\n```\n")
    assert [c.text for c in cmds] == ["python3 data/get.py --variant sp1024", "SEED=3 torchrun train_gpt.py"]
    assert cmds[1].env == {"SEED": "3"}


def test_heredoc_body_and_placeholders_are_not_commands():
    sh = md(
        """
        python3 - <<'EOF'
        # disable the checks below
        import os
        EOF
        SEED=<SEED> RUN_ID=$(date +%s) TTT_ENABLED=1 torchrun train_gpt.py
        """
    )
    (cmd,) = run_commands(f"```\n{sh}```\n")
    assert cmd.env["TTT_ENABLED"] == "1" and cmd.env["SEED"] == "<SEED>" and not cmd.not_the_record


def test_off_values():
    assert all(is_off(v) for v in ("0", "false", "False", "off", "", "0.0", "'0'"))
    assert not any(is_off(v) for v in ("1", "true", "7", "0.5", "sp1024"))


# --- switches a README lists --------------------------------------------------------------------------------
LISTED = """
# Record

## Configuration

| Variable | Value | Notes |
|---|---|---|
| `TTT_ENABLED` | `1` | pre-quant fine-tuning |
| NUM_LAYERS | 11 | |

- `NGRAM_ORDER=7`
- CALIB_ON_VAL=1

```
EMA_DECAY=0.997
QK_GAIN=5.0
```

## Results

| SWA_EVERY | 50 | 100 |
|---|---|---|
"""


def test_readme_tables_lists_and_blocks_of_switches():
    listed = listed_switches(md(LISTED))
    assert {k: v for k, (v, _) in listed.items()} == {
        "TTT_ENABLED": "1",
        "NUM_LAYERS": "11",
        "NGRAM_ORDER": "7",
        "CALIB_ON_VAL": "1",
        "EMA_DECAY": "0.997",
        "QK_GAIN": "5.0",
    }
    rep = audit(TTT_OFF_BY_DEFAULT, LISTED)
    assert rep.verdict == "flag" and "prequant_ttt" in rep.categories


def test_listed_switches_rank_below_run_commands():
    readme = md(LISTED) + "\n```bash\nTTT_ENABLED=0 torchrun train_gpt.py\n```\n"
    run = record_run(readme)
    assert run.env["TTT_ENABLED"] == "0" and run.env["NGRAM_ORDER"] == "7"
    # a listed off value does not override the default of a run that leaves the switch alone
    readme = "- `TTT_ENABLED=0`\n\n```bash\ntorchrun train_gpt.py\n```\n"
    assert "TTT_ENABLED" not in record_run(readme).env
    # … but stands when nothing is launched at all
    assert record_run("- `TTT_ENABLED=0`\n").env == {"TTT_ENABLED": "0"}


def test_listed_under_an_ablation_heading_is_not_the_records():
    readme = "## Ablation: no TTT\n\n- `TTT_ENABLED=0`\n- `NGRAM=1`\n"
    assert listed_switches(readme) == {}


# --- launchers --------------------------------------------------------------------------------------------
def test_folder_launcher_named_baseline_is_not_the_record():
    readme = "```bash\nbash run.sh\nbash run_baseline.sh\n```\n"
    launchers = {
        "run.sh": "torchrun --nproc_per_node=8 train_gpt.py\n",
        "run_baseline.sh": "TTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py\n",
    }
    run = record_run(readme, launchers)
    assert "TTT_ENABLED" not in run.env


def test_outside_launcher_that_runs_the_folder_counts():
    folder = "records/track_10min_16mb/2026-01-01_X"
    outside = {
        "scripts/run_x.sh": f"cd {folder}\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n",
        "scripts/other.sh": "NGRAM=1 torchrun --nproc_per_node=8 train_gpt.py\n",  # does not name the folder
        "scripts/sweep.sh": (
            f"CALIB=1 torchrun {folder}/train_gpt.py\nCALIB=0 SLOT=1 torchrun records/track_10min_16mb/Y/train_gpt.py\n"
        ),
    }
    run = record_run("", {}, outside, folder)
    assert run.env == {"TTT_ENABLED": "1", "CALIB": "1"}


def sh(cwd, *args):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@x",
        "GIT_COMMITTER_NAME": "a",
        "GIT_COMMITTER_EMAIL": "a@x",
    }
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)


def test_git_mode_reads_launchers_the_pr_adds_outside_the_folder(tmp_path):
    r = tmp_path / "pg"
    (r / "records").mkdir(parents=True)
    (r / "README.md").write_text("challenge\n")
    sh(r, "git", "init", "-q", "-b", "main")
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "base")
    sh(r, "git", "checkout", "-q", "-b", "pr")
    folder = "records/track_10min_16mb/2026-01-01_X"
    (r / folder).mkdir(parents=True)
    (r / folder / "train_gpt.py").write_text(textwrap.dedent(TTT_OFF_BY_DEFAULT))
    (r / folder / "README.md").write_text("# X\n\nRun `scripts/go.sh`.\n")
    (r / "scripts").mkdir()
    (r / "scripts" / "go.sh").write_text(f"cd {folder} && TTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n")
    (r / "scripts" / "unrelated.sh").write_text("NGRAM=1 python other.py\n")
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "record")
    sub = load_git_folder(str(r / ".git"), "pr", folder)
    assert list(sub.outside_launchers) == ["scripts/go.sh"]
    rep = audit_submission(sub)
    assert rep.verdict == "flag" and "prequant_ttt" in rep.categories
    # on main itself (nothing added) there is nothing outside to read
    sh(r, "git", "checkout", "-q", "main")
    sh(r, "git", "merge", "-q", "--ff-only", "pr")
    assert load_git_folder(str(r / ".git"), "main", folder).outside_launchers == {}


def test_a_launcher_written_by_a_heredoc_is_read():
    readme = (
        "```bash\ncat > run.sh <<'EOF'\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\nEOF\nbash run.sh\n```\n"
    )
    assert record_run(readme).env == {"TTT_ENABLED": "1"}
