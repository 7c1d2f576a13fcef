"""Run commands in a README: which script runs and which env vars the author set for the record run.

The effective configuration of a submission is its code defaults overridden by these variables (and by the
hyperparameter dump in its logs), so a mechanism that is off in code but switched on here is live.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_FENCE = re.compile(r"^\s*(```|~~~)")
_LAUNCH = re.compile(r"\b(torchrun|python3?|accelerate\s+launch|srun|deepspeed|bash\s+\S+\.sh)\b")
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class RunCommand:
    text: str  # the command with continuations joined
    lineno: int  # 1-based line in the README where it starts
    env: dict[str, str] = field(default_factory=dict)  # inline `X=1 cmd` and preceding `export X=1`


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, line in block:
        s = line.rstrip()
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        out.append((start, buf.strip()))
        buf = ""
    if buf:
        out.append((start, buf.strip()))
    return out


def _split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd, comments=True)
    except ValueError:
        return cmd.split()


def _parse_assignments(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in ("env", "export", "sudo", "-E"):
            i += 1
            continue
        m = _ASSIGN.match(t)
        if not m:
            break
        env[m.group(1)] = m.group(2)
        i += 1
    return env, tokens[i:]


def run_commands(readme: str) -> list[RunCommand]:
    """Commands inside fenced code blocks (and indented `$ ` lines) that launch a script."""
    lines = readme.splitlines()
    blocks: list[list[tuple[int, str]]] = []
    cur: list[tuple[int, str]] | None = None
    for n, line in enumerate(lines, 1):
        if _FENCE.match(line):
            if cur is None:
                cur = []
            else:
                blocks.append(cur)
                cur = None
            continue
        if cur is not None:
            cur.append((n, line))
        elif line.lstrip().startswith("$ ") or (line.startswith("    ") and _LAUNCH.search(line)):
            blocks.append([(n, line.lstrip()[2:] if line.lstrip().startswith("$ ") else line.strip())])
    out: list[RunCommand] = []
    for block in blocks:
        exported: dict[str, str] = {}
        for n, text in _logical_lines(block):
            text = text.lstrip("$ ").strip()
            if not text or text.startswith("#"):
                continue
            tokens = _split(text)
            env, rest = _parse_assignments(tokens)
            if text.startswith("export ") or (env and not rest):
                exported.update(env)
                continue
            if _LAUNCH.search(" ".join(rest)) and any(t.endswith((".py", ".sh")) for t in rest):
                out.append(RunCommand(text=text, lineno=n, env={**exported, **env}))
    return out


def script_commands(script: str) -> list[RunCommand]:
    """Launch commands of a shell launcher (`run.sh`): the whole file is one code block."""
    return run_commands("```\n" + script + "\n```\n")


_SH_IN_CMD = re.compile(r"(?:^|[\s/])([\w.\-]+\.sh)\b")


def effective_env(readme: str, launchers: dict[str, str] | None = None) -> tuple[dict[str, str], RunCommand | None]:
    """The env of the record run: the last launch command that names a train script (records usually
    list setup commands first and the training run last). A README command that runs a shell launcher shipped
    in the folder (`bash run_seeds.sh`) contributes that launcher's variables too; with no README command at
    all, the folder's launchers stand in for it."""
    launchers = launchers or {}
    cmds = run_commands(readme)
    named = [m.group(1) for c in cmds for m in _SH_IN_CMD.finditer(c.text)]
    chosen_sh = [name for name in named if name in launchers] or ([] if cmds else sorted(launchers))
    for name in chosen_sh:
        cmds = script_commands(launchers[name]) + cmds
    train = [c for c in cmds if re.search(r"train\w*\.py|torchrun", c.text)]
    chosen = (train or cmds)[-1] if (train or cmds) else None
    if chosen is None:
        return {}, None
    merged: dict[str, str] = {}
    for c in train or cmds:  # variables set for any training launch are candidates; the chosen one wins
        merged.update(c.env)
    merged.update(chosen.env)
    return merged, chosen
