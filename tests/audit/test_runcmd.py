"""README run commands and shell launchers decide the effective configuration."""

from audit.load.runcmd import effective_env, run_commands

README = """# Record

```bash
pip install -r requirements.txt
export DATA_PATH=/data/sp1024
RUN_ID=a SEED=42 TTT_ENABLED=1 \\
  torchrun --standalone --nproc_per_node=8 train_gpt.py
```
"""


def test_inline_exported_and_continued_assignments():
    env, cmd = effective_env(README)
    assert env == {"DATA_PATH": "/data/sp1024", "RUN_ID": "a", "SEED": "42", "TTT_ENABLED": "1"}
    assert cmd.text.endswith("train_gpt.py") and cmd.lineno == 6


def test_setup_commands_are_not_launches():
    assert [c.text.split()[-1] for c in run_commands(README)] == ["train_gpt.py"]


def test_launcher_named_by_the_readme_contributes_its_env():
    readme = "```bash\nbash run_seeds.sh\n```\n"
    sh = "#!/bin/bash\nexport VAL_MAX_TOKENS=0\nfor s in 1 2; do\n  SEED=$s torchrun --nproc_per_node=8 train_gpt.py\ndone\n"
    env, _ = effective_env(readme, {"run_seeds.sh": sh})
    assert env["VAL_MAX_TOKENS"] == "0"


def test_launcher_used_when_readme_has_no_command():
    env, _ = effective_env("# nothing here\n", {"run.sh": "NGRAM=1 python train_gpt.py\n"})
    assert env == {"NGRAM": "1"}
    env, _ = effective_env(README, {"other.sh": "NGRAM=1 python train_gpt.py\n"})
    assert "NGRAM" not in env  # the README has its own command and does not run other.sh
