"""Checks: each seed's run (or shipped log) against the caps and the claims, and the package as a whole.

Every check returns a `Check` with a status; nothing here raises on bad evidence. A missing number is
INCONCLUSIVE (the run cannot be verified), a broken cap or a score that does not reproduce is FAIL.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum

from audit.challenge import ARTIFACT_CAP_BYTES, EVAL_CAP_SECONDS, TRAIN_CAP_SECONDS
from audit.checks.size import DOUBT, OVER, PASS, artifact_size
from audit.logs import RunLog, parse_log

TOLERANCE_FLOOR_BPB = 0.0005  # bf16 non-determinism between two runs of one seed on one machine
TOLERANCE_SPREAD_K = 2.0  # tolerance = K × the claimed seeds' sample std, at least the floor
TOLERANCE_FALLBACK_BPB = 0.002  # when fewer than two seeds were observed
TOLERANCE_CAP_BPB = 0.01  # a noisier submission than this needs a human, not a wider band
DEFAULT_OVERSHOOT_MS = 1000.0  # one step's grace when the log gives no step time
COMPRESSED_SUFFIXES = (".ptz", ".zst", ".zstd", ".xz", ".lzma", ".br", ".brotli", ".zlib", ".gz", ".bz2", ".bin")


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"  # recorded, does not fail verification
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  # the evidence to decide is missing (crash, timeout, no line in the log)
    SKIP = "skip"  # does not apply in this mode


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    measured: float | int | str | None = None
    limit: float | int | str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


# --- what a log says (adapter over audit.logs) ----------------------------------------------------
@dataclass
class LogFacts:
    seed: int | None = None
    train_time_ms: float | None = None
    step_avg_ms: float | None = None
    stop_reason: str | None = None
    val_bpb: float | None = None
    val_loss: float | None = None
    scored_tag: str | None = None
    eval_time_ms: float | None = None
    eval_times_ms: list[float] = field(default_factory=list)
    total_bytes: int | None = None  # logged artifact total: compressed model + code
    model_bytes: int | None = None
    code_bytes: int | None = None
    world_size: int | None = None
    code_raw_bytes: int | None = None  # the uncompressed code size, when the log prints it next to the compressed
    eval_only: bool = False  # the run re-evaluated a saved artifact (no training in this log)
    trained_in: str = ""  # an eval-only run: the log of the training run whose facts it carries
    stage_note: str = ""  # the scored stage is the one the claim names, not the log's last (why)
    runs: int = 0
    gpus: list[str] = field(default_factory=list)  # GPU names from an embedded nvidia-smi table
    run_log: RunLog | None = field(default=None, repr=False, compare=False)  # the parsed run
    size_log: RunLog | None = field(default=None, repr=False, compare=False)  # the run whose sizes count, if not it

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("run_log", "size_log")}

    @property
    def size_run(self) -> RunLog | None:
        return self.size_log or self.run_log


def log_facts(text: str) -> LogFacts:
    """The facts of the last run in a log, as the auditor's log parser reads it."""
    result = parse_log(text)
    run = result.last
    f = LogFacts(runs=len(result.runs), gpus=gpu_names(text))
    if run is None:
        return f
    f.seed = run.seed
    f.train_time_ms = _num(run.train_time_ms)
    f.stop_reason = run.stop_reason
    f.total_bytes = run.artifact_bytes
    f.code_bytes = run.code_bytes
    f.model_bytes = run.model_bytes
    f.world_size = run.world_size
    f.eval_only = run.eval_only
    f.run_log = run
    raw = [s.nbytes for s in run.sizes if s.kind == "code_raw"]
    f.code_raw_bytes = raw[-1] if raw else None
    f.eval_times_ms = [t.seconds * 1000 for t in run.eval_times]
    train_steps = [s for s in run.steps if s.kind == "train" and s.train_time_ms and s.step > 0]
    if train_steps:  # the per-step time bounds how far the cap check may overshoot
        last = train_steps[-1]
        f.step_avg_ms = last.train_time_ms / last.step
    if run.scored is not None:
        f.scored_tag = run.scored.tag
        f.val_bpb = _num(run.scored.val_bpb)
        f.val_loss = _num(run.scored.val_loss)
        seconds, _timing = run.eval_seconds()
        f.eval_time_ms = None if seconds is None else seconds * 1000
    return f


def claimed_stage(facts: LogFacts, claimed: float | None) -> LogFacts:
    """The run's facts scored at the stage the claim names: a record may score an earlier stage than the last
    one its log prints (sliding window, with a TTT experiment after it). Only when the last scored line is off
    the claim, and a scored (non-diagnostic) line prints the claimed value at its own precision, does the score
    move; `stage_note` names both stages."""
    run = facts.run_log
    if claimed is None or run is None or facts.val_bpb is None or abs(facts.val_bpb - claimed) <= 5e-5:
        return facts
    hits = [
        m
        for m in run.metrics
        if not m.diagnostic
        and m.tag != facts.scored_tag
        and abs(m.val_bpb - claimed) <= 0.5 * 10.0**-m.decimals + 1e-12
    ]
    if not hits:
        return facts
    return at_stage(facts, max(hits, key=lambda m: (m.decimals, m.lineno)).tag, "the claim is")


def at_stage(facts: LogFacts, tag: str, who: str = "the shipped log's claim is") -> LogFacts:
    """The facts with the score of the `tag` line (its full-precision twin when printed), if the run has one."""
    run = facts.run_log
    if run is None or tag == facts.scored_tag:
        return facts
    base = tag[:-6] if tag.endswith("_exact") else tag
    lines = [m for m in run.metrics if m.base_tag == base and not m.diagnostic]
    if not lines:
        return facts
    m = max(lines, key=lambda m: (m.decimals, m.lineno))
    eval_ms = next((x.eval_time_ms for x in reversed(lines) if x.eval_time_ms is not None), None)
    return replace(
        facts,
        val_bpb=m.val_bpb,
        val_loss=m.val_loss,
        scored_tag=m.tag,
        eval_time_ms=eval_ms if eval_ms is not None else facts.eval_time_ms,
        stage_note=f"{who} the run's {m.tag} line; its last scored line, {facts.scored_tag}, printed "
        f"{facts.val_bpb:.8f}",
    )


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


_GPU_NAME = re.compile(r"NVIDIA\s+(H100|H200|A100|B200|GH200|L40S?|RTX[\w ]*?|A10G?)[^|\n]*", re.I)


def gpu_names(text: str) -> list[str]:
    """One entry per GPU row of an nvidia-smi table or `nvidia-smi -L`/query output."""
    return [re.sub(r"\s+", " ", m.group(0)).strip(" |") for m in _GPU_NAME.finditer(text)]


def hardware_class(gpus: list[str]) -> str:
    if not gpus:
        return "unknown"
    kinds = {_gpu_kind(g) for g in gpus}
    return f"{len(gpus)}x {kinds.pop()}" if len(kinds) == 1 else f"{len(gpus)} mixed GPUs ({', '.join(sorted(kinds))})"


def _gpu_kind(name: str) -> str:
    n = name.upper()
    if "H100" in n:
        # SXM boards report HBM3 (80GB HBM3); PCIe and NVL say so in the name.
        if "PCIE" in n:
            return "H100 PCIe"
        if "NVL" in n:
            return "H100 NVL"
        return "H100 SXM" if ("HBM3" in n or "SXM" in n) else "H100 (form factor unknown)"
    return re.sub(r"^NVIDIA\s+", "", name.strip(), flags=re.I).split("  ")[0]


# --- tolerance ------------------------------------------------------------------------------------
def default_tolerance(observed: list[float]) -> tuple[float, str]:
    """From the spread the seeds actually showed (shipped logs, else the re-runs) — never from the claims,
    so one inflated claim cannot widen the tolerance that judges it."""
    if len(observed) < 2:
        return TOLERANCE_FALLBACK_BPB, f"fallback {TOLERANCE_FALLBACK_BPB} BPB (fewer than two observed seeds)"
    sd = statistics.stdev(observed)
    tol = min(TOLERANCE_CAP_BPB, max(TOLERANCE_FLOOR_BPB, TOLERANCE_SPREAD_K * sd))
    return (
        tol,
        f"{TOLERANCE_SPREAD_K:g} × observed seed std {sd:.6f}, within [{TOLERANCE_FLOOR_BPB}, {TOLERANCE_CAP_BPB}] BPB",
    )


# --- per-seed checks ------------------------------------------------------------------------------
@dataclass
class SeedEvidence:
    """What one seed's checks look at. `run` is None for shipped logs (--logs-only)."""

    seed: int
    facts: LogFacts
    run: dict | None = None  # RunResult.to_dict()
    source: str = ""  # log path
    claimed_bpb: float | None = None
    claims_from_this_log: bool = False
    code_bytes_on_disk: int = 0
    code: bytes = field(default=b"", repr=False)  # the code files as shipped (bounds a logged compressed code size)
    superseded: list[str] = field(default_factory=list)  # earlier runs of this seed this one replaces


def run_status_check(ev: SeedEvidence) -> Check:
    if ev.run is None:
        return Check("run", Status.SKIP, "shipped log; nothing was run")
    status, code = ev.run.get("status"), ev.run.get("exit_code")
    wall = ev.run.get("wall_s")
    if status == "ok":
        return Check("run", Status.PASS, f"exited 0 after {wall:.1f} s wall clock", measured=code)
    if status == "timed_out":
        return Check(
            "run",
            Status.INCONCLUSIVE,
            f"timed out after {wall:.1f} s (limit {ev.run.get('timeout_s'):.0f} s); process group killed",
            measured=wall,
            limit=ev.run.get("timeout_s"),
        )
    last = crash_reason(ev.run.get("log_tail") or "")
    if status == "crashed":
        return Check("run", Status.INCONCLUSIVE, f"crashed with exit code {code}: {last}", measured=code)
    return Check("run", Status.INCONCLUSIVE, f"{status}: {ev.run.get('error') or last}", measured=code)


_EXC_LINE = re.compile(r"^(?:\[\w.:-]+\]:?\s*)?((?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt|Exit)\b:?.*)$")


def crash_reason(tail: str) -> str:
    """The exception line of a crashed run (torchrun's own error banner is noise), else its last line."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _EXC_LINE.match(ln)
        if m and not ln.startswith(("torch.distributed.elastic", "raise ")):
            return m.group(1)
    useful = [ln for ln in lines if not set(ln) <= set("=-*")]
    return useful[-1] if useful else "no output"


def seed_check(ev: SeedEvidence) -> Check:
    got = ev.facts.seed
    if got is None:
        return Check("seed", Status.INCONCLUSIVE, "the log prints no seed", limit=ev.seed)
    if got != ev.seed:
        return Check(
            "seed", Status.FAIL, f"log printed seed {got}, seed {ev.seed} was asked for", measured=got, limit=ev.seed
        )
    return Check("seed", Status.PASS, f"log printed seed {got}", measured=got, limit=ev.seed)


def train_time_check(ev: SeedEvidence) -> Check:
    t = ev.facts.train_time_ms
    cap = TRAIN_CAP_SECONDS * 1000
    if t is None:
        return Check("train_time", Status.INCONCLUSIVE, "no training time in the log", limit=cap)
    grace = ev.facts.step_avg_ms or DEFAULT_OVERSHOOT_MS
    if t <= cap:
        return Check("train_time", Status.PASS, f"training stopped at {t / 1000:.3f} s by the script's timer", t, cap)
    if t <= cap + grace:
        return Check(
            "train_time",
            Status.WARN,
            f"training stopped at {t / 1000:.3f} s: past 600 s by less than one step ({grace:.0f} ms), "
            "the overshoot the baseline's cap check allows",
            t,
            cap,
        )
    return Check("train_time", Status.FAIL, f"training ran {t / 1000:.3f} s by the script's timer (cap 600 s)", t, cap)


def train_wall_check(ev: SeedEvidence) -> Check:
    if ev.run is None or ev.run.get("wall_s") is None:
        return Check("train_time_vs_wall_clock", Status.SKIP, "no outside wall clock for a shipped log")
    t, wall = ev.facts.train_time_ms, ev.run["wall_s"]
    if t is None:
        return Check("train_time_vs_wall_clock", Status.INCONCLUSIVE, "no training time in the log")
    if t / 1000 > wall:
        return Check(
            "train_time_vs_wall_clock",
            Status.FAIL,
            f"the script's timer says {t / 1000:.1f} s but the whole run took {wall:.1f} s outside",
            t / 1000,
            wall,
        )
    return Check(
        "train_time_vs_wall_clock",
        Status.PASS,
        f"script timer {t / 1000:.1f} s within outside wall clock {wall:.1f} s",
        t / 1000,
        wall,
    )


def eval_time_check(ev: SeedEvidence) -> Check:
    cap = EVAL_CAP_SECONDS * 1000
    e = ev.facts.eval_time_ms
    if e is None:
        run = ev.run or {}
        if run.get("wall_s") is not None and ev.facts.train_time_ms is not None:
            rest = run["wall_s"] - ev.facts.train_time_ms / 1000
            if rest <= EVAL_CAP_SECONDS:
                return Check(
                    "eval_time",
                    Status.WARN,
                    f"no eval time logged; everything after training took ≤ {rest:.1f} s",
                    rest * 1000,
                    cap,
                )
        return Check("eval_time", Status.INCONCLUSIVE, "no eval time for the scored metric in the log", limit=cap)
    if e > cap:
        return Check("eval_time", Status.FAIL, f"scored eval took {e / 1000:.1f} s (cap 600 s)", e, cap)
    return Check("eval_time", Status.PASS, f"scored eval ({ev.facts.scored_tag}) took {e / 1000:.1f} s", e, cap)


def artifact_file(run: dict, model_bytes: int | None) -> dict | None:
    """The artifact among the files a run wrote: the one whose size the log reports, else the largest
    compressed-looking file."""
    outputs = [o for o in run.get("outputs", []) if not o["path"].endswith((".log", ".txt", ".json"))]
    if model_bytes is not None:
        for o in outputs:
            if o["bytes"] == model_bytes:
                return o
    packed = [o for o in outputs if o["path"].lower().endswith(COMPRESSED_SUFFIXES)]
    return max(packed, key=lambda o: o["bytes"]) if packed else None


def size_check(ev: SeedEvidence) -> Check:
    """The artifact size by the rule pgolf-audit applies too (`audit.checks.size.artifact_size`): code as shipped
    + model (the artifact on disk for a re-run), the logged total as evidence when it is consistent with them."""
    cap = ARTIFACT_CAP_BYTES
    on_disk = None
    where = ""
    if ev.run is not None:
        if ev.run.get("status") != "ok" and not ev.run.get("outputs"):
            return Check("size", Status.INCONCLUSIVE, "the run wrote no artifact", limit=cap)
        art = artifact_file(ev.run, ev.facts.model_bytes)
        if art is None:
            return Check("size", Status.INCONCLUSIVE, "no artifact file found among the run's outputs", limit=cap)
        on_disk, where = art["bytes"], f"{art['path']}: "
    v = artifact_size(ev.code_bytes_on_disk, ev.facts.size_run, code=ev.code or None, model_on_disk=on_disk)
    if v.status == PASS:
        return Check("size", Status.PASS, where + v.message, v.total, cap)
    if v.status == OVER:
        if v.approx:  # an MB-precision line: the auditor warns too
            return Check("size", Status.WARN, where + v.message, v.total, cap)
        return Check("size", Status.FAIL, where + v.message, v.total, cap)
    if v.status == DOUBT:
        return Check("size", Status.WARN, where + v.message, v.total, cap)
    return Check("size", Status.INCONCLUSIVE, v.message, limit=cap)


def score_check(ev: SeedEvidence, tolerance: float) -> Check:
    got = ev.facts.val_bpb
    if got is None:
        return Check("score", Status.INCONCLUSIVE, "no scored val_bpb line in the log", limit=tolerance)
    if ev.claimed_bpb is None:
        return Check("score", Status.WARN, f"val_bpb {got:.8f}; no per-seed claim for seed {ev.seed}", got, tolerance)
    if ev.claims_from_this_log:
        return Check("score", Status.SKIP, f"val_bpb {got:.8f}; the claim was read from this same log", got, tolerance)
    diff = got - ev.claimed_bpb
    msg = f"val_bpb {got:.8f} vs claimed {ev.claimed_bpb:.8f} (Δ {diff:+.6f}, tolerance ±{tolerance:.6f})"
    if abs(diff) > tolerance:
        return Check("score", Status.FAIL, msg, got, tolerance)
    if ev.facts.stage_note:
        return Check("score", Status.WARN, f"{msg}; {ev.facts.stage_note}", got, tolerance)
    return Check("score", Status.PASS, msg, got, tolerance)


def hardware_check(ev: SeedEvidence) -> Check:
    gpus = list((ev.run or {}).get("env_info", {}).get("gpus") or []) or ev.facts.gpus
    cls = hardware_class(gpus)
    if cls == "8x H100 SXM":
        return Check("hardware", Status.PASS, cls, cls)
    return Check("hardware", Status.WARN, f"{cls}; the challenge's timings assume 8x H100 SXM", cls, "8x H100 SXM")


def seed_checks(ev: SeedEvidence, tolerance: float) -> list[Check]:
    checks = [
        run_status_check(ev),
        seed_check(ev),
        train_time_check(ev),
        train_wall_check(ev),
        eval_time_check(ev),
        size_check(ev),
        score_check(ev, tolerance),
        hardware_check(ev),
    ]
    if ev.run is not None and ev.run.get("status") != "ok":
        # A run that did not finish: the `run` check carries the verdict; what its log does show
        # (a seed, a training time past the cap) still counts, what it never reached is skipped.
        checks = checks[:1] + [
            c if c.status != Status.INCONCLUSIVE else Check(c.name, Status.SKIP, f"not reached: {c.message}")
            for c in checks[1:]
        ]
    return checks


# --- package checks -------------------------------------------------------------------------------
def package_checks(
    evidence: list[SeedEvidence],
    *,
    min_seeds: int,
    claimed_mean: float | None,
    tolerance: float,
    replaced: list[tuple[str, str, str]] | None = None,
) -> list[Check]:
    """`replaced`: (earlier log, the log that counts instead, why) — re-runs and copies `verify.runs` recognised."""
    out: list[Check] = []
    logged = [e.facts.seed for e in evidence if e.facts.seed is not None]
    dupes = sorted({s for s in logged if logged.count(s) > 1})
    later = [f"{new} replaces {old} ({why})" for old, new, why in replaced or []]
    note = f"; {len(later)} earlier run(s) replaced: " + "; ".join(later) if later else ""
    if dupes:
        out.append(
            Check(
                "seeds_unique",
                Status.FAIL,
                f"seed(s) {dupes} logged by more than one run, and nothing says which is the later{note}",
                str(logged),
            )
        )
    else:
        out.append(Check("seeds_unique", Status.PASS, f"{len(logged)} distinct seeds logged{note}", str(logged)))
    scored = [e.facts.val_bpb for e in evidence if e.facts.val_bpb is not None]
    n_ok = len(scored)
    status = Status.PASS if n_ok >= min_seeds else Status.INCONCLUSIVE
    out.append(Check("seed_count", status, f"{n_ok} seed(s) with a score, {min_seeds} required", n_ok, min_seeds))
    if scored and claimed_mean is not None and not all(e.claims_from_this_log for e in evidence):
        mean = statistics.fmean(scored)
        diff = mean - claimed_mean
        st = Status.PASS if abs(diff) <= tolerance else Status.FAIL
        out.append(
            Check(
                "mean_score",
                st,
                f"mean val_bpb {mean:.8f} vs claimed {claimed_mean:.8f} (Δ {diff:+.6f})",
                mean,
                tolerance,
            )
        )
    return out


def worst(statuses: list[Status]) -> str:
    """The verdict: failed beats inconclusive beats verified."""
    if Status.FAIL in statuses:
        return "failed"
    if Status.INCONCLUSIVE in statuses:
        return "inconclusive"
    return "verified"
