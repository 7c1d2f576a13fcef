"""Log parser for every Parameter Golf log family (spec/logs.md); used by the auditor and the verifier.

`parse_log(text, path)` returns a `LogResult` (runs, unmatched data lines, non-source events);
`parsed_logs(sub)` parses each log file of a submission once and caches the results on it.
"""

from __future__ import annotations

from .model import LogLine, LogResult, Metric, RunLog, SizeLine, Step, Timing
from .parser import is_diagnostic_tag, parse_log

_CACHE_ATTR = "_pgolf_parsed_logs"


def parsed_logs(sub) -> dict[str, LogResult]:
    """{log path: LogResult} for a `Submission`, parsed once (cached on the object)."""
    cached = getattr(sub, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    out = {path: parse_log(sub.text(path), path) for path in sub.log_files}
    try:
        setattr(sub, _CACHE_ATTR, out)
    except AttributeError:  # a frozen/slotted stand-in: just don't cache
        pass
    return out


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
    "parsed_logs",
]
