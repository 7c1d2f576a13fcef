"""The caps: 16,000,000 bytes (logged, shipped and claimed) and 600 s of training and of evaluation."""

from __future__ import annotations

import re

from ... import codes
from ...challenge import (
    ARTIFACT_CAP_BYTES,
    EVAL_CAP_SECONDS,
    TRAIN_CAP_SECONDS,
)
from ...findings import Confidence, Severity
from ...logs import LogResult, RunLog, Timing
from ..size import DOUBT, OVER, artifact_size, shipped_code
from .base import CheckerBase, line_at, loc_claim, loc_line

RECORD_GPUS = 8  # the record track's 600 s are on 8xH100


class CapChecks(CheckerBase):
    def check_size(self) -> None:
        """One verdict per claimed run from the size rule pgolf-verify applies too (`audit.checks.size`)."""
        shipped = self.sources.code_bytes
        code = shipped_code(self.sub.files, self.sources.code_files)
        verdicts = [(p, r, artifact_size(shipped, r, code=code)) for p, r in self.relevant]
        log_over = [(p, r, v) for p, r, v in verdicts if (v.logged_total or 0) > ARTIFACT_CAP_BYTES]
        for p, r, v in log_over:
            line = next((s for s in r.sizes if s.lineno == r.artifact_line), None)
            loc = loc_line(p, r.artifact_line, line.line if line else "")
            if v.stale:
                self.add(
                    codes.STALE_SIZE_LINE,
                    v.message + " (RULES: the record's own logs decide)",
                    loc,
                    Severity.ERROR,
                    "size_over_cap",
                    confidence=Confidence.MEDIUM,
                )
            else:
                self.add(
                    codes.SIZE_OVER_CAP,
                    v.message,
                    loc,
                    Severity.ERROR if not v.approx else Severity.WARNING,
                    "size_over_cap",
                )
        files = [
            (p, r, v)
            for p, r, v in verdicts
            if (v.logged_total or 0) <= ARTIFACT_CAP_BYTES and v.status in (OVER, DOUBT)
        ]
        if shipped and not log_over and files:
            p, r, v = max(files, key=lambda x: (x[2].status == OVER, x[2].total or 0))
            mline = next((s for s in r.sizes if s.kind == "model" and s.nbytes == r.model_bytes), None)
            counted = f"; the log counted {r.code_bytes:,} code bytes" if r.code_bytes else ""
            where = f"shipped code ({shipped:,} bytes: {', '.join(self.sources.code_files)})"
            loc = loc_line(p, mline.lineno if mline else 0, mline.line if mline else "")
            if v.status == OVER:
                self.add(
                    codes.SHIPPED_SIZE_OVER_CAP,
                    f"{where}: {v.message}{counted}",
                    loc,
                    Severity.ERROR,
                    "size_over_cap",
                    confidence=Confidence.MEDIUM,
                )
            else:
                self.add(
                    codes.SHIPPED_SIZE_OVER_CAP,
                    f"{where} + logged model ({r.model_bytes:,} bytes) = {v.files_total:,} bytes, over the "
                    f"{ARTIFACT_CAP_BYTES:,}-byte cap{counted} — the log's own total fits, but {v.consistency}; "
                    "check which code bytes the record counts",
                    loc,
                    Severity.WARNING,
                    None,  # the log's own total fits: a bookkeeping question for the reviewer, not a proven cap break
                    confidence=Confidence.MEDIUM,
                )
        c = self.claims.total_bytes
        if c is not None:
            n = int(c.value)
            if n > ARTIFACT_CAP_BYTES:
                self.add(
                    codes.CLAIMED_SIZE_OVER_CAP,
                    f"the submission claims {n:,} bytes, over the {ARTIFACT_CAP_BYTES:,}-byte cap",
                    loc_claim(c),
                    Severity.ERROR,
                    "size_over_cap",
                )
            printed = {s.nbytes for _, r in self.runs for s in r.sizes}
            if self.runs and printed and n not in printed and not any(abs(n - x) <= 1 for x in printed):
                self.add(
                    codes.BYTE_CLAIM_NOT_IN_LOGS,
                    f"claimed size {n:,} bytes is not printed by any log (logged artifact sizes: "
                    + ", ".join(f"{r.artifact_bytes:,}" for _, r in self.final if r.artifact_bytes)
                    + ")",
                    loc_claim(c),
                    Severity.INFO,
                )

    def check_time(self) -> None:
        cap_sev = Severity.INFO if self.non_record else Severity.ERROR
        cap_cat = None if self.non_record else "time_over_cap"
        track = " (non-record track: informational)" if self.non_record else ""
        for p, r in self.relevant:
            if r.eval_only:
                continue
            if r.train_time_ms is not None and r.train_time_ms > TRAIN_CAP_SECONDS * 1000.0 + _step_grace_ms(r):
                line = line_at(self.logs[p], r.train_time_line)
                secs = r.train_time_ms / 1000.0
                fewer = r.world_size is not None and 0 < r.world_size < RECORD_GPUS
                if fewer and secs * r.world_size / RECORD_GPUS <= TRAIN_CAP_SECONDS:
                    # the cap is 600 s on 8 GPUs: a longer run on fewer GPUs is not shown to break it, but the
                    # record's score comes from a run outside the track's conditions
                    self.add(
                        codes.RUN_OFF_RECORD_HARDWARE,
                        f"the record's run trained for {secs:.1f} s on {r.world_size} GPU(s), not within "
                        f"{TRAIN_CAP_SECONDS:.0f} s on {RECORD_GPUS}: the claimed score comes from a run outside "
                        f"the track's conditions{track}",
                        loc_line(p, r.train_time_line, line),
                        cap_sev,
                        None if self.non_record else "other",
                        confidence=Confidence.MEDIUM,
                    )
                    continue
                self.add(
                    codes.TRAIN_TIME_OVER_CAP,
                    f"training stopped at {secs:.1f} s, over the {TRAIN_CAP_SECONDS:.0f} s budget{track}"
                    + (
                        f" (world size {r.world_size}: over even at {secs * r.world_size / RECORD_GPUS:.0f} s "
                        f"on {RECORD_GPUS} GPUs)"
                        if fewer
                        else f" (world size {r.world_size})"
                        if r.world_size and r.world_size != RECORD_GPUS
                        else ""
                    ),
                    loc_line(p, r.train_time_line, line),
                    cap_sev,
                    cap_cat,
                )
        for p, r in self.relevant:
            secs, t = r.eval_seconds()
            printed_total = t is not None and t.stage in ("total_eval_time", "total_eval_wallclock")
            before = [] if printed_total else _adaptation_before_score(self.logs[p], r)
            total = (secs or 0.0) + sum(s.seconds for s in before)
            if before and total > EVAL_CAP_SECONDS and r.scored is not None:
                m = r.scored
                self.add(
                    codes.EVAL_TIME_OVER_CAP,
                    f"the scored evaluation ({m.tag}"
                    + (f", {secs:.1f} s" if secs is not None else ", untimed")
                    + ") needs "
                    + ", ".join(f"{s.stage} ({s.seconds:.1f} s)" for s in before)
                    + f" before it, timed apart: {total:.1f} s of evaluation, over the {EVAL_CAP_SECONDS:.0f} s "
                    f"budget{track}",
                    loc_line(p, m.lineno, m.line),
                    cap_sev,
                    cap_cat,
                    evidence=tuple(loc_line(p, s.lineno, s.line, "evaluation work before the score") for s in before),
                )
                continue
            if secs is not None and secs > EVAL_CAP_SECONDS:
                self.add(
                    codes.EVAL_TIME_OVER_CAP,
                    f"the scored evaluation ({t.stage}) took {secs:.1f} s, over the {EVAL_CAP_SECONDS:.0f} s budget{track}",
                    loc_line(p, t.lineno, t.line),
                    cap_sev,
                    cap_cat,
                )
                continue
            stages = _back_to_back(r)
            total = sum(t.seconds for t in stages)
            if len(stages) > 1 and total > EVAL_CAP_SECONDS:
                self.add(
                    codes.EVAL_STAGES_OVER_CAP,
                    f"evaluation stages run back to back take {total:.1f} s in all ("
                    + ", ".join(f"{t.stage} {t.seconds:.1f} s" for t in stages)
                    + f"), over {EVAL_CAP_SECONDS:.0f} s; the scored stage alone fits",
                    loc_line(p, stages[-1].lineno, stages[-1].line),
                    Severity.WARNING if not self.non_record else Severity.INFO,
                    evidence=tuple(loc_line(p, t.lineno, t.line) for t in stages[:-1]),
                    confidence=Confidence.MEDIUM,
                )
        for p, r in self.relevant:
            budget = r.max_wallclock_seconds or TRAIN_CAP_SECONDS
            for w in r.wallclocks:
                if w.stage in ("post_gptq_total_elapsed", "artifact_production_wallclock") and w.seconds > budget:
                    self.add(
                        codes.WALLCLOCK_OVER_BUDGET,
                        f"{w.stage} is {w.seconds:.1f} s against a {budget:.0f} s training budget: work after the "
                        "training clock stopped (GPTQ, serialization) — check that it reads no training data",
                        loc_line(p, w.lineno, w.line),
                        Severity.WARNING,
                        confidence=Confidence.MEDIUM,
                    )
                    break

    # integrity ------------------------------------------------------------------------------------------------


def _step_grace_ms(r: RunLog) -> float:
    """The wallclock check runs after a step, so a run may overshoot 600 s by one step (plus logging jitter)."""
    last = r.steps[-1].step if r.steps else 0
    if r.train_time_ms and last:
        return 1.5 * r.train_time_ms / last + 250.0
    return 1000.0


# A stage that closes with its duration: `<stage>:done … elapsed=12.3s`, `<stage> complete … total_time=…`.
_CLOSED_STAGE = re.compile(
    r"^\s*(?P<stage>[A-Za-z][\w.-]*(?::[\w.-]+)*?)[:\s]\s*(?:done|complete|completed|finished)\b"
    r".*?\b(?:total_time|time|elapsed)\s*[=:]\s*(?P<s>\d+(?:\.\d+)?)\s*s\b"
)
# Producing the artifact (quantisation, its calibration, packing) is training-side work, not evaluation.
_ARTIFACT_WORK = re.compile(
    r"(?i)(?<![a-z])(?:gptq|quant|hessian|calib|serializ|compress|pack|sav(?:e|ing)|load|prun|train|ema|swa)"
)
_SCORE_ON_LINE = re.compile(r"(?i)\bval_(?:bpb|loss)\b|\bbpb\b")
_STAGE_LINE_CHARS = 512  # a stage's closing line is short; longer lines are not read for one


def _adaptation_before_score(res: LogResult, r: RunLog) -> list[Timing]:
    """Stages the scored evaluation depends on but does not time: work that closes with its own duration after
    the training clock stopped and before the scored line (adapting on the validation run, building eval
    tables), with a separately timed evaluation or the artifact's packing between it and the scored line (so
    the scored stage's timer cannot include it). Lines that print a score are evaluation passes of their own."""
    m = r.scored
    start = max(r.stop_line, r.train_time_line)
    if m is None or not start:
        return []
    # lines of a separately timed evaluation, or of the artifact's packing
    stamps = [x.lineno for x in r.metrics if x.eval_time_ms is not None and x.base_tag != m.base_tag]
    stamps += [x.lineno for x in r.sizes]
    out = []
    for e in res.events:
        text = e.text[:_STAGE_LINE_CHARS]
        if not start < e.lineno < m.lineno or _SCORE_ON_LINE.search(text):
            continue
        hit = _CLOSED_STAGE.match(text)
        if hit is None or _ARTIFACT_WORK.search(hit["stage"]):
            continue
        if not any(e.lineno < x < m.lineno for x in stamps):
            continue  # the scored stage may have timed it
        secs = float(hit["s"])
        if m.eval_time_ms is not None and abs(secs - m.eval_time_ms / 1000.0) <= 0.02 * secs + 1.0:
            continue  # the scored pass's own duration, printed twice
        out.append(Timing(hit["stage"], secs, e.lineno, text))
    return out


def _back_to_back(r: RunLog) -> list:
    """Distinct non-diagnostic eval stages with their own timer (one per base tag, `_exact` copies dropped)."""
    seen: dict[str, object] = {}
    for t in r.eval_times:
        if t.stage in ("total_eval_time", "total_eval_wallclock", "temp_scaling") or t.stage.startswith("json:"):
            continue
        if t.stage.endswith(":done"):
            continue  # the same stage as its metric line
        base = t.stage[:-6] if t.stage.endswith("_exact") else t.stage
        seen.setdefault(base, t)
    return list(seen.values())
