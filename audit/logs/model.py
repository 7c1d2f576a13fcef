"""What one parsed log holds: runs, their progress, metric stages, sizes and timings (all with line numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from .patterns import DATA_RE, DIGIT_RE


class LogLine(NamedTuple):
    """A non-echoed line of a log (1-based `lineno`), with the pattern that matched it (`kind`). A named tuple:
    one is made for every line of every log (a frozen dataclass cost three `object.__setattr__` calls each)."""

    lineno: int
    text: str
    kind: str  # pattern name, "progress", "nvidia-smi", "rule", "other"


class LoggedLine(NamedTuple):
    """A log line of the submission as analyses cite it: which file, which line, what it says."""

    path: str
    lineno: int
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    step: int
    total: int | None
    kind: str  # "train" | "val"
    loss: float | None
    val_bpb: float | None
    train_time_ms: float | None
    lineno: int


@dataclass(frozen=True, slots=True)
class Metric:
    """One evaluation result line (`final_int8_zlib_roundtrip_exact val_loss:… val_bpb:…` and its relatives)."""

    tag: str
    val_loss: float | None
    val_bpb: float
    eval_time_ms: float | None
    exact: bool  # printed at full precision (an `_exact` tag or >= 6 decimals)
    diagnostic: bool  # pre-quant / post-EMA / summaries: never the score
    lineno: int
    line: str
    decimals: int = 4  # decimals of the printed val_bpb
    stride: int | None = None

    @property
    def base_tag(self) -> str:
        return self.tag[:-6] if self.tag.endswith("_exact") else self.tag


@dataclass(frozen=True, slots=True)
class Timing:
    """A duration the log prints, in seconds (eval stages, wallclock checks, GPTQ)."""

    stage: str
    seconds: float
    lineno: int
    line: str


@dataclass(frozen=True, slots=True)
class SizeLine:
    """A byte count the log prints; `tier` orders how much it says about the counted artifact (1 = best)."""

    kind: str  # "total" | "model" | "code" | "code_raw"
    nbytes: int
    fmt: str
    tier: int
    lineno: int
    line: str
    approx: bool = False  # MB-precision lines


@dataclass
class RunLog:
    index: int = 0
    start_line: int = 0
    end_line: int = 0
    seed: int | None = None
    seed_line: int = 0
    world_size: int | None = None
    steps: list[Step] = field(default_factory=list)
    stop_reason: str | None = None
    stop_line: int = 0
    train_time_ms: float | None = None
    train_time_line: int = 0
    metrics: list[Metric] = field(default_factory=list)
    scored: Metric | None = None
    eval_times: list[Timing] = field(default_factory=list)
    wallclocks: list[Timing] = field(default_factory=list)  # post-GPTQ / artifact production / serialize
    sizes: list[SizeLine] = field(default_factory=list)
    artifact_bytes: int | None = None
    artifact_line: int = 0
    artifact_approx: bool = False
    model_bytes: int | None = None
    code_bytes: int | None = None
    val_tokens: int | None = None
    val_tokens_line: int = 0
    val_bytes: int | None = None  # scored bytes when the log prints them (CaseOps sidecar sanity line)
    peak_memory_mib: int | None = None
    model_params: int | None = None
    max_wallclock_seconds: float | None = None
    eval_only: bool = False
    hyperparams: dict[str, str] = field(default_factory=dict)
    last_val_text: str = ""  # the last periodic validation line (kept as a diagnostic metric)

    @property
    def has_content(self) -> bool:
        return bool(self.steps or self.metrics or self.stop_reason)

    @property
    def train_seconds(self) -> float | None:
        return None if self.train_time_ms is None else self.train_time_ms / 1000.0

    @property
    def last_step(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def metrics_matching(self, bpb: float, tol: float) -> list[Metric]:
        return [m for m in self.metrics if abs(m.val_bpb - bpb) <= tol]

    def eval_seconds(self) -> tuple[float | None, Timing | None]:
        """Seconds of the scored evaluation: a printed total if any, else the scored stage's own time."""
        totals = [t for t in self.eval_times if t.stage in ("total_eval_time", "total_eval_wallclock")]
        if totals:
            t = max(totals, key=lambda t: t.seconds)
            return t.seconds, t
        m = self.scored
        if m is not None and m.eval_time_ms is not None:
            return m.eval_time_ms / 1000.0, Timing(m.tag, m.eval_time_ms / 1000.0, m.lineno, m.line)
        return None, None


@dataclass
class LogResult:
    path: str = ""
    runs: list[RunLog] = field(default_factory=list)
    source_echo_lines: int = 0
    # the echoed sources: (first line, [(line, stripped text)]) per echo; None when a line was cut for matching
    # (its echo is read again from the log's text)
    echo_blocks: list[tuple[int, tuple[tuple[int, str], ...]]] | None = field(default_factory=list)
    events: list[LogLine] = field(default_factory=list)
    n_lines: int = 0

    @property
    def last(self) -> RunLog | None:
        return self.runs[-1] if self.runs else None

    # Coverage (spec/logs.md §3) is computed from the events when asked (benchmarks, tests), so an audit never
    # pays two more regex searches per line for it.
    @cached_property
    def _coverage(self) -> tuple[int, list[tuple[int, str]]]:
        data, unmatched = 0, []
        for ev in self.events:
            if ev.kind in ("nvidia-smi", "rule") or not (DATA_RE.search(ev.text) and DIGIT_RE.search(ev.text)):
                continue
            data += 1
            if ev.kind in ("other", "header"):
                unmatched.append((ev.lineno, ev.text))
        return data, unmatched

    @property
    def data_lines(self) -> int:
        """Coverage denominator: lines that carry data (a number next to a metric, size or time word)."""
        return self._coverage[0]

    @property
    def unmatched(self) -> list[tuple[int, str]]:
        """Data lines no family recognised."""
        return self._coverage[1]

    @property
    def data_matched(self) -> int:
        return self.data_lines - len(self.unmatched)
