"""Significance tests behind Parameter Golf record acceptance (docs/stats.md).

Pure functions over frozen dataclasses; scipy/numpy only, no pgolf imports (the bottom of the
package: `claims` and `report` build on it). Conventions used throughout:

* every test is one-sided unless asked otherwise, with H1: mean(new) < mean(ref) - margin;
* the statistic T is oriented so that a positive value favours the new record:
  T = (mean(ref) - margin - mean(new)) / SE  (scipy's ``ttest_ind(new, ref, alternative='less')``
  returns -T when the margin is 0);
* values are in one unit (``bpb`` or ``nats``); a margin in the other unit is converted with
  r = val_loss / val_bpb of the new record, and nats are never compared across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special
from scipy import stats as sps

Unit = Literal["bpb", "nats"]
UNITS: tuple[str, ...] = ("bpb", "nats")

WRITTEN_MARGIN_NATS = 0.005  # README "Submission process": beat SOTA by at least 0.005 nats …
WRITTEN_ALPHA = 0.01  # … shown at p < 0.01
PROGRESSION_ALPHA = 0.25  # PR #1902 / #2146: one-sided Welch vs the previous frontier row
CONFIDENCE = 0.95
LN2 = math.log(2.0)

# r = val_loss / val_bpb = ln 2 x bytes/token, per (tokenizer, val set); docs/stats.md, nats ↔ bpb.
TOKENIZER_RATIOS: dict[str, float] = {
    "sp1024": 1.688458,
    "sp1024-naive-valset": 1.692876,  # the Naive Baseline log only (a different val set)
    "sp4096": 2.301027,
    "sp8192": 2.583104,
    "sp8192-caseops": 2.188371,
    "byte": LN2,
}


class StatsError(ValueError):
    """A refusal or unusable input (too few seeds, missing ratio, cross-tokenizer nats)."""


# --- units ----------------------------------------------------------------------------------------
def ratio_of(val_loss: float, val_bpb: float) -> float:
    """r = val_loss / val_bpb from one scored log line (nats per token over bits per byte)."""
    if not (val_bpb > 0 and val_loss > 0):
        raise StatsError(f"cannot derive r from val_loss={val_loss} val_bpb={val_bpb}")
    return val_loss / val_bpb


def tokenizer_ratio(name: str) -> float:
    try:
        return TOKENIZER_RATIOS[name.lower()]
    except KeyError:
        known = ", ".join(TOKENIZER_RATIOS)
        raise StatsError(f"unknown tokenizer {name!r} (known: {known}); pass --ratio") from None


def to_nats(bpb: float, ratio: float) -> float:
    """A bpb quantity (score or difference) in nats per token: bpb x r."""
    return bpb * ratio


def to_bpb(nats: float, ratio: float) -> float:
    return nats / ratio


def require_comparable(unit: str, tokenizer_new: str | None, tokenizer_ref: str | None) -> None:
    """Nats per token depend on the tokenizer: refuse a nats comparison across tokenizers."""
    if unit == "nats" and tokenizer_new and tokenizer_ref and tokenizer_new != tokenizer_ref:
        raise StatsError(
            f"nats are not comparable across tokenizers ({tokenizer_new} vs {tokenizer_ref}); "
            "compare in bpb and convert the margin with the new record's r"
        )


@dataclass(frozen=True)
class Margin:
    """A required improvement, in the unit it was stated in."""

    value: float
    unit: Unit = "nats"

    def in_unit(self, unit: str, ratio: float | None) -> float:
        if self.value == 0 or self.unit == unit:
            return self.value
        if ratio is None:
            raise StatsError(
                f"a margin of {self.value:g} {self.unit} needs r = val_loss/val_bpb to be used on "
                f"{unit} values (give --ratio, --tokenizer or a record folder)"
            )
        return to_bpb(self.value, ratio) if unit == "bpb" else to_nats(self.value, ratio)

    def describe(self, unit: str, ratio: float | None) -> str:
        """How reports and the corpus write a margin: '0', '0.005 bpb', '0.005 nats (=0.00296 bpb)'."""
        if self.value == 0:
            return "0"
        text = f"{self.value:g} {self.unit}"
        if self.unit != unit and ratio is not None:
            text += f" (={self.in_unit(unit, ratio):.3g} {unit})"
        return text


NO_MARGIN = Margin(0.0, "bpb")
WRITTEN_MARGIN = Margin(WRITTEN_MARGIN_NATS, "nats")


# --- samples --------------------------------------------------------------------------------------
def decimals_of(text_or_value: str | float) -> int:
    """Decimal places a number was written with ('1.88' -> 2, '1e-05' -> 5); used to bound how
    much rounding of the inputs can move a recomputed statistic."""
    s = text_or_value if isinstance(text_or_value, str) else repr(float(text_or_value))
    s = s.strip().lower().lstrip("+-−")
    mant, _, exp = s.partition("e")
    places = len(mant.partition(".")[2])
    return max(0, places - int(exp or 0))


def finite_values(xs: Sequence[float], what: str) -> tuple[float, ...]:
    """`xs` as floats; StatsError (naming `what`) when one is NaN or infinite."""
    vals = tuple(float(x) for x in xs)
    if any(not math.isfinite(v) for v in vals):
        raise StatsError(f"{what}: values must be finite numbers")
    return vals


@dataclass(frozen=True)
class Summary:
    """Per-seed summary: n, mean, sample sd (ddof=1), standard error and a two-sided CI."""

    n: int
    mean: float
    sd: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
        vals = finite_values(values, "summary")
        if len(vals) < 2:
            raise StatsError(f"n={len(vals)}: at least 2 seeds are needed to estimate the spread")
        arr = np.asarray(vals)
        return cls.from_stats(float(arr.mean()), float(arr.std(ddof=1)), len(vals), confidence)

    @classmethod
    def from_stats(cls, mean: float, sd: float, n: int, confidence: float = CONFIDENCE) -> Summary:
        if n < 2:
            raise StatsError(f"n={n}: at least 2 seeds are needed to estimate the spread")
        if sd < 0 or not math.isfinite(sd) or not math.isfinite(mean):
            raise StatsError(f"invalid summary mean={mean} sd={sd}")
        se = sd / math.sqrt(n)
        half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * se
        return cls(n, mean, sd, se, mean - half, mean + half, confidence)


def moment_sample(mean: float, sd: float, n: int) -> tuple[float, ...]:
    """n values whose mean and sample sd (ddof=1) are exactly `mean` and `sd`: a record stated as summary
    statistics. Every test here except the paired one reads the new side only through (mean, sd, n), so running
    it on these values is the exact test on the summary."""
    if n < 2:
        raise StatsError(f"n={n}: at least 2 seeds are needed to estimate the spread")
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd < 0:
        raise StatsError(f"invalid summary mean={mean} sd={sd}")
    z = np.arange(n, dtype=float) - (n - 1) / 2.0
    z /= z.std(ddof=1)
    return tuple(float(v) for v in mean + sd * z)


@dataclass(frozen=True)
class Reference:
    """What a candidate is compared with: the previous record's seeds, its summary statistics
    (mean, sd, n), or a single value (the SOTA as printed)."""

    kind: Literal["seeds", "summary", "constant"]
    values: tuple[float, ...]  # seeds | (mean, sd) | (value,)
    n: int
    decimals: tuple[int, ...]  # places each of `values` was written with

    @classmethod
    def seeds(cls, values: Sequence[float], decimals: Sequence[int] | None = None) -> Reference:
        vals = finite_values(values, "baseline seeds")
        if not vals:
            raise StatsError("baseline seeds: no values")
        return cls("seeds", vals, len(vals), _decs(vals, decimals))

    @classmethod
    def summary(cls, mean: float, sd: float, n: int, decimals: Sequence[int] | None = None) -> Reference:
        if n < 2:
            raise StatsError(f"baseline summary n={n}: need n >= 2")
        if not (sd >= 0) or not math.isfinite(mean) or not math.isfinite(sd):
            raise StatsError(f"baseline summary: invalid mean={mean} sd={sd}")
        vals = (float(mean), float(sd))
        return cls("summary", vals, int(n), _decs(vals, decimals))

    @classmethod
    def constant(cls, value: float, decimals: Sequence[int] | None = None) -> Reference:
        vals = finite_values([value], "SOTA value")
        return cls("constant", vals, 1, _decs(vals, decimals))

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.kind == "seeds" else self.values[0]

    @property
    def has_spread(self) -> bool:
        return self.kind == "summary" or (self.kind == "seeds" and self.n >= 2)

    def describe(self) -> str:
        if self.kind == "seeds":
            return f"{self.n} baseline seeds (mean {self.mean:.8g})"
        if self.kind == "summary":
            return f"baseline summary mean={self.values[0]:g} sd={self.values[1]:g} n={self.n}"
        return f"constant {self.values[0]:g}"


def _decs(vals: tuple[float, ...], decimals: Sequence[int] | None) -> tuple[int, ...]:
    if decimals is None:
        return tuple(decimals_of(v) for v in vals)
    if len(decimals) != len(vals):
        raise StatsError("decimals must match the values one to one")
    return tuple(int(d) for d in decimals)


# --- the tests ------------------------------------------------------------------------------------
TEST_KINDS: tuple[str, ...] = ("welch", "student", "one_sample", "paired")


def test_label(kind: str, ref_kind: str) -> str:
    """The names the corpus and reports use for a test."""
    if kind == "one_sample":
        return "one-sample vs constant" if ref_kind == "constant" else "one-sample vs baseline mean"
    if kind == "paired":
        return "paired two-sample"
    base = "Welch two-sample" if kind == "welch" else "Student pooled two-sample"
    return base + (" from summary stats" if ref_kind == "summary" else "")


def _moments(xs: np.ndarray) -> tuple[float, float, int]:
    return float(xs.mean()), float(xs.var(ddof=1)) if len(xs) > 1 else float("nan"), len(xs)


def core_statistic(
    kind: str, new: np.ndarray, ref_kind: str, ref: np.ndarray, ref_n: int, margin: float
) -> tuple[float, float, float, float]:
    """(T, df, SE, improvement) for one test; improvement = mean(ref) - mean(new), no margin.

    Written out with numpy (not scipy's wrappers) because the claim checker evaluates it thousands
    of times while exploring input rounding; tests check it against scipy.
    """
    mn, vn, nn = _moments(new)
    if ref_kind == "seeds":
        mr, vr, nr = _moments(ref)
    elif ref_kind == "summary":
        mr, vr, nr = float(ref[0]), float(ref[1]) ** 2, ref_n
    else:
        mr, vr, nr = float(ref[0]), float("nan"), 1
    improvement = mr - mn
    if kind == "one_sample":
        se2, df = vn / nn, nn - 1.0
    elif kind == "paired":
        d = ref - new
        se2, df = float(d.var(ddof=1)) / nn, nn - 1.0
    elif kind == "welch":
        a, b = vn / nn, vr / nr
        se2 = a + b
        df = se2**2 / (a * a / (nn - 1) + b * b / (nr - 1)) if se2 > 0 else float("nan")
    else:  # student, pooled variance
        df = nn + nr - 2.0
        sp2 = ((nn - 1) * vn + (nr - 1) * vr) / df
        se2 = sp2 * (1.0 / nn + 1.0 / nr)
    se = math.sqrt(se2) if se2 > 0 else 0.0
    t = (improvement - margin) / se if se > 0 else float("nan")
    return t, float(df), se, improvement


def p_value(t: float, df: float, alternative: str) -> float:
    if not (math.isfinite(t) and df > 0):
        return float("nan")
    if alternative == "two-sided":
        return float(min(1.0, 2.0 * special.stdtr(df, -abs(t))))
    return float(special.stdtr(df, -t))  # P(T >= t) under H0


@dataclass(frozen=True)
class TestResult:
    """One row of the report table (pingouin's columns: T, dof, alternative, p, CI, effect size)."""

    test: str  # welch | student | one_sample | paired
    label: str  # e.g. "Welch two-sample from summary stats"
    alternative: str  # "less" (new < ref - margin, one-sided) | "two-sided"
    unit: str
    margin: float  # in `unit`
    margin_text: str  # e.g. "0.005 nats (=0.00296 bpb)"
    t: float
    df: float
    p: float
    improvement: float  # mean(ref) - mean(new), in `unit`
    ci_low: float  # CI of the improvement (one-sided tests: ci_high = +inf)
    ci_high: float
    cohen_d: float  # (improvement - margin) / sd (pooled for two samples)
    n_new: int
    n_ref: int
    reference: str
    confidence: float = CONFIDENCE
    warnings: tuple[str, ...] = ()

    @property
    def sided(self) -> str:
        return "two-sided" if self.alternative == "two-sided" else "one-sided"

    def describe(self) -> str:
        """'Welch two-sample, one-sided; unit=bpb; margin=0' (the corpus's reproduced_by)."""
        return f"{self.label}, {self.sided}; unit={self.unit}; margin={self.margin_text}"

    def brief(self) -> str:
        """'t=3.426 df=3.90 p=0.0138' (the corpus's our_value)."""
        return f"t={self.t:.4g} df={self.df:.2f} p={self.p:#.3g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sided"] = self.sided
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def run_test(
    kind: str,
    new: Sequence[float],
    ref: Reference,
    *,
    unit: str = "bpb",
    margin: Margin = NO_MARGIN,
    ratio: float | None = None,
    alternative: str = "less",
    confidence: float = CONFIDENCE,
) -> TestResult:
    """Run one test of `new` against `ref` with the margin inside the null hypothesis."""
    if unit not in UNITS:
        raise StatsError(f"unit must be bpb or nats, not {unit!r}")
    if kind not in TEST_KINDS:
        raise StatsError(f"unknown test {kind!r}")
    if alternative not in ("less", "two-sided"):
        raise StatsError("alternative must be 'less' (one-sided) or 'two-sided'")
    vals = finite_values(new, "new seeds")
    if len(vals) < 2:
        raise StatsError(f"n={len(vals)}: refusing to test with fewer than 2 seeds")
    if kind in ("welch", "student") and not ref.has_spread:
        raise StatsError(f"{kind} needs the baseline's seeds (>= 2) or its summary (mean, sd, n)")
    if kind == "paired" and not (ref.kind == "seeds" and ref.n == len(vals)):
        raise StatsError("a paired test needs as many baseline seeds as new seeds, in seed order")
    m = margin.in_unit(unit, ratio)
    new_arr, ref_arr = np.asarray(vals), np.asarray(ref.values)
    t, df, se, improvement = core_statistic(kind, new_arr, ref.kind, ref_arr, ref.n, m)
    if not math.isfinite(t):
        raise StatsError("zero spread in every sample: the t statistic is undefined (copied runs?)")
    p = p_value(t, df, alternative)
    if alternative == "two-sided":
        q = float(sps.t.ppf(0.5 + confidence / 2, df))
        ci = (improvement - q * se, improvement + q * se)
    else:
        ci = (improvement - float(sps.t.ppf(confidence, df)) * se, math.inf)
    warnings = []
    if len(vals) < 3:
        warnings.append(f"only {len(vals)} new seeds: 3 are expected for a record")
    if ref.kind == "seeds" and ref.n == 2 and kind != "one_sample":
        warnings.append("only 2 baseline seeds")
    return TestResult(
        test=kind,
        label=test_label(kind, ref.kind),
        alternative=alternative,
        unit=unit,
        margin=m,
        margin_text=margin.describe(unit, ratio),
        t=t,
        df=df,
        p=p,
        improvement=improvement,
        ci_low=ci[0],
        ci_high=ci[1],
        cohen_d=_cohen_d(kind, new_arr, ref, improvement - m),
        n_new=len(vals),
        n_ref=ref.n,
        reference=ref.describe(),
        confidence=confidence,
        warnings=tuple(warnings),
    )


def _cohen_d(kind: str, new: np.ndarray, ref: Reference, contrast: float) -> float:
    sd_new = float(new.std(ddof=1))
    if kind == "one_sample":
        sd = sd_new
    elif kind == "paired":
        sd = float((np.asarray(ref.values) - new).std(ddof=1))
    else:
        sd_ref = float(np.std(ref.values, ddof=1)) if ref.kind == "seeds" else ref.values[1]
        nn, nr = len(new), ref.n
        sd = math.sqrt(((nn - 1) * sd_new**2 + (nr - 1) * sd_ref**2) / (nn + nr - 2))
    return contrast / sd if sd > 0 else float("nan")


# --- the two verdicts -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleVerdict:
    """The outcome of one acceptance rule (written or progression) on a candidate's seeds; not the
    auditor's per-folder `audit.verdict.Verdict`."""

    rule: str  # "written" | "progression"
    title: str
    passed: bool | None  # None: undecided (refused), see `reason`
    reason: str
    alpha: float
    test: TestResult | None = None
    required_improvement: str = ""  # e.g. "0.005 nats"
    improvement_text: str = ""  # e.g. "0.0296 bpb = 0.0500 nats"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "passed": self.passed,
            "reason": self.reason,
            "alpha": self.alpha,
            "required_improvement": self.required_improvement,
            "improvement": self.improvement_text,
            "test": self.test.to_dict() if self.test else None,
        }


def default_test(ref: Reference) -> str:
    """Welch whenever the baseline has a spread; one-sample against a single value otherwise."""
    return "welch" if ref.has_spread else "one_sample"


def written_rule(
    new: Sequence[float],
    ref: Reference,
    *,
    unit: str = "bpb",
    ratio: float | None = None,
    margin: Margin = WRITTEN_MARGIN,
    alpha: float = WRITTEN_ALPHA,
) -> RuleVerdict:
    """README rule: improvement >= 0.005 nats and p < 0.01 with the margin inside H0."""
    title = f"written rule (improvement >= {margin.value:g} {margin.unit}, p < {alpha:g} with the margin)"
    required = f"{margin.value:g} {margin.unit}"
    try:
        test = run_test(default_test(ref), new, ref, unit=unit, margin=margin, ratio=ratio)
    except StatsError as e:
        return RuleVerdict("written", title, None, str(e), alpha, required_improvement=required)
    gain = test.improvement
    gain_in_margin_unit = gain if margin.unit == unit else Margin(gain, unit).in_unit(margin.unit, ratio)
    text = f"{gain:.5f} {unit}" + (f" = {gain_in_margin_unit:.5f} {margin.unit}" if margin.unit != unit else "")
    big_enough = gain_in_margin_unit >= margin.value - 1e-12
    significant = test.p < alpha
    if big_enough and significant:
        reason = f"improvement {text} >= {required} and p={test.p:.3g} < {alpha:g}"
    elif not big_enough:
        reason = f"improvement {text} is below the required {required}"
    else:
        reason = f"p={test.p:.3g} is not below {alpha:g} with the {required} margin"
    return RuleVerdict("written", title, big_enough and significant, reason, alpha, test, required, text)


def progression_rule(
    new: Sequence[float], ref: Reference, *, unit: str = "bpb", alpha: float = PROGRESSION_ALPHA
) -> RuleVerdict:
    """Rule in force since PR #1902: one-sided Welch vs the previous frontier row, no margin."""
    title = f"progression rule (one-sided Welch vs the previous row, no margin, p < {alpha:g})"
    try:
        test = run_test(default_test(ref), new, ref, unit=unit, margin=NO_MARGIN)
    except StatsError as e:
        return RuleVerdict("progression", title, None, str(e), alpha, required_improvement="0")
    passed = test.p < alpha
    reason = f"p={test.p:.3g} {'<' if passed else '>='} {alpha:g}"
    if not ref.has_spread:
        reason += " (one-sample: the previous row's seeds were not given)"
    text = f"{test.improvement:.5f} {unit}"
    return RuleVerdict("progression", title, passed, reason, alpha, test, "0", text)
