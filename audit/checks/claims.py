"""What a submission claims (README.md, submission.json) against what its logs show.

Claims come from every submission.json layout seen on `main` (flat keys, `seed_results` dicts, `seeds` +
`seed_scores` lists, nested re-run blocks) and from the README headline and per-seed tables. Each claimed
number is matched against *all* metric lines of the logs (spec/logs.md: tags lie, the scored line is not
always the last one) and the matching tag is reported. Cap checks (16,000,000 bytes, 600 s train, 600 s eval)
and the validation-integrity check (val tokens x val_loss/val_bpb = bytes of the split) use the logs only.

Rule codes PG201…PG299. Severity: `error` only for a broken cap or an integrity break the logs prove,
`warning` for a discrepancy a human must look at, `info` otherwise.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from .. import codes
from ..challenge import (
    ARTIFACT_CAP_BYTES,
    EVAL_CAP_SECONDS,
    HISTORICAL_VAL_TOKENS,
    TRAIN_CAP_SECONDS,
)
from ..codes import Code
from ..findings import Confidence, Finding, Location, Severity
from ..load.folder import Submission
from ..logs import LogResult, Metric, RunLog, parsed_logs

RULES_LINK = "https://github.com/openai/parameter-golf#rules"
LN2 = math.log(2.0)

# Bytes of the validation split (first 50,000 documents) implied by every correct tokenizer on `main`:
# val_tokens x (val_loss / val_bpb) / ln 2. sp1024, sp4096, sp8192, byte-level and CaseOps agree to 0.005 %.
VAL_SPLIT_BYTES = 151_080_000
# Full-split token counts per tokenizer family (spec/trainer.md §0, merged logs).
TOKENIZER_FAMILIES: dict[str, int] = {
    "sp1024": 62_021_632,
    "sp4096": 45_514_752,
    "sp8192": 40_540_160,
    "sp8192-caseops": 47_851_520,
    "byte": 151_080_000,
}
VOCAB_FAMILY = {"1024": "sp1024", "4096": "sp4096", "8192": "sp8192", "256": "byte", "260": "byte"}
INTEGRITY_ERROR = 0.005  # relative deviation of the implied split bytes that proves a subset / bad accounting
INTEGRITY_NOTE = 0.0005  # below this the numbers agree (CaseOps sidecar vs LUT differ by 0.003 %)
TRUNCATION_SLACK = 65_536  # tokens an eval may drop to round the split down to whole sequences

SCORE_KEYS = ("val_bpb", "mean_val_bpb", "val_bpb_mean", "mean_bpb", "score")
LOSS_KEYS = ("val_loss", "mean_val_loss", "val_loss_mean", "mean_val_loss_nats")
TOTAL_BYTE_KEYS = ("bytes_total", "artifact_bytes", "artifact_size_bytes", "artifact_bytes_max", "total_bytes")
CODE_BYTE_KEYS = ("bytes_code", "code_bytes")
SEED_BPB_KEYS = ("val_bpb", "bpb", "post_ttt_val_bpb", "final_val_bpb", "score", "sliding_bpb", "ttt_bpb")
SEED_BYTE_KEYS = ("artifact_bytes", "bytes_total", "total_bytes", "artifact_size_bytes")

_NUM_IN_CELL = re.compile(r"(?<![\d.])(\d\.\d{3,})(?![\d.])")
_README_HEADLINE = re.compile(r"(?i)\bval_bpb\b[^0-9\n]{0,12}(\d\.\d{3,})")
_SEED_IN_NAME = re.compile(r"(?i)seed[_-]?(\d+)|(?:^|[_-])s(\d{1,5})(?=[._-])")
_NOT_SCORE_HEADER = re.compile(r"(?i)delta|Δ|std|gap|diff|gain|base|before|vs\b|improv|change|rank")


@dataclass(frozen=True)
class ClaimedValue:
    value: float
    text: str  # the number as written (decimals matter for matching)
    path: str
    line: int
    snippet: str
    key: str = ""

    @property
    def decimals(self) -> int:
        return len(self.text.split(".", 1)[1]) if "." in self.text else 0


@dataclass
class Claims:
    headline_bpb: ClaimedValue | None = None
    readme_bpb: ClaimedValue | None = None
    total_bytes: ClaimedValue | None = None
    code_bytes: ClaimedValue | None = None
    seeds: list[int] = field(default_factory=list)
    per_seed_bpb: dict[int, list[ClaimedValue]] = field(default_factory=dict)
    per_seed_bytes: dict[int, ClaimedValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimsSummary:
    claimed_bpb: float | None
    matched_tag: str | None
    seeds: list[int]
    per_seed: dict[int, float]
    n_logs: int
    artifact_bytes: int | None
    code_bytes: int | None
    train_seconds: float | None
    eval_seconds: float | None
    bytes_per_token: float | None
    tokenizer: str | None
    val_tokens: int | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_seed"] = {str(k): v for k, v in self.per_seed.items()}
        return d

    def line(self) -> str:
        """One-line summary for the review comment."""
        parts = [f"claimed {self.claimed_bpb}" if self.claimed_bpb is not None else "no claimed val_bpb"]
        if self.seeds:
            parts.append(f"seeds {', '.join(map(str, self.seeds))}")
        if self.artifact_bytes is not None:
            parts.append(f"artifact {self.artifact_bytes:,} B")
        if self.train_seconds is not None:
            parts.append(f"train {self.train_seconds:.1f} s")
        if self.eval_seconds is not None:
            parts.append(f"eval {self.eval_seconds:.1f} s")
        return " · ".join(parts)


@dataclass
class ClaimsReport:
    findings: list[Finding] = field(default_factory=list)
    summary: ClaimsSummary | None = None
    claims: Claims | None = None


# --- number matching ----------------------------------------------------------------------------------------
def value_matches(claim: ClaimedValue, value: float) -> bool:
    """The claim is the logged value rounded or truncated to the claim's decimals."""
    d = claim.decimals
    if d == 0:
        return False
    scale = 10.0**d
    return (
        abs(round(value * scale) - round(claim.value * scale)) == 0
        or math.floor(value * scale + 1e-9) == round(claim.value * scale)
        or abs(value - claim.value) < 1e-9
    )


def matching_metrics(claim: ClaimedValue, runs: list[tuple[str, RunLog]]) -> list[tuple[str, Metric]]:
    return [(p, m) for p, r in runs for m in r.metrics if value_matches(claim, m.val_bpb)]


# --- claims extraction ------------------------------------------------------------------------------------
def _line_of(text: str, needle: str, start: int = 0) -> tuple[int, str]:
    pos = text.find(needle, start)
    if pos < 0:
        return 0, ""
    line = text.count("\n", 0, pos) + 1
    end = text.find("\n", pos)
    begin = text.rfind("\n", 0, pos) + 1
    return line, text[begin : end if end >= 0 else len(text)].strip()


def _json_claim(path: str, text: str, key: str, value, near: str = "") -> ClaimedValue | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    if not math.isfinite(v):
        return None
    raw = json.dumps(value) if not isinstance(value, str) else value
    start = text.find(f'"{near}"') if near else 0
    line, snippet = _line_of(text, f'"{key}"', max(start, 0))
    return ClaimedValue(v, raw.strip('"'), path, line, snippet, key)


_WRITES_VAL_SHARDS = re.compile(r"""["'][^"'\n]*fineweb_val_[^"'\n]*\.bin""")
_VAL_DOC_COUNT = re.compile(r"val[-_]docs\W[^\n]{0,40}?\b(\d[\d_]{2,})\b", re.I)
VAL_DOCS = 50_000  # the validation split: the first 50,000 documents
_NOT_SCORE_KEY = re.compile(r"byte|size|time|loss|step|ms\b|sec", re.I)


def _seed_dicts(obj, depth: int = 0):
    """Yield {seed: result} dicts wherever a layout keeps them (`seed_results`, `seeds`, nested re-runs)."""
    if depth > 3 or not isinstance(obj, dict):
        return
    for k, v in obj.items():
        low = k.lower()
        if isinstance(v, dict) and v and all(str(s).strip().isdigit() for s in v) and ("seed" in low or low.startswith("runs")):
            yield k, v
        elif isinstance(v, dict):
            yield from _seed_dicts(v, depth + 1)


def claims_from_json(path: str, text: str, data: dict) -> Claims:
    c = Claims()
    for k in SCORE_KEYS:
        if k in data:
            c.headline_bpb = _json_claim(path, text, k, data[k])
            if c.headline_bpb:
                break
    for keys, attr in ((TOTAL_BYTE_KEYS, "total_bytes"), (CODE_BYTE_KEYS, "code_bytes")):
        for k in keys:
            if k in data:
                setattr(c, attr, _json_claim(path, text, k, data[k]))
                if getattr(c, attr):
                    break
    seeds = data.get("seeds")
    if isinstance(seeds, list):
        c.seeds = [int(s) for s in seeds if isinstance(s, (int, str)) and str(s).isdigit()]
        scores = data.get("seed_scores")
        if isinstance(scores, list) and len(scores) == len(c.seeds):
            for s, v in zip(c.seeds, scores):
                cv = _json_claim(path, text, "seed_scores", v)
                if cv:
                    line, snip = _line_of(text, json.dumps(v))
                    c.per_seed_bpb.setdefault(s, []).append(ClaimedValue(cv.value, cv.text, path, line, snip, "seed_scores"))
    elif isinstance(data.get("seed"), (int, str)) and str(data["seed"]).isdigit():
        c.seeds = [int(data["seed"])]
        if c.headline_bpb:
            c.per_seed_bpb.setdefault(c.seeds[0], []).append(c.headline_bpb)
    for key, table in _seed_dicts(data):
        # `val_bpb_per_seed: {"42": 1.0152}` holds scores; `artifact_bytes_per_seed` / `train_time_per_seed` do not
        scores = not _NOT_SCORE_KEY.search(key)
        for s_raw, res in table.items():
            s = int(str(s_raw).strip())
            if s not in c.seeds:
                c.seeds.append(s)
            if isinstance(res, (int, float)) and not isinstance(res, bool):
                cv = _json_claim(path, text, str(s_raw), res) if scores and 0.0 < res < 10.0 else None
                if cv:
                    c.per_seed_bpb.setdefault(s, []).append(cv)
            elif isinstance(res, dict):
                for k in SEED_BPB_KEYS:
                    if k in res:
                        cv = _json_claim(path, text, k, res[k], near=str(s_raw))
                        if cv and 0.0 < cv.value < 10.0:
                            c.per_seed_bpb.setdefault(s, []).append(cv)
                            break
                for k in SEED_BYTE_KEYS:
                    if k in res:
                        cv = _json_claim(path, text, k, res[k], near=str(s_raw))
                        if cv:
                            c.per_seed_bytes[s] = cv
                            break
    return c


def _table_rows(text: str):
    """Markdown tables as (header cells, [(line number, cells)])."""
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1]):
            header = [c.strip().strip("*").strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, [c.strip() for c in lines[j].strip().strip("|").split("|")]))
                j += 1
            yield header, rows
            i = j
        else:
            i += 1


def claims_from_readme(path: str, text: str, c: Claims) -> None:
    m = _README_HEADLINE.search(text)
    if m:
        line, snippet = _line_of(text, m.group(0))
        c.readme_bpb = ClaimedValue(float(m.group(1)), m.group(1), path, line, snippet, "README headline")
    for header, rows in _table_rows(text):
        seed_col = next((k for k, h in enumerate(header) if re.search(r"(?i)\bseed\b", h)), None)
        if seed_col is None:
            continue
        bpb_cols = [k for k, h in enumerate(header) if re.search(r"(?i)bpb", h) and not _NOT_SCORE_HEADER.search(h)]
        for lineno, cells in rows:
            if seed_col >= len(cells):
                continue
            sm = re.fullmatch(r"\**\s*(\d+)\s*\**", cells[seed_col])
            if not sm:
                continue
            seed = int(sm.group(1))
            if seed not in c.seeds:
                c.seeds.append(seed)
            for k in bpb_cols:
                if k < len(cells):
                    nm = _NUM_IN_CELL.search(cells[k])
                    approx = "~" in cells[k] or "≈" in cells[k]
                    known = {v.text for v in c.per_seed_bpb.get(seed, [])}
                    if nm and not approx and nm.group(1) not in known:
                        snippet = "| " + " | ".join(cells) + " |"
                        c.per_seed_bpb.setdefault(seed, []).append(
                            ClaimedValue(float(nm.group(1)), nm.group(1), path, lineno, snippet, f"README {header[k]}")
                        )


def extract_claims(sub: Submission) -> Claims:
    jp = sub.submission_json_path
    data = sub.submission_json
    c = claims_from_json(jp, sub.text(jp), data) if jp and data is not None else Claims()
    rp = sub.find("README.md")
    if rp:
        claims_from_readme(rp, sub.text(rp), c)
    return c


# --- helpers ------------------------------------------------------------------------------------------------
def _finding(code: Code, message: str, loc: Location, severity: Severity, category: str | None = None,
             evidence: tuple[Location, ...] = (), confidence: Confidence = Confidence.HIGH) -> Finding:
    return code.finding(message, loc, severity=severity, category=category, evidence=evidence,
                        confidence=confidence, ruling=RULES_LINK)


def _loc_claim(c: ClaimedValue, note: str = "claim") -> Location:
    return Location(path=c.path, start_line=c.line, end_line=c.line, snippet=c.snippet, note=note)


def _loc_line(path: str, lineno: int, line: str, note: str = "") -> Location:
    return Location(path=path, start_line=lineno, end_line=lineno, snippet=line, note=note)


def _is_non_record(sub: Submission) -> bool:
    return "non_record" in sub.name.replace("-", "_").lower()


def _seed_from_name(path: str) -> int | None:
    m = _SEED_IN_NAME.search(PurePosixPath(path).name)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def _fmt_claim(c: ClaimedValue) -> str:
    return f"{c.text} ({c.key})" if c.key else c.text


# --- the checks ---------------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, sub: Submission, logs: dict[str, LogResult], claims: Claims) -> None:
        self.sub = sub
        self.logs = logs
        self.claims = claims
        self.findings: list[Finding] = []
        self.runs: list[tuple[str, RunLog]] = [(p, r) for p, res in logs.items() for r in res.runs]
        # The run that counts in each file (several runs appended to one file: the last).
        self.final: list[tuple[str, RunLog]] = [(p, res.last) for p, res in logs.items() if res.last is not None]
        self.non_record = _is_non_record(sub)
        self.relevant = self._claimed_runs()

    def _claimed_runs(self) -> list[tuple[str, RunLog]]:
        """The runs the claims point at (a folder may ship exploratory logs too); all runs when none match."""
        claims = [c for c in (self.claims.headline_bpb, self.claims.readme_bpb) if c]
        claims += [v for vals in self.claims.per_seed_bpb.values() for v in vals]
        hit = [(p, r) for p, r in self.final if any(value_matches(c, m.val_bpb) for c in claims for m in r.metrics)]
        return hit or self.final

    def add(self, *a, **kw) -> None:
        self.findings.append(_finding(*a, **kw))

    # seeds ----------------------------------------------------------------------------------------------------
    def runs_for_seed(self, seed: int) -> list[tuple[str, RunLog]]:
        return [(p, r) for p, r in self.runs if r.seed == seed]

    def check_headline(self) -> tuple[str | None, float | None]:
        c = self.claims.headline_bpb or self.claims.readme_bpb
        if c is None:
            return None, None
        hits = matching_metrics(c, self.runs)
        if hits:
            scored = [h for h in hits if not h[1].diagnostic]
            path, m = (scored or hits)[-1]
            if m.diagnostic:
                self.add(
                    codes.CLAIM_MATCHES_DIAGNOSTIC,
                    f"claimed val_bpb {_fmt_claim(c)} matches only a diagnostic line ({m.tag}), not a scored stage",
                    _loc_line(path, m.lineno, m.line),
                    Severity.WARNING,
                    evidence=(_loc_claim(c),),
                )
            return m.tag, c.value
        means = self._seed_means()
        for label, mean, _runs in means:
            if value_matches(c, mean) or abs(mean - c.value) <= 0.5 * 10.0 ** -c.decimals + 1e-9:
                return f"mean of {label}", c.value
        ev = tuple(_loc_line(p, r.scored.lineno, r.scored.line, "scored line") for p, r in self.final if r.scored)[:6]
        self.add(
            codes.CLAIM_NOT_IN_LOGS,
            f"claimed val_bpb {_fmt_claim(c)} is not printed by any log line, nor the mean of the logged seeds"
            + (f" (seed means: {', '.join(f'{m:.6f}' for _, m, _ in means)})" if means else ""),
            _loc_claim(c),
            Severity.WARNING,
            evidence=ev,
        )
        return None, c.value

    def _seed_means(self) -> list[tuple[str, float, list]]:
        """Means of the per-seed values the logs support: scored lines, and the lines the claims point at."""
        out = []
        by_seed: dict[int, float] = {}
        for _, r in self.final:
            if r.seed is not None and r.scored is not None:
                by_seed[r.seed] = r.scored.val_bpb
        if by_seed:
            out.append((f"{len(by_seed)} logged seeds", sum(by_seed.values()) / len(by_seed), list(by_seed)))
        claimed: dict[int, float] = {}
        for s, vals in self.claims.per_seed_bpb.items():
            for v in vals:
                hits = matching_metrics(v, self.runs_for_seed(s) or self.runs)
                if hits:
                    claimed[s] = hits[-1][1].val_bpb
                    break
        if claimed and claimed != by_seed:
            out.append((f"{len(claimed)} claimed seeds", sum(claimed.values()) / len(claimed), list(claimed)))
        if len(self.claims.per_seed_bpb) > 0:
            vals = [v[0].value for v in self.claims.per_seed_bpb.values() if v]
            if vals:
                out.append((f"{len(vals)} claimed per-seed values", sum(vals) / len(vals), []))
        return out

    def check_per_seed(self) -> dict[int, float]:
        per_seed: dict[int, float] = {}
        logged_seeds = {r.seed for _, r in self.runs if r.seed is not None}
        for seed, vals in sorted(self.claims.per_seed_bpb.items()):
            runs = self.runs_for_seed(seed)
            if not runs:
                continue  # reported once by check_seed_coverage
            own = {p for p, _ in runs}
            missing: list[ClaimedValue] = []
            elsewhere: list[tuple[str, Metric]] = []
            for v in vals:
                hits = matching_metrics(v, runs)
                if hits:
                    per_seed.setdefault(seed, hits[-1][1].val_bpb)
                    continue
                missing.append(v)
                elsewhere.extend(h for h in matching_metrics(v, self.runs) if h[0] not in own)
            if not missing:
                continue
            path, run = runs[-1]
            ev = [_loc_claim(v) for v in missing]
            if run.scored:
                ev.append(_loc_line(path, run.scored.lineno, run.scored.line, "scored line of this seed"))
            ev.extend(_loc_line(p, m.lineno, m.line, "value found in another seed's log") for p, m in elsewhere[:2])
            self.add(
                codes.SEED_VALUE_MISMATCH,
                f"seed {seed}: claimed {', '.join(_fmt_claim(v) for v in missing)} not printed by the log of that seed"
                + (f" (the value appears in {elsewhere[0][0]})" if elsewhere else "")
                + (f"; its scored line says {run.scored.val_bpb} ({run.scored.tag})" if run.scored else ""),
                _loc_line(path, run.scored.lineno, run.scored.line) if run.scored else _loc_claim(missing[0]),
                Severity.WARNING,
                evidence=tuple(ev),
            )
        for _, r in self.final:
            if r.seed is not None and r.scored is not None and r.seed not in per_seed and r.seed in logged_seeds:
                per_seed.setdefault(r.seed, r.scored.val_bpb)
        return per_seed

    def check_seed_labels(self) -> None:
        for path, res in self.logs.items():
            named = _seed_from_name(path)
            last = res.last
            if named is None or last is None or last.seed is None or named == last.seed:
                continue
            if any(r.seed == named for r in res.runs):
                continue
            self.add(
                codes.SEED_LABEL_MISMATCH,
                f"{PurePosixPath(path).name} is labelled seed {named} but the run prints seed {last.seed}",
                _loc_line(path, last.seed_line, "", "printed seed"),
                Severity.WARNING,
            )

    def check_duplicates(self) -> None:
        seen: dict[tuple, tuple[str, RunLog]] = {}
        for path, r in self.final:
            m = r.scored
            if m is None or not m.exact:
                continue
            key = (m.tag, m.val_bpb, m.val_loss, r.train_time_ms, r.artifact_bytes)
            if key in seen:
                p0, r0 = seen[key]
                labels = {_seed_from_name(p0), _seed_from_name(path)} - {None}
                distinct = len(labels) > 1 or (r0.seed != r.seed)
                self.add(
                    codes.DUPLICATE_RUN,
                    f"{path} repeats the run of {p0} (same scored line {m.val_bpb}, same train time and size)"
                    + ("; they are presented as different seeds" if distinct else "; one run shipped twice"),
                    _loc_line(path, m.lineno, m.line),
                    Severity.WARNING if distinct else Severity.INFO,
                    evidence=(_loc_line(p0, r0.scored.lineno, r0.scored.line, "same line"),),
                )
            else:
                seen[key] = (path, r)

    def check_seed_coverage(self) -> None:
        claimed = list(dict.fromkeys(self.claims.seeds))
        if not claimed:
            return
        logged = {r.seed for _, r in self.final if r.seed is not None and (r.scored is not None or r.has_content)}
        missing = [s for s in claimed if s not in logged]
        if missing:
            c = self.claims.headline_bpb or self.claims.readme_bpb
            where = self.sub.submission_json_path or self.sub.find("README.md") or "."
            self.add(
                codes.MISSING_SEED_LOGS,
                f"{len(claimed)} seed(s) claimed ({', '.join(map(str, claimed))}) but no log prints seed "
                f"{', '.join(map(str, missing))} ({len(self.logs)} log file(s), seeds logged: "
                f"{', '.join(map(str, sorted(logged))) or 'none'})",
                _loc_claim(c) if c else Location(path=where),
                Severity.WARNING,
            )

    # caps -----------------------------------------------------------------------------------------------------
    def check_size(self) -> None:
        shipped = self.sub.code_bytes
        over = [(p, r) for p, r in self.relevant if r.artifact_bytes is not None and r.artifact_bytes > ARTIFACT_CAP_BYTES]
        for p, r in over:
            line = next((s for s in r.sizes if s.lineno == r.artifact_line), None)
            approx = " (MB precision)" if r.artifact_approx else ""
            repacked = shipped and r.model_bytes and shipped + r.model_bytes <= ARTIFACT_CAP_BYTES and r.code_bytes and shipped < r.code_bytes
            if repacked:
                self.add(
                    codes.STALE_SIZE_LINE,
                    f"the log's artifact size is {r.artifact_bytes:,} bytes, over the cap, but the shipped code is "
                    f"smaller than the logged code ({shipped:,} < {r.code_bytes:,} bytes): shipped code + logged model "
                    f"= {shipped + r.model_bytes:,} bytes would fit, but the scored run's own artifact was over the cap "
                    "(RULES: the record's own logs decide)",
                    _loc_line(p, r.artifact_line, line.line if line else ""),
                    Severity.ERROR,
                    "size_over_cap",
                    confidence=Confidence.MEDIUM,
                )
                continue
            self.add(
                codes.SIZE_OVER_CAP,
                f"the log's artifact size is {r.artifact_bytes:,} bytes{approx}, over the {ARTIFACT_CAP_BYTES:,}-byte cap",
                _loc_line(p, r.artifact_line, line.line if line else ""),
                Severity.ERROR if not r.artifact_approx else Severity.WARNING,
                "size_over_cap",
            )
        over = [o for o in over if not any(f.code == codes.STALE_SIZE_LINE.code for f in self.findings)]
        if shipped and not over:
            worst = None
            for p, r in self.relevant:
                if r.model_bytes is None:
                    continue
                total = shipped + r.model_bytes
                if total > ARTIFACT_CAP_BYTES and (worst is None or total > worst[0]):
                    worst = (total, p, r)
            if worst:
                total, p, r = worst
                mline = next((s for s in r.sizes if s.kind == "model" and s.nbytes == r.model_bytes), None)
                counted = f"; the log counted {r.code_bytes:,} code bytes" if r.code_bytes else ""
                self.add(
                    codes.SHIPPED_SIZE_OVER_CAP,
                    f"shipped code ({shipped:,} bytes: {', '.join(self.sub.code_files)}) + logged model "
                    f"({r.model_bytes:,} bytes) = {total:,} bytes, over the {ARTIFACT_CAP_BYTES:,}-byte cap{counted}"
                    " — check which code bytes the record counts (the log's own total fits)",
                    _loc_line(p, mline.lineno if mline else 0, mline.line if mline else ""),
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
                    _loc_claim(c),
                    Severity.ERROR,
                    "size_over_cap",
                )
            printed = {s.nbytes for _, r in self.runs for s in r.sizes}
            if self.runs and printed and n not in printed and not any(abs(n - x) <= 1 for x in printed):
                self.add(
                    codes.BYTE_CLAIM_NOT_IN_LOGS,
                    f"claimed size {n:,} bytes is not printed by any log (logged artifact sizes: "
                    + ", ".join(f"{r.artifact_bytes:,}" for _, r in self.final if r.artifact_bytes) + ")",
                    _loc_claim(c),
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
                line = _line_at(self.logs[p], r.train_time_line)
                self.add(
                    codes.TRAIN_TIME_OVER_CAP,
                    f"training stopped at {r.train_time_ms / 1000.0:.1f} s, over the {TRAIN_CAP_SECONDS:.0f} s budget{track}"
                    + (f" (world size {r.world_size})" if r.world_size and r.world_size != 8 else ""),
                    _loc_line(p, r.train_time_line, line),
                    cap_sev,
                    cap_cat,
                )
        for p, r in self.relevant:
            secs, t = r.eval_seconds()
            if secs is not None and secs > EVAL_CAP_SECONDS:
                self.add(
                    codes.EVAL_TIME_OVER_CAP,
                    f"the scored evaluation ({t.stage}) took {secs:.1f} s, over the {EVAL_CAP_SECONDS:.0f} s budget{track}",
                    _loc_line(p, t.lineno, t.line),
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
                    _loc_line(p, stages[-1].lineno, stages[-1].line),
                    Severity.WARNING if not self.non_record else Severity.INFO,
                    evidence=tuple(_loc_line(p, t.lineno, t.line) for t in stages[:-1]),
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
                        _loc_line(p, w.lineno, w.line),
                        Severity.WARNING,
                        confidence=Confidence.MEDIUM,
                    )
                    break

    # integrity ------------------------------------------------------------------------------------------------
    def integrity(self) -> tuple[float | None, str | None, int | None]:
        """val_tokens x val_loss/val_bpb must equal the bytes of the split; else a subset or changed accounting."""
        best_ratio = best_family = best_tokens = None
        reported = False
        for p, r in self.final:
            m = _ratio_metric(r)
            if m is None:
                continue
            ratio = m.val_loss / m.val_bpb
            tol = max(INTEGRITY_NOTE, 0.5 * 10.0 ** -m.decimals / m.val_bpb + 0.5 * 10.0 ** -m.decimals / m.val_loss)
            bpt = ratio / LN2
            family = _family(r, ratio)
            if best_ratio is None:
                best_ratio, best_family, best_tokens = bpt, family, r.val_tokens
            if reported:
                continue
            loc = _loc_line(p, m.lineno, m.line, "val_loss / val_bpb")
            if r.val_tokens:
                implied = r.val_tokens * bpt
                dev = implied / VAL_SPLIT_BYTES - 1.0
                if abs(dev) <= tol:
                    continue
                vt_loc = _loc_line(p, r.val_tokens_line, _line_at(self.logs[p], r.val_tokens_line), "val tokens")
                nums = (
                    f"val_tokens {r.val_tokens:,} x {bpt:.5f} bytes/token = {implied / 1e6:.3f} M bytes, "
                    f"expected {VAL_SPLIT_BYTES / 1e6:.2f} M ({dev:+.2%})"
                )
                full = min(TOKENIZER_FAMILIES.values(), key=lambda n: abs(n - r.val_tokens))
                if abs(full - r.val_tokens) <= TRUNCATION_SLACK and abs(dev) > INTEGRITY_ERROR:
                    self._integrity(codes.BYTE_ACCOUNTING, f"the byte count differs from the split's: {nums}; "
                                    "the token count is the full split's, so bytes are counted differently",
                                    vt_loc, (loc,), "tokenizer_bpb_bug")
                elif r.val_tokens < full - TRUNCATION_SLACK and dev < -INTEGRITY_ERROR:
                    builder = self._val_builder()
                    if builder:  # fewer documents exported by the submission's own script: not the challenge's split
                        self._integrity(codes.VAL_SPLIT_MISMATCH, f"the score covers a subset of the validation "
                                        f"split ({nums}), and {builder} builds the validation shards itself: a validation "
                                        "split other than the challenge's first 50,000 documents", vt_loc, (loc,), "other")
                    else:
                        self._integrity(codes.VAL_SUBSET, f"the score covers a subset of the validation split: {nums}",
                                        vt_loc, (loc,), "tokenizer_bpb_bug")
                elif r.val_tokens in HISTORICAL_VAL_TOKENS:
                    self.add(codes.VAL_BYTES_DRIFT, f"validation split of an earlier export ({HISTORICAL_VAL_TOKENS[r.val_tokens]}): "
                             f"{nums}", vt_loc, Severity.INFO, evidence=(loc,))
                elif abs(dev) > INTEGRITY_ERROR:
                    self._integrity(codes.VAL_SPLIT_MISMATCH, f"the validation data is not the challenge's split: {nums}",
                                    vt_loc, (loc,), "other")
                else:
                    self.add(codes.VAL_BYTES_DRIFT, f"implied validation bytes drift slightly: {nums}", vt_loc,
                             Severity.INFO, evidence=(loc,))
                reported = True
            elif family is not None:
                expect = VAL_SPLIT_BYTES / TOKENIZER_FAMILIES[family] * LN2
                dev = ratio / expect - 1.0
                if abs(dev) > max(tol, INTEGRITY_ERROR):
                    self.add(
                        codes.BYTES_PER_TOKEN_MISMATCH,
                        f"val_loss/val_bpb = {ratio:.5f} ({bpt:.4f} bytes/token) but the {family} tokenizer gives "
                        f"{expect:.5f} on the full split ({dev:+.2%}); the log prints no token count, so a subset or "
                        "changed byte accounting cannot be told apart",
                        loc,
                        Severity.WARNING,
                        "tokenizer_bpb_bug",
                        confidence=Confidence.MEDIUM,
                    )
                    reported = True
        return best_ratio, best_family, best_tokens

    def _val_builder(self) -> str | None:
        """A script of the folder that writes validation shards (`fineweb_val_000000.bin`) itself, from a number of
        documents other than the challenge's 50,000 (`--val-docs 10000`)."""
        for path in sorted(self.sub.files):
            if not path.endswith(".py") or path in self.sub.code_files:
                continue
            text = self.sub.text(path)
            if not _WRITES_VAL_SHARDS.search(text):
                continue
            counts = {int(m.group(1).replace("_", "")) for m in _VAL_DOC_COUNT.finditer(text)}
            if counts and VAL_DOCS not in counts:
                return path
        return None

    def _integrity(self, code: Code, msg: str, loc: Location, ev: tuple[Location, ...], category: str) -> None:
        if self.non_record and code is codes.VAL_SUBSET:
            self.add(code, msg + " (non-record track: not comparable to the leaderboard)", loc, Severity.WARNING,
                     evidence=ev)
        else:
            self.add(code, msg, loc, Severity.ERROR, category, evidence=ev)

    def check_runs(self) -> None:
        for p, res in self.logs.items():
            if len(res.runs) > 1:
                self.add(
                    codes.CONCATENATED_RUNS,
                    f"{p} holds {len(res.runs)} runs appended to one file; the last (from line "
                    f"{res.runs[-1].start_line}) is taken",
                    Location(path=p, start_line=res.runs[-1].start_line, end_line=res.runs[-1].start_line),
                    Severity.INFO,
                )


def _step_grace_ms(r: RunLog) -> float:
    """The wallclock check runs after a step, so a run may overshoot 600 s by one step (plus logging jitter)."""
    last = r.steps[-1].step if r.steps else 0
    if r.train_time_ms and last:
        return 1.5 * r.train_time_ms / last + 250.0
    return 1000.0


def _line_at(res: LogResult, lineno: int) -> str:
    if not lineno:
        return ""
    for e in res.events:
        if e.lineno == lineno:
            return e.text
    return ""


def _ratio_metric(r: RunLog) -> Metric | None:
    """The most precise metric with both numbers (the scored one when it has them)."""
    cands = [m for m in r.metrics if m.val_loss and m.val_bpb > 0 and m.val_loss > 0]
    if not cands:
        return None
    if r.scored is not None and r.scored in cands and r.scored.decimals >= 6:
        return r.scored
    return max(cands, key=lambda m: (m.decimals, m.lineno))


def _family(r: RunLog, ratio: float) -> str | None:
    if r.val_tokens:
        name = min(TOKENIZER_FAMILIES, key=lambda k: abs(TOKENIZER_FAMILIES[k] - r.val_tokens))
        if abs(TOKENIZER_FAMILIES[name] - r.val_tokens) <= TRUNCATION_SLACK:
            return name
    vocab = r.hyperparams.get("vocab_size")
    if vocab in VOCAB_FAMILY:
        fam = VOCAB_FAMILY[vocab]
        if fam == "sp8192":  # CaseOps shares the vocabulary size; pick the nearer ratio
            caseops = VAL_SPLIT_BYTES / TOKENIZER_FAMILIES["sp8192-caseops"] * LN2
            plain = VAL_SPLIT_BYTES / TOKENIZER_FAMILIES["sp8192"] * LN2
            return "sp8192-caseops" if abs(ratio - caseops) < abs(ratio - plain) else "sp8192"
        return fam
    return None


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


def check_claims(sub: Submission) -> ClaimsReport:
    """Claims of `sub` against its logs: findings (PG2xx) and the summary for the review comment."""
    logs = parsed_logs(sub)
    claims = extract_claims(sub)
    ch = _Checker(sub, logs, claims)
    tag, claimed = ch.check_headline()
    per_seed = ch.check_per_seed()
    ch.check_seed_labels()
    ch.check_duplicates()
    ch.check_seed_coverage()
    ch.check_size()
    ch.check_time()
    bpt, family, tokens = ch.integrity()
    ch.check_runs()
    final = [r for _, r in ch.final]
    arts = [r.artifact_bytes for r in final if r.artifact_bytes is not None]
    codes = [r.code_bytes for r in final if r.code_bytes is not None]
    trains = [r.train_seconds for r in final if r.train_seconds is not None and not r.eval_only]
    evals = [s for s in (r.eval_seconds()[0] for r in final) if s is not None]
    summary = ClaimsSummary(
        claimed_bpb=claimed,
        matched_tag=tag,
        seeds=sorted({r.seed for r in final if r.seed is not None}),
        per_seed=per_seed,
        n_logs=len(logs),
        artifact_bytes=max(arts) if arts else None,
        code_bytes=max(codes) if codes else None,
        train_seconds=max(trains) if trains else None,
        eval_seconds=max(evals) if evals else None,
        bytes_per_token=round(bpt, 5) if bpt is not None else None,
        tokenizer=family,
        val_tokens=tokens,
    )
    return ClaimsReport(findings=ch.findings, summary=summary, claims=claims)


__all__ = ["ClaimedValue", "Claims", "ClaimsReport", "ClaimsSummary", "check_claims", "extract_claims", "value_matches"]
