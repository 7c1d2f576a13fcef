"""Log parser for every Parameter Golf log family (spec/logs.md); used by the auditor and the verifier.

`parse_log(text, path)` returns a `LogResult` (runs, unmatched data lines, non-source events);
The audit parses each log file once, in its logs stage (`audit.engine.read_logs`).
"""

from __future__ import annotations

from .model import LogLine, LogResult, Metric, RunLog, SizeLine, Step, Timing
from .parser import is_diagnostic_tag, parse_log

__all__ = [
    "LogLine",
    "LogResult",
    "Metric",
    "RunLog",
    "SizeLine",
    "Step",
    "Timing",
    "is_diagnostic_tag",
    "parse_log",
]
