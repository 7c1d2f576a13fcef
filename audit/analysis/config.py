"""What decides which code runs: the code defaults overridden by the README run command and the logs."""

from __future__ import annotations

from dataclasses import dataclass, field


def literal_from_text(v: str):
    """A logged or shell value as Python reads it: bools, None, ints, floats, else the string."""
    s = v.strip().strip("'\"")
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


@dataclass
class Config:
    """What decides which code runs: env overrides (README run command) and the logged hyperparameters."""

    env: dict[str, str] = field(default_factory=dict)  # the record's run command, strings as the shell gives them
    logged: dict[str, str] = field(default_factory=dict)  # attribute name (lowercase) -> value from log dump
    # env key -> where its value came from, or why a value a README/launcher shows for it was not taken
    # (an ablation's switch-off, an off value only some runs set: load/runcmd.py)
    source: dict[str, str] = field(default_factory=dict)
