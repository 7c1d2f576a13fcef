"""The rule registry: an explicit list (ruff-style), so codes are stable and never reused."""

from __future__ import annotations

from ..rule import Rule
from .pg101_prequant_ttt import PrequantTTT
from .pg102_score_first_ttt import ScoreFirstTTT

RULES: list[type[Rule]] = [
    PrequantTTT,
    ScoreFirstTTT,
]


def by_code(code: str) -> type[Rule] | None:
    for r in RULES:
        if r.CODE == code or f"{r.CODE}/{r.NAME}" == code or r.NAME == code:
            return r
    return None
