"""Check a stated significance claim ("Welch t=-17.63 df~3.24, p<0.001") against the seeds.

Every plausible test (Welch, Student pooled, one-sample, paired; one- or two-sided; each candidate
margin) is recomputed; the one that reproduces the stated numbers wins. Each stated number is judged
on its own (t and df to the stated precision, p by rounding, inequalities literally), and the claim
as a whole holds only if one input point explains all of them at once: rounding of the printed
inputs may explain a t a little off, never a `p<0.001` that the same t and df contradict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from .core import (
    LN2,
    NO_MARGIN,
    TOKENIZER_RATIOS,
    UNITS,
    WRITTEN_MARGIN,
    Margin,
    Reference,
    StatsError,
    TestResult,
    core_statistic,
    decimals_of,
    p_value,
    run_test,
)

# Reporting slack on top of the stated precision: claims are often computed from unrounded values
# that differ in the last digits from what the README prints.
REL_SLACK = {"=": 0.005, "~": 0.02}
P_REL_SLACK = {"=": 0.03, "~": 0.05}

_NUM = r"[-+−]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+−]?\d+)?"
_OP = r"(<=|>=|≤|≥|<|>|==|=|≈|~=|~|≃|:)"
_EDGE = r"(?<![A-Za-z0-9_.])"
_PATTERNS: dict[str, re.Pattern[str]] = {
    # t(2)=16.04 : the df in parentheses
    "t_df": re.compile(_EDGE + r"t\s*\(\s*(" + _NUM + r")\s*\)\s*" + _OP + r"\s*(" + _NUM + ")"),
    "t": re.compile(_EDGE + r"(?:t|T|t-stat(?:istic)?|t_stat)\s*" + _OP + r"\s*(" + _NUM + ")"),
    "df": re.compile(_EDGE + r"(?:df|dof|d\.f\.|degrees of freedom)\s*" + _OP + r"?\s*(" + _NUM + ")", re.I),
    "p": re.compile(_EDGE + r"(?:p|p-value|p-val|pvalue|p_value)\s*" + _OP + r"\s*(" + _NUM + ")", re.I),
    # How submission.json files and logs state them: `p_value 0.0001`, `"p_value": 0.0001`, `"t_stat": 16.0`.
    # Only the spelled-out names may omit the operator (a bare `p 0.01` is too easily prose).
    "t_named": re.compile(
        _EDGE + r"[\"']?(?:t-stat(?:istic)?|t_stat(?:istic)?)[\"']?\s*" + _OP + r"?\s*(" + _NUM + ")"
    ),
    "p_named": re.compile(
        _EDGE + r"[\"']?(?:p-value|p_value|pvalue|p-val)[\"']?\s*" + _OP + r"?\s*(" + _NUM + ")", re.I
    ),
    "delta": re.compile(
        r"(?:Δ|\bdelta\b|\bimprovement\b)\s*(?:of\s*)?" + _OP + r"?\s*(" + _NUM + r")\s*(nats?|bpb)?",
        re.I,
    ),
}
# "-0.0223 BPB = -0.0155 nats", "0.00224 BPB (~0.00488 nats)", "-0.0127 BPB / -0.0088 nats"
_CONVERSION = re.compile(r"(" + _NUM + r")\s*bpb\s*(?:=|≈|~|/|\(\s*[~≈=]?)\s*(" + _NUM + r")\s*nats?", re.I)
_WORDS = {
    "welch": re.compile(r"welch", re.I),
    "student": re.compile(r"student|pooled|equal[ -]var", re.I),
    "one_sample": re.compile(r"one[- ]sample|1[- ]sample|single[- ]sample", re.I),
    "paired": re.compile(r"\bpaired\b", re.I),
}
_ONE_SIDED = re.compile(r"one[- ](?:sided|tailed)", re.I)
_TWO_SIDED = re.compile(r"two[- ](?:sided|tailed)", re.I)


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _half_unit(text: str) -> float:
    return 0.5 * 10.0 ** (-decimals_of(text.replace("−", "-")))


@dataclass(frozen=True)
class StatedNumber:
    name: str  # t | df | p | delta
    op: str  # = ~ < <= > >=
    value: float
    text: str  # the number as written
    unit: str | None = None  # delta only

    @property
    def half_unit(self) -> float:
        return _half_unit(self.text)

    def show(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name}{self.op}{self.text}{unit}"


@dataclass(frozen=True)
class ParsedClaim:
    """A significance claim as written ("Welch t=-17.63 df~3.24"): its numbers and its words."""

    text: str
    numbers: tuple[StatedNumber, ...]
    test_hint: str | None  # welch | student | one_sample | paired
    sided: str | None  # less | two-sided
    unit_hint: str | None
    conversions: tuple[tuple[str, str], ...] = ()  # (bpb text, nats text) pairs


def _op(raw: str) -> str:
    return {"≤": "<=", "≥": ">=", "==": "=", ":": "=", "≈": "~", "~=": "~", "≃": "~"}.get(raw, raw or "=")


def parse_claim(text: str) -> ParsedClaim:
    """The numbers and words of a claim. Raises StatsError when it states no t, df, p or delta."""
    numbers: list[StatedNumber] = []
    taken: list[tuple[int, int]] = []

    def add(name: str, op: str, num: str, span: tuple[int, int], unit: str | None = None) -> None:
        if any(a <= span[0] < b for a, b in taken):
            return
        taken.append(span)
        numbers.append(StatedNumber(name, _op(op), _num(num), num, unit))

    for m in _PATTERNS["t_df"].finditer(text):
        add("df", "=", m.group(1), m.span(1))
        add("t", m.group(2), m.group(3), m.span())
    for name, key in (("t", "t"), ("t", "t_named"), ("df", "df"), ("p", "p"), ("p", "p_named")):
        for m in _PATTERNS[key].finditer(text):
            add(name, m.group(1) or "=", m.group(2), m.span())
    for m in _PATTERNS["delta"].finditer(text):
        unit = (m.group(3) or "").lower().rstrip("s").replace("nat", "nats") or None
        add("delta", m.group(1) or "=", m.group(2), m.span(), unit)
    conversions = tuple((m.group(1), m.group(2)) for m in _CONVERSION.finditer(text))
    if not numbers and not conversions:
        raise StatsError(f"no t, df, p or delta found in the claim {text!r}")
    hint = next((k for k, rx in _WORDS.items() if rx.search(text)), None)
    sided = "two-sided" if _TWO_SIDED.search(text) else ("less" if _ONE_SIDED.search(text) else None)
    low = text.lower()
    unit_hint = "nats" if "nats" in low else ("bpb" if "bpb" in low else None)
    return ParsedClaim(text, tuple(numbers), hint, sided, unit_hint, conversions)


# --- judging one number ---------------------------------------------------------------------------
def _violation(s: StatedNumber, ours: float) -> float:
    """0 when `ours` supports the stated number, else how far off, in tolerances."""
    if not math.isfinite(ours):
        return 1e6
    value = s.value
    if s.name in ("t", "delta"):
        # Claims orient t and delta either way (new - old or old - new): compare magnitudes; a
        # stated p still tells the direction.
        value, ours = abs(value), abs(ours)
    if s.op in ("=", "~"):
        rel = (P_REL_SLACK if s.name == "p" else REL_SLACK)[s.op]
        tol = s.half_unit + rel * abs(value)
        return max(0.0, abs(ours - value) - tol) / tol
    if s.name == "p" and value > 0 and ours > 0:  # inequalities on p: decades off
        gap = math.log10(ours) - math.log10(value)
    else:
        gap = (ours - value) / max(abs(value) * 0.01, 1e-12)
    if s.op in ("<", "<="):
        return max(0.0, gap if s.op == "<=" else gap + 1e-9)
    return max(0.0, -gap if s.op == ">=" else -gap + 1e-9)


@dataclass(frozen=True)
class NumberCheck:
    stated: StatedNumber
    ours: float
    status: str  # "reproduced" | "within input rounding" | "not reproduced" | "unchecked"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stated": self.stated.show(),
            "name": self.stated.name,
            "ours": self.ours if math.isfinite(self.ours) else None,
            "status": self.status,
        }


@dataclass(frozen=True)
class ConversionCheck:
    bpb: float
    nats: float
    ratio: float | None
    correct: bool | None
    diagnosis: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "bpb": self.bpb,
            "nats": self.nats,
            "ratio": self.ratio,
            "correct": self.correct,
            "diagnosis": self.diagnosis,
        }


def check_conversion(bpb_text: str, nats_text: str, ratio: float | None) -> ConversionCheck:
    """Is `nats` = `bpb` x r? Names the usual mistakes (x ln 2 only, bpb labelled nats, wrong r)."""
    bpb, nats = abs(_num(bpb_text)), abs(_num(nats_text))
    tol = _half_unit(nats_text) + 0.005 * nats + _half_unit(bpb_text) * (ratio or 3.0)

    def near(x: float) -> bool:
        return abs(nats - x) <= tol

    if ratio is not None and near(bpb * ratio):
        return ConversionCheck(bpb, nats, ratio, True, f"correct: {bpb:g} bpb x r={ratio:.6g}")
    if near(bpb * LN2):
        why = "multiplied by ln 2 only (the bytes/token factor is missing)"
    elif near(bpb):
        why = "a bpb difference labelled as nats"
    else:
        other = [k for k, r in TOKENIZER_RATIOS.items() if near(bpb * r)]
        if ratio is None and other:
            return ConversionCheck(bpb, nats, None, None, f"consistent with r of {', '.join(other)}")
        why = f"uses the r of {other[0]} ({TOKENIZER_RATIOS[other[0]]:.6g})" if other else "matches no known r"
    if ratio is None and not why.startswith(("multiplied", "a bpb")):
        return ConversionCheck(bpb, nats, None, None, f"cannot verify without r ({why})")
    expected = f"; bpb x r = {bpb * ratio:.5f} nats" if ratio else ""
    return ConversionCheck(bpb, nats, ratio, False, why + expected)


# --- candidates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidate:
    kind: str
    alternative: str
    margin: Margin
    order: int


def _candidates(claim: ParsedClaim, ref: Reference, n_new: int, margins: Sequence[Margin]) -> list[_Candidate]:
    if ref.kind == "constant":
        kinds = ["one_sample"]
    elif ref.kind == "summary":
        kinds = ["welch", "student"]
    else:
        kinds = ["welch", "student", "one_sample"]
        if claim.test_hint == "paired" and ref.n == n_new:
            kinds.append("paired")
    out = []
    for margin in margins:
        for kind in kinds:
            for alt in ("less", "two-sided"):
                out.append(_Candidate(kind, alt, margin, len(out)))
    return out


class _Model:
    """The statistics of one candidate as a function of the (perturbed) inputs."""

    def __init__(
        self, cand: _Candidate, new: np.ndarray, ref: Reference, margin: float, unit: str, ratio: float | None
    ):
        self.cand, self.ref, self.margin, self.unit, self.ratio = cand, ref, margin, unit, ratio
        self.n_new = len(new)
        self.x0 = np.concatenate([new, np.asarray(ref.values, dtype=float)])

    def quantities(self, x: np.ndarray) -> dict[str, float]:
        new, refv = x[: self.n_new], x[self.n_new :]
        if self.ref.kind == "summary":
            refv = np.array([refv[0], max(refv[1], 0.0)])
        t, df, _, improvement = core_statistic(self.cand.kind, new, self.ref.kind, refv, self.ref.n, self.margin)
        return {"t": t, "df": df, "p": p_value(t, df, self.cand.alternative), "delta": -improvement}

    def delta_in(self, delta: float, unit: str | None) -> float | None:
        if unit is None or unit == self.unit:
            return delta
        return None if self.ratio is None else Margin(delta, self.unit).in_unit(unit, self.ratio)


def _judge(model: _Model, numbers: Sequence[StatedNumber], x: np.ndarray) -> list[float | None]:
    q = model.quantities(x)
    out: list[float | None] = []
    for s in numbers:
        if s.name == "delta":
            d = model.delta_in(q["delta"], s.unit)
            out.append(None if d is None else _violation(s, d))
        else:
            out.append(_violation(s, q[s.name]))
    return out


def _min_violation(model: _Model, numbers: Sequence[StatedNumber], h: np.ndarray) -> float:
    """Smallest total violation over inputs within their printed rounding (x0 ± h)."""
    active = h > 0
    if not active.any() or not numbers:
        return sum(v or 0.0 for v in _judge(model, numbers, model.x0))

    def objective(u: np.ndarray) -> float:
        x = model.x0.copy()
        x[active] += u * h[active]
        return float(sum(min(v, 1e3) ** 2 for v in _judge(model, numbers, x) if v is not None))

    k = int(active.sum())
    rng = np.random.default_rng(0)
    starts = [np.zeros(k)] + [rng.uniform(-1, 1, k) for _ in range(3)]
    best = math.inf
    for u0 in starts:
        res = optimize.minimize(objective, u0, method="L-BFGS-B", bounds=[(-1, 1)] * k, options={"maxiter": 100})
        best = min(best, float(res.fun))
        if best <= 1e-10:
            break
    return best


def _t_range(model: _Model, h: np.ndarray) -> tuple[float, float]:
    """The smallest and largest T the inputs allow within their printed rounding."""
    active = h > 0
    k = int(active.sum())

    def t_at(u: np.ndarray, sign: float) -> float:
        x = model.x0.copy()
        x[active] += u * h[active]
        t = model.quantities(x)["t"]
        return sign * t if math.isfinite(t) else 1e12

    ends = []
    for sign in (1.0, -1.0):
        best = t_at(np.zeros(k), sign)
        for u0 in (np.zeros(k), np.ones(k), -np.ones(k)):
            res = optimize.minimize(t_at, u0, args=(sign,), method="L-BFGS-B", bounds=[(-1, 1)] * k)
            best = min(best, float(res.fun))
        ends.append(sign * best)
    return ends[0], ends[1]


@dataclass(frozen=True)
class ClaimCheck:
    claim: str
    result: TestResult  # the closest test
    numbers: tuple[NumberCheck, ...]
    reproduced: bool  # one input point (within rounding) explains every stated number
    agrees: bool  # what pgolf concludes about the claim
    reproduced_by: str  # "Welch two-sample, one-sided; unit=bpb; margin=0" or "not reproduced; …"
    findings: tuple[str, ...] = ()
    conversions: tuple[ConversionCheck, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "agrees": self.agrees,
            "reproduced": self.reproduced,
            "reproduced_by": self.reproduced_by,
            "our_value": self.result.brief(),
            "test": self.result.to_dict(),
            "numbers": [n.to_dict() for n in self.numbers],
            "conversions": [c.to_dict() for c in self.conversions],
            "findings": list(self.findings),
        }


def default_margins(unit: str, ratio: float | None) -> list[Margin]:
    """No margin, the written 0.005 nats (when it can be expressed in `unit`), and 0.005 in the
    values' own unit (the common mistake of applying the nat margin to bpb)."""
    margins = [NO_MARGIN]
    if unit == "nats" or ratio is not None:
        margins.append(WRITTEN_MARGIN)
    if unit == "bpb":
        margins.append(Margin(WRITTEN_MARGIN.value, "bpb"))
    return margins


def check_claim(
    claim: str | ParsedClaim,
    new: Sequence[float],
    ref: Reference,
    *,
    unit: str = "bpb",
    ratio: float | None = None,
    margins: Sequence[Margin] | None = None,
    new_decimals: Sequence[int] | None = None,
) -> ClaimCheck:
    """Find the test that reproduces a stated claim and judge each stated number."""
    parsed = claim if isinstance(claim, ParsedClaim) else parse_claim(claim)
    if unit not in UNITS:
        raise StatsError(f"unit must be bpb or nats, not {unit!r}")
    new_vals = np.asarray([float(v) for v in new])
    if len(new_vals) < 2:
        raise StatsError(f"n={len(new_vals)}: at least 2 seeds are needed to check a claim")
    decs = list(new_decimals) if new_decimals is not None else [decimals_of(v) for v in new_vals]
    h = np.array([0.5 * 10.0**-d for d in list(decs) + list(ref.decimals)])
    if ref.kind == "summary" and h[-1] >= ref.values[1] > 0:
        h[-1] = ref.values[1] * 0.999  # keep the perturbed sd positive
    usable = [m for m in (margins or default_margins(unit, ratio)) if _convertible(m, unit, ratio)]
    if not usable:
        raise StatsError("no usable margin: a margin in the other unit needs r (--ratio/--tokenizer)")
    numbers = parsed.numbers
    ranked = []
    for cand in _candidates(parsed, ref, len(new_vals), usable):
        model = _Model(cand, new_vals, ref, cand.margin.in_unit(unit, ratio), unit, ratio)
        if not math.isfinite(model.quantities(model.x0)["t"]):
            continue
        center = _judge(model, numbers, model.x0)
        checked = [(s, v) for s, v in zip(numbers, center) if v is not None]
        at_center = sum(1 for _, v in checked if v == 0)
        words = (
            (parsed.test_hint == cand.kind)
            + (parsed.sided == cand.alternative)
            + (parsed.sided is None and cand.alternative == "less")
        )
        distance = sum(min(v, 100.0) for _, v in checked)
        ranked.append(((at_center, words, -distance, -cand.order), cand, model, center, checked))
    if not ranked:
        raise StatsError("no test is defined on these inputs (zero spread in every sample?)")
    # Best first: the first candidate that some single input point fully explains wins; the
    # search over input rounding is the costly part, so stop there.
    ranked.sort(key=lambda r: r[0], reverse=True)
    joint = False
    _, cand, model, center, _ = ranked[0]
    for _, c, mdl, ctr, checked in ranked:
        if all(v == 0 for _, v in checked) or _min_violation(mdl, [s for s, _ in checked], h) <= 1e-10:
            joint, cand, model, center = True, c, mdl, ctr
            break
    result = run_test(
        cand.kind, new_vals, ref, unit=unit, margin=cand.margin, ratio=ratio, alternative=cand.alternative
    )
    q = model.quantities(model.x0)
    checks = []
    for s, v in zip(numbers, center):
        ours = model.delta_in(q["delta"], s.unit) if s.name == "delta" else q[s.name]
        if v is None or ours is None:
            status = "unchecked"
        elif v == 0:
            status = "reproduced"
        elif _min_violation(model, [s], h) <= 1e-10:
            status = "within input rounding"
        else:
            status = "not reproduced"
        checks.append(NumberCheck(s, math.nan if ours is None else float(ours), status))
    conversions = tuple(check_conversion(b, n, ratio) for b, n in parsed.conversions)
    findings = _findings(parsed, checks, result, joint, conversions)
    t_ok = any(c.stated.name == "t" and c.status != "not reproduced" for c in checks)
    if joint and any(c.status == "within input rounding" for c in checks):
        lo, hi = _t_range(model, h)
        label = result.describe() + f" (rounded-input range t in [{lo:.3g}, {hi:.3g}])"
    elif joint:
        label = result.describe()
    elif t_ok:
        label = result.describe() + " (reproduces the stated t but not every other stated number)"
    else:
        label = "not reproduced; closest: " + result.describe()
    agrees = joint and all(c.correct is not False for c in conversions)
    return ClaimCheck(parsed.text, result, tuple(checks), joint, agrees, label, tuple(findings), conversions)


def _convertible(margin: Margin, unit: str, ratio: float | None) -> bool:
    try:
        margin.in_unit(unit, ratio)
    except StatsError:
        return False
    return True


def _findings(
    claim: ParsedClaim,
    checks: Sequence[NumberCheck],
    result: TestResult,
    joint: bool,
    conversions: Sequence[ConversionCheck],
) -> list[str]:
    out = []
    for c in checks:
        s = c.stated
        if c.status == "unchecked":
            out.append(f"{s.show()}: not checked (converting {result.unit} to {s.unit} needs r)")
        elif s.op in ("<", "<=", ">", ">=") and c.status == "not reproduced":
            out.append(f"stated {s.show()} is false: {s.name}={c.ours:.3g}")
        elif c.status == "not reproduced":
            out.append(f"stated {s.show()} is not reproduced: {s.name}={c.ours:.4g}")
    if not joint and all(c.status != "not reproduced" for c in checks if c.status != "unchecked"):
        out.append("each number is within input rounding alone, but no single input explains all")
    if claim.test_hint and claim.test_hint != result.test and joint:
        out.append(
            f"the claim names a {claim.test_hint.replace('_', '-')} test; its numbers are those of {result.label}"
        )
    out += [f"conversion {c.bpb:g} bpb -> {c.nats:g} nats: {c.diagnosis}" for c in conversions if c.correct is not True]
    return out


# --- the corpus's case rows (dev_stats_cases.tsv) -------------------------------------------------
@dataclass(frozen=True)
class StatsCase:
    name: str
    new: tuple[float, ...]
    new_decimals: tuple[int, ...]
    unit: str
    reference: Reference
    margin: Margin
    ratio: float | None
    claim: str
    expected: dict[str, str]  # reproduced_by / our_value / agrees when the row has them

    def check(self) -> ClaimCheck:
        return check_claim(
            self.claim,
            self.new,
            self.reference,
            unit=self.unit,
            ratio=self.ratio,
            margins=[self.margin],
            new_decimals=self.new_decimals,
        )


def parse_values(text: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    parts = [p.strip() for p in re.split(r"[;,\s]+", text.strip()) if p.strip()]
    try:
        return tuple(_num(p) for p in parts), tuple(decimals_of(p) for p in parts)
    except ValueError:
        raise StatsError(f"not a list of numbers: {text!r}") from None


def parse_reference(text: str) -> Reference:
    """'seeds:1.0580;1.0573', 'summary:mean=1.060755,sd=0.000933,n=6' or a single value."""
    kind, _, rest = text.strip().partition(":")
    if not rest:
        vals, decs = parse_values(kind)
        if len(vals) != 1:
            raise StatsError(f"baseline {text!r}: expected 'seeds:…', 'summary:…' or one value")
        return Reference.constant(vals[0], decs)
    if kind == "seeds":
        vals, decs = parse_values(rest)
        return Reference.seeds(vals, decs)
    if kind == "summary":
        fields = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        try:
            mean, sd, n = fields["mean"].strip(), fields["sd"].strip(), int(fields["n"])
        except (KeyError, ValueError):
            raise StatsError(f"baseline summary {text!r}: expected mean=…,sd=…,n=…") from None
        return Reference.summary(_num(mean), _num(sd), n, (decimals_of(mean), decimals_of(sd)))
    raise StatsError(f"baseline {text!r}: unknown kind {kind!r}")


_MARGIN = re.compile(r"^\s*(" + _NUM + r")\s*(nats?|bpb)?\s*(?:\(\s*=\s*(" + _NUM + r")\s*(bpb|nats?)\s*\))?")


def parse_margin(text: str) -> tuple[Margin, float | None]:
    """'0', '0.005 bpb', '0.005 nats (=0.00296 bpb)' -> (margin, r implied by the equivalence)."""
    m = _MARGIN.match(text)
    if not m:
        raise StatsError(f"margin {text!r}: expected e.g. '0', '0.005 nats' or '0.003 bpb'")
    value = _num(m.group(1))
    unit = "bpb" if (m.group(2) or "").lower() == "bpb" else "nats"
    if value == 0:
        return NO_MARGIN, None
    ratio = None
    if m.group(3):
        other = m.group(3)
        nats, bpb = (value, _num(other)) if unit == "nats" else (_num(other), value)
        ratio = ratio_matching(nats, bpb, decimals_of(other))
    return Margin(value, unit), ratio  # type: ignore[arg-type]


def ratio_matching(nats: float, bpb: float, decimals: int) -> float:
    """The known tokenizer r that turns `nats` into the printed `bpb` (at its precision), else
    the ratio of the two printed numbers."""
    for r in TOKENIZER_RATIOS.values():
        if round(nats / r, decimals) == round(bpb, decimals) or round(bpb * r, decimals) == round(nats, decimals):
            return r
    return nats / bpb


def parse_case(row: dict[str, str]) -> StatsCase:
    new, decs = parse_values(row["new_seed_values"])
    unit = row.get("unit", "bpb").strip() or "bpb"
    margin, ratio = parse_margin(row.get("margin", "0") or "0")
    expected = {k: row[k] for k in ("reproduced_by", "our_value", "agrees") if row.get(k)}
    return StatsCase(
        row.get("case", ""),
        new,
        decs,
        unit,
        parse_reference(row["baseline"]),
        margin,
        ratio,
        row["claimed_stat"],
        expected,
    )
