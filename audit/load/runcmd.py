"""Run commands in a README and in launchers: which script runs and which env vars the author set for the record run.

The effective configuration of a submission is its code defaults overridden by these variables (and by the
hyperparameter dump in its logs), so a mechanism that is off in code but switched on here is live. Commands
come from README code blocks (`cd DIR && X=1 torchrun …`, `;`/`&&`/`||` lines, `export`, `env X=1 …`), from
launchers in the folder or added by the PR outside it, and — below them — from tables and lists of switches.

A README often shows more than the record's run: seed variants, an ablation that switches a mechanism off, a
baseline for comparison. Those must not switch the record's mechanism off, so the merge fails closed: a switch
some candidate runs set off (`0`, `false`) while others keep it on, or leave a default-on switch alone, is not
trusted to be off. The code's own defaults tell a switch from a limit (`VAL_MAX_TOKENS=0` means "no cap").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

_FENCE = re.compile(r"^\s*(```|~~~)")
_LAUNCH = re.compile(r"\b(torchrun|python3?|accelerate\s+launch|srun|deepspeed|bash\s+\S+\.sh)\b")
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
_TRAINING = re.compile(r"train\w*\.py|torchrun")
# What the author calls a run that is not the record's: an ablation, a baseline, a comparison, a switch-off.
_NOT_THE_RECORD = re.compile(
    r"\b(ablat\w*|baselines?|disabl\w*|without|w/o|comparisons?|compar(?:e|ed|ing)|control\s+run|"
    r"turn(?:s|ed|ing)?\s+off|switch(?:es|ed|ing)?\s+off)\b",
    re.IGNORECASE,
)
_OFF_VALUES = {"0", "false", "no", "off", "none", "null", ""}

# shell words that separate commands, and words in front of a command that are not the command
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
_SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "|&", "(", ")", "{", "}"}
_KEYWORDS = {"do", "then", "else", "elif", "!"}
_WRAPPERS = {"nohup", "time", "exec", "nice", "command", "builtin"}

MAX_LISTED = 200  # switches read from one README's tables and lists


@dataclass(frozen=True)
class RunCommand:
    text: str  # the command with continuations joined (one command of a `a && b; c` line)
    lineno: int  # 1-based line in the file where it starts
    env: dict[str, str] = field(default_factory=dict)  # inline `X=1 cmd`, `env X=1 cmd`, preceding `export X=1`
    label: str = ""  # comment lines and the heading/paragraph right before it: what the author says it is
    origin: str = "README.md"  # the file it is in
    cwd: str = ""  # the last `cd DIR` before it in its block

    @property
    def not_the_record(self) -> bool:
        """Labelled as an ablation, a baseline, a comparison or a switch-off: not the record's run."""
        return bool(_NOT_THE_RECORD.search(self.label))

    @property
    def why_not_the_record(self) -> str:
        said = next((part for part in self.label.split(" / ") if _NOT_THE_RECORD.search(part)), "")
        return f"`{said[:60]}`" if said else ""

    @property
    def where(self) -> str:
        short = self.text if len(self.text) <= 60 else self.text[:57] + "…"
        return f"{self.origin}:{self.lineno} `{short}`"


def is_off(value: str) -> bool:
    """A shell value that switches something off: `0`, `false`, `off`, empty …"""
    s = value.strip().strip("'\"").lower()
    if s in _OFF_VALUES:
        return True
    try:
        return float(s) == 0.0
    except ValueError:
        return False


# --- reading commands ---------------------------------------------------------------------------------------
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


_QUOTING = re.compile(r"[\"'\\#]")
_PLAIN_WORD = re.compile(r"&&|\|\||;;|\|&|[;&|()]|[^\s;&|()]+")


def _tokens(cmd: str) -> list[str]:
    """Shell words, with the operators (`&&`, `;`, `|`, parentheses) as words of their own; a `$( … )`
    substitution stays one word (its value is unknown, not a command of the line)."""
    if not _QUOTING.search(cmd):  # the common line: no quotes, escapes or comments (shlex is slow to set up)
        raw = _PLAIN_WORD.findall(cmd)
    else:
        lex = shlex.shlex(cmd, posix=True, punctuation_chars=";&|()")  # `<` `>` stay in words: `SEED=<SEED>`
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            raw = list(lex)
        except ValueError:  # an unbalanced quote: fall back to words
            return [t for t in re.split(r"\s+|(&&|\|\||;|\|)", cmd.split(" #")[0]) if t]
    out: list[str] = []
    depth = 0
    for t in raw:
        if depth:
            out[-1] += t if out[-1].endswith("(") or t == ")" else " " + t
            depth += t.count("(") - t.count(")")
        elif t.startswith("(") and out and out[-1].endswith("$"):
            out[-1] += t
            depth = t.count("(") - t.count(")")
        else:
            out.append(t)
    return out


def _segments(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for t in tokens:
        if t in _SEPARATORS:
            out.append([])
        else:
            out[-1].append(t)
    return [s for s in out if s]


def _parse_segment(tokens: list[str]) -> tuple[dict[str, str], list[str], bool]:
    """(assignments, the command words after them, whether the assignments are `export`ed)."""
    env: dict[str, str] = {}
    exported = False
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in _KEYWORDS or t in _WRAPPERS:
            i += 1
        elif t == "export":
            exported = True
            i += 1
        elif t == "env":  # `env [-i] [-u NAME] X=1 cmd`
            i += 1
            while i < len(tokens) and tokens[i].startswith("-"):
                i += 2 if tokens[i] in ("-u", "--unset", "-C", "--chdir") else 1
        elif t == "sudo":
            i += 1
            while i < len(tokens) and tokens[i].startswith("-"):
                i += 1
        elif t == "timeout":  # `timeout [-s SIG] 600 cmd`
            i += 1
            while i < len(tokens) and tokens[i].startswith("-"):
                i += 1
            i += 1
        elif m := _ASSIGN.match(t):
            env[m.group(1)] = m.group(2)
            i += 1
        else:
            break
    return env, tokens[i:], exported


def _trailing_comment(line: str) -> str:
    m = re.search(r"(?:^|\s)#(?!!)\s*(.*)$", line)
    return m.group(1) if m else ""


def _caption(lines: list[str], first: int) -> str:
    """The heading and paragraph right above line `first` (0-based): up to three text lines, back to the
    nearest heading, never past another code block."""
    out: list[str] = []
    i = first - 1
    while i >= 0 and len(out) < 3:
        s = lines[i].strip()
        i -= 1
        if not s:
            continue
        if _FENCE.match(s):
            break
        out.append(s)
        if s.startswith("#"):
            break
    return " / ".join(reversed(out))


def _blocks(lines: list[str]) -> list[tuple[str, list[tuple[int, str]]]]:
    """(caption, numbered lines) of every fenced block and of every indented `$ ` / launch line."""
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    cur: list[tuple[int, str]] | None = None
    caption = ""
    for n, line in enumerate(lines, 1):
        if _FENCE.match(line):
            if cur is None:
                cur, caption = [], _caption(lines, n - 1)
            else:
                blocks.append((caption, cur))
                cur = None
            continue
        if cur is not None:
            cur.append((n, line))
        elif line.lstrip().startswith("$ ") or (line.startswith("    ") and _LAUNCH.search(line)):
            text = line.lstrip()[2:] if line.lstrip().startswith("$ ") else line.strip()
            blocks.append((_caption(lines, n - 1), [(n, text)]))
    return blocks


def _block_commands(caption: str, block: list[tuple[int, str]], origin: str) -> list[RunCommand]:
    out: list[RunCommand] = []
    exported: dict[str, str] = {}
    comments: list[str] = []  # the comment lines right above (settings between them allowed): they describe it
    cwd = ""
    heredoc = ""  # the terminator of a `python - <<EOF` body being skipped: program text, not shell commands
    for n, text in _logical_lines(block):
        text = text.lstrip("$ ").strip() if text.startswith("$ ") else text.strip()
        if heredoc:
            heredoc = "" if text == heredoc else heredoc
            continue
        if (m := _HEREDOC.search(text)) and re.search(r"\bpython", text[: m.start()]):
            heredoc = m.group(1)  # (a `cat > run.sh <<EOF` body is a launcher: its lines are read as commands)
        if not text:
            continue
        if text.startswith("#"):
            comments.append(text.lstrip("#").strip())
            continue
        trailing = _trailing_comment(text)
        settings_only = True
        for seg in _segments(_tokens(text)):
            env, rest, is_export = _parse_segment(seg)
            if is_export or not rest:  # `export X=1`, `X=1` alone, a bare `do` / `then`
                exported.update(env)
                continue
            settings_only = False
            if rest[0] == "cd":
                cwd = rest[1] if len(rest) > 1 else ""
            elif _LAUNCH.search(" ".join(rest)) and any(t.endswith((".py", ".sh")) for t in rest):
                label = " / ".join(x for x in (caption, *comments, trailing) if x)
                cmd_text = " ".join([f"{k}={v}" for k, v in env.items()] + rest)
                out.append(
                    RunCommand(text=cmd_text, lineno=n, env={**exported, **env}, label=label, origin=origin, cwd=cwd)
                )
        if not settings_only:
            comments = []
    return out


def run_commands(readme: str, origin: str = "README.md") -> list[RunCommand]:
    """Commands inside fenced code blocks (and indented `$ ` lines) that launch a script."""
    out: list[RunCommand] = []
    for caption, block in _blocks(readme.splitlines()):
        out.extend(_block_commands(caption, block, origin))
    return out


def script_commands(script: str, origin: str = "") -> list[RunCommand]:
    """Launch commands of a shell launcher (`run.sh`): the whole file is one code block, named by its file."""
    name = re.sub(r"[_.\-/]+", " ", origin)  # `run_baseline.sh` says "baseline"
    out: list[RunCommand] = []
    for c in run_commands("```\n" + script + "\n```\n", origin or "launcher"):
        # line numbers in the launcher itself; the file's name is part of what the author calls it
        out.append(
            RunCommand(c.text, c.lineno - 1, c.env, " / ".join(x for x in (name, c.label) if x), c.origin, c.cwd)
        )
    return out


def _relabel(cmd: RunCommand, label: str) -> RunCommand:
    return RunCommand(
        cmd.text, cmd.lineno, cmd.env, " / ".join(x for x in (label, cmd.label) if x), cmd.origin, cmd.cwd
    )


# --- switches listed, not launched --------------------------------------------------------------------------
_LISTED_ASSIGN = re.compile(r"^\s*(?:[-*+]\s+|\d+\.\s+)?`?(?:export\s+)?([A-Z][A-Z0-9_]*)=([^\s`|]*)`?\s*$")
_TABLE_ROW = re.compile(r"^\s*\|(.+)\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_SWITCH_NAME = re.compile(r"[A-Z][A-Z0-9]*_[A-Z0-9_]+")
_SIMPLE_VALUE = re.compile(r"^-?[\w.+\-/,]+$")
_LIST_ITEM = re.compile(r"^\s*(?:\||[-*+]\s|\d+\.\s|`?[A-Z][A-Z0-9_]*=)")


def listed_switches(readme: str) -> dict[str, tuple[str, str]]:
    """Variables a README lists without launching anything — a code block of `VAR=value` lines, a bullet list,
    a table `| VAR | value |` — as {name: (value, where)}. A list under an ablation/baseline heading is not the
    record's; a table row with several values is a comparison, not a configuration."""
    lines = readme.splitlines()
    out: dict[str, tuple[str, str]] = {}

    def add(found: list[tuple[str, str]], n: int, caption: str) -> None:
        if _NOT_THE_RECORD.search(caption):
            return
        for k, v in found:
            if len(out) < MAX_LISTED:
                out.setdefault(k, (v, f"README.md:{n}"))

    fenced: set[int] = set()
    for caption, block in _blocks(lines):
        fenced.update(n for n, _ in block)
        if any(_LAUNCH.search(text) for _, text in block):
            continue  # a launch block: its assignments belong to its commands
        for n, text in block:
            if "=" not in text:
                continue
            env, rest, _ = _parse_segment(_tokens(text))
            if env and not rest:
                add(list(env.items()), n, caption)
    start = 0  # first line (0-based) of the list or table the current line is in
    for n, line in enumerate(lines, 1):
        if len(out) >= MAX_LISTED:
            break
        if n in fenced or _FENCE.match(line) or not _LIST_ITEM.match(line):
            continue
        if n < 2 or (n - 1) in fenced or not _LIST_ITEM.match(lines[n - 2]):
            start = n - 1
        if m := _LISTED_ASSIGN.match(line):
            add([(m.group(1), m.group(2))], n, _caption(lines, start))
        elif t := _TABLE_ROW.match(line):
            if n < len(lines) and _TABLE_RULE.match(lines[n]):
                continue  # the header row
            cells = [c.strip().strip("`*").strip() for c in t.group(1).split("|")]
            values = [c for c in cells[1:] if _SIMPLE_VALUE.match(c)]
            if len(cells) >= 2 and _SWITCH_NAME.fullmatch(cells[0]) and values[:1] == [cells[1]] and len(values) == 1:
                add([(cells[0], cells[1])], n, _caption(lines, start))
    return out


# --- the record's run -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordRun:
    """The record run's variables and, for each, where it came from (and why a value was not trusted)."""

    env: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    chosen: RunCommand | None = None


_SH_IN_CMD = re.compile(r"(?:^|[\s/])([\w.\-]+\.sh)\b")
_RECORD_PATH = re.compile(r"records/[\w.\-]+/[\w.\-]+")


def _outside_commands(path: str, text: str, folder: str) -> list[RunCommand]:
    """Launch commands of a launcher outside the folder that runs it; one that runs other records too gives
    only the commands that name this one (in the command, its `cd`, or a variable it sets)."""
    base = folder.rstrip("/").rsplit("/", 1)[-1]
    if not base or base not in text:
        return []
    found = script_commands(text, path)
    if any(base not in other for other in _RECORD_PATH.findall(text)):
        found = [c for c in found if any(base in s for s in (c.text, c.cwd, *c.env.values()))]
    return found


def record_run(
    readme: str,
    launchers: dict[str, str] | None = None,
    outside: dict[str, str] | None = None,
    folder: str = "",
    entry: str | None = None,
    defaults: dict[str, set[str]] | None = None,
) -> RecordRun:
    """The env of the record run. Candidates are the training launches of the README, of a folder launcher the
    README runs (`bash run_seeds.sh`, or every folder launcher when the README runs nothing) and of launchers
    the PR adds outside the folder that run it (`outside`: path → text; `folder`: the record folder's path);
    those that run the `entry` script when some do (a README may also run another model's script). `defaults`
    (`code_defaults`) tells a switch from a limit; without it every variable is treated as a switch.
    Commands labelled as ablation / baseline / comparison / disable-X are not candidates; when every command is
    so labelled, they stand in but never switch anything off. Switches the README only lists fill what no
    command sets (and switch something off only when nothing is launched at all)."""
    launchers, outside = launchers or {}, outside or {}
    cmds = run_commands(readme)
    named = [m.group(1) for c in cmds for m in _SH_IN_CMD.finditer(c.text)]
    chosen_sh = [name for name in named if name in launchers] or ([] if cmds else sorted(launchers))
    for name in chosen_sh:
        # what the README calls the command that runs it is what its commands are (`# baseline` above `bash b.sh`)
        runs_it = [c for c in cmds if name in c.text]
        said = runs_it[0].label if runs_it and all(c.not_the_record for c in runs_it) else ""
        cmds = [_relabel(c, said) for c in script_commands(launchers[name], name)] + cmds
    for path in sorted(outside):
        cmds += _outside_commands(path, outside[path], folder)
    train = [c for c in cmds if _TRAINING.search(c.text)] or cmds
    script = entry.rsplit("/", 1)[-1] if entry else ""
    train = [c for c in train if script and re.search(rf"(?:^|[\s/]){re.escape(script)}\b", c.text)] or train
    record = [c for c in train if not c.not_the_record]
    candidates = record or train
    env, source = _merge(candidates, not record, defaults)
    for c in train:
        if c.not_the_record and record:
            for k, v in c.env.items():
                if env.get(k) != v:
                    source.setdefault(k, f"{c.where} sets {k}={v} in a run labelled {c.why_not_the_record}: ignored")
    set_by_commands = {k for c in candidates for k in c.env}
    for k, (v, where) in listed_switches(readme).items():
        if k in set_by_commands or (is_off(v) and candidates):
            continue
        env[k] = v
        source[k] = f"{where} (listed in the README; no run command sets it)"
    return RecordRun(env=env, source=source, chosen=candidates[-1] if candidates else None)


_ENV_DEFAULT = re.compile(r"""\(\s*["']([A-Z][A-Z0-9_]*)["']\s*,\s*(?:["']([^"'\n]*)["']|([\w.+\-]+))\s*[,)]""")
_ON_VALUES = {"1", "true", "yes", "on"}


def code_defaults(texts: Iterable[str]) -> dict[str, set[str]]:
    """The defaults the code gives its env variables (`os.environ.get("X", "1")`, `getenv`, an `_e("X", 1, int)`
    helper): {name: every literal default seen}."""
    out: dict[str, set[str]] = {}
    for text in texts:
        for m in _ENV_DEFAULT.finditer(text):
            out.setdefault(m.group(1), set()).add(m.group(2) if m.group(2) is not None else m.group(3))
    return out


def _switch_kind(defaults: set[str] | None) -> str:
    """ "on" / "off" for a boolean switch by its code default, "unknown" when no default was found, "" for a
    variable that is not a switch (a limit, a count, a path: `VAL_MAX_TOKENS=0` may mean "no cap")."""
    if not defaults:
        return "unknown"
    norm = {d.strip().lower() for d in defaults}
    if norm & _ON_VALUES:
        return "on"
    if all(is_off(d) for d in norm):
        return "off"
    return ""


def _merge(
    candidates: list[RunCommand], stand_in: bool, defaults: dict[str, set[str]] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """One env from the record's candidate runs. A switch fails closed: a non-off value any run sets wins; an
    off value holds only when every run sets it, or the code's default is off too (a run that turns a
    default-on switch off while others leave it on is suspect). Other variables take the last run's value."""
    chosen = candidates[-1] if candidates else None
    values: dict[str, list[tuple[str, RunCommand]]] = {}
    for c in candidates:
        for k, v in c.env.items():
            values.setdefault(k, []).append((v, c))
    env: dict[str, str] = {}
    source: dict[str, str] = {}
    for k, vs in values.items():
        kind = _switch_kind(defaults.get(k)) if defaults is not None else "unknown"
        on = [(v, c) for v, c in vs if not is_off(v)] if kind else vs
        off_v, off_c = next(((v, c) for v, c in reversed(vs) if is_off(v)), ("", None))
        if on:
            v, c = next(((v, c) for v, c in on if c is chosen), on[-1])
            env[k], source[k] = v, c.where
            if kind and off_c is not None:
                source[k] += f"; {off_c.where} sets {k}={off_v}: not trusted to be the record's run (fail closed)"
        elif stand_in:
            source[k] = f"{off_c.where} sets {k}={off_v} in a run labelled {off_c.why_not_the_record}: ignored"
        elif kind == "off" or len({id(c) for _, c in vs}) == len(candidates):
            env[k], source[k] = off_v, off_c.where
        else:
            source[k] = (
                f"{off_c.where} sets {k}={off_v} but other runs leave it at the code default: the default is kept "
                "(fail closed)"
            )
    return env, source


def effective_env(
    readme: str,
    launchers: dict[str, str] | None = None,
    outside: dict[str, str] | None = None,
    folder: str = "",
    entry: str | None = None,
) -> tuple[dict[str, str], RunCommand | None]:
    """`record_run` as (env, the command taken as the record's run)."""
    run = record_run(readme, launchers, outside, folder, entry)
    return run.env, run.chosen
