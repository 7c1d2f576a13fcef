"""verify.stats (core, claims, report): corpus claims, scipy agreement, conversions, refusals."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from verify.stats.claims import (
    check_claim,
    check_conversion,
    parse_case,
    parse_claim,
    parse_margin,
)
from verify.stats.core import (
    NO_MARGIN,
    TOKENIZER_RATIOS,
    Margin,
    Reference,
    StatsError,
    Summary,
    decimals_of,
    progression_rule,
    ratio_of,
    require_comparable,
    run_test,
    to_bpb,
    to_nats,
    written_rule,
)
from verify.stats.report import compare

# The numbers of the corpus file dev_stats_cases.tsv (statistical facts, copied as a table):
# case, new seeds, unit, baseline, margin, claim, reproduced_by, our_value, agrees
CASES = [
    (
        "LB_2135_vs_2014",
        "1.05679341;1.05662016;1.05610947",
        "bpb",
        "seeds:1.05807084;1.05730104;1.05740567",
        "0",
        "p=0.014 vs PR #2014",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=3.426 df=3.90 p=0.0138",
        "yes",
    ),
    (
        "LBchain_1626_vs_1610",
        "1.07134229;1.07163775;1.07280131",
        "bpb",
        "seeds:1.07216564;1.07300174;1.07325147",
        "0",
        "p<0.25 (implied)",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=1.589 df=3.68 p=0.0967",
        "yes",
    ),
    (
        "PR1130_nats",
        "1.11392722;1.1130235;1.11429271;1.11347537;1.11465746;1.11386428;1.11445313;"
        "1.11387425;1.11431956;1.11452359;1.11393815;1.11344915",
        "bpb",
        "1.1194",
        "0.005 nats (=0.00296 bpb)",
        "one-sample vs 0.005 nats: t=-17.26 df=11 p<0.0001",
        "one-sample vs constant, one-sided; unit=bpb; margin=0.005 nats (=0.00296 bpb)",
        "t=17.26 df=11.00 p=1.29e-09",
        "yes",
    ),
    (
        "PR1914",
        "1.061;1.06032;1.06236",
        "bpb",
        "seeds:1.06208795;1.06082659;1.06180824",
        "0",
        "Welch t=-0.49 df~4 one-sided p~0.32",
        "Student pooled two-sample, one-sided; unit=bpb; margin=0",
        "t=0.4887 df=4.00 p=0.325",
        "yes",
    ),
    (
        "PR1219",
        "1.87802;1.87821;1.8791",
        "nats",
        "seeds:1.88976776;1.8891919;1.89110239",
        "0",
        "Welch t=-17.63 df~3.24 vs PR549 (nats)",
        "Welch two-sample, one-sided; unit=nats; margin=0",
        "t=17.64 df=3.24 p=0.000125",
        "yes",
    ),
    (
        "LBchain_1667_vs_1626",
        "1.07139175;1.07057187;1.07220821",
        "bpb",
        "seeds:1.07134229;1.07163775;1.07280131",
        "0",
        "p<0.25 (implied)",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=0.8264 df=3.99 p=0.228",
        "yes",
    ),
    (
        "PR1372",
        "1.00407045;1.00648098;1.00437287",
        "bpb",
        "seeds:1.1150812;1.11437394;1.11475014",
        "0",
        "Welch t=-139.79 df=2.29",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=139.8 df=2.29 p=7.51e-06",
        "yes",
    ),
    (
        "M_Int6MLP3x_SmearGate",
        "1.14597222;1.14656085;1.1449177",
        "bpb",
        "seeds:1.17558517;1.17423973;1.17443456",
        "0.005 nats (=0.00296 bpb)",
        "p<0.001 vs SOTA 1.1748",
        "Welch two-sample, one-sided; unit=bpb; margin=0.005 nats (=0.00296 bpb)",
        "t=40.7 df=3.93 p=1.31e-06",
        "yes",
    ),
    (
        "PR1395",
        "1.09269085;1.09269834;1.0919412",
        "bpb",
        "seeds:1.1150812;1.11437394;1.11475014",
        "0",
        "Welch t=-68.85 df=3.84",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=68.85 df=3.84 p=2.20e-07",
        "yes",
    ),
    (
        "PR1967",
        "1.05886205;1.05903968;1.05764263",
        "bpb",
        "summary:mean=1.060755,sd=0.000933,n=6",
        "0",
        "Welch t=3.850 df=5.00 one-sided p~0.0060",
        "Welch two-sample from summary stats, one-sided; unit=bpb; margin=0",
        "t=3.854 df=5.01 p=0.00596",
        "yes",
    ),
    (
        "PR1105_prior",
        "1.8798;1.88;1.882",
        "nats",
        "seeds:1.88976776;1.8891919;1.89110239",
        "0",
        "Delta -0.00943 nats, Welch t=-10.26 df=3.78",
        "Welch two-sample, one-sided; unit=nats; margin=0 (rounded-input range t in [4.77, 12.6])",
        "t=10.44 df=3.83 p=0.000298",
        "yes",
    ),
    (
        "LBchain_1729_vs_1667",
        "1.0680582;1.06727867;1.06806595",
        "bpb",
        "seeds:1.07139175;1.07057187;1.07220821",
        "0",
        "p<0.25 (implied)",
        "Welch two-sample, one-sided; unit=bpb; margin=0",
        "t=6.651 df=3.12 p=0.00307",
        "yes",
    ),
    (
        "PR194",
        "1.14534973;1.14976191;1.14896214",
        "bpb",
        "1.1748",
        "0.005 bpb",
        "t=16.04 (df=2), p<0.001",
        "one-sample vs constant, one-sided; unit=bpb; margin=0.005 bpb (reproduces the stated t but "
        "not every other stated number)",
        "t=16.04 df=2.00 p=0.00193",
        "no",
    ),
    (
        "PR274",
        "1.14173591;1.13923361;1.14000458",
        "bpb",
        "1.1428",
        "0",
        "one-sided t=3.11 df=2 p=0.045",
        "not reproduced; closest: one-sample vs constant, one-sided; unit=bpb; margin=0",
        "t=3.346 df=2.00 p=0.0395",
        "no",
    ),
    (
        "PR1812",
        "1.07272475;1.07303003;1.07295259",
        "bpb",
        "summary:mean=1.081,sd=0.0002,n=3",
        "0",
        "Welch t=-54.93 df=3.80 one-sided p<1e-7",
        "Welch two-sample from summary stats, one-sided; unit=bpb; margin=0 (reproduces the stated t "
        "but not every other stated number)",
        "t=54.93 df=3.80 p=5.86e-07",
        "no",
    ),
]
COLUMNS = (
    "case",
    "new_seed_values",
    "unit",
    "baseline",
    "margin",
    "claimed_stat",
    "reproduced_by",
    "our_value",
    "agrees",
)
LABEL_TO_KIND = {
    "Welch two-sample": "welch",
    "Welch two-sample from summary stats": "welch",
    "Student pooled two-sample": "student",
    "one-sample vs constant": "one_sample",
}
NOTE = re.compile(r" \((?:reproduces|rounded-input)[^)]*\)$")
RANGE = re.compile(r" \(rounded-input range t in \[([\d.]+), ([\d.]+)\]\)$")


def _case(row: tuple[str, ...]):
    return parse_case(dict(zip(COLUMNS, row)))


@pytest.mark.parametrize("row", CASES, ids=[c[0] for c in CASES])
def test_corpus_case_named_test_reproduces_our_value(row):
    case = _case(row)
    described = NOTE.sub("", row[6].removeprefix("not reproduced; closest: "))
    label, sided = described.split(";")[0].split(", ")
    result = run_test(
        LABEL_TO_KIND[label],
        case.new,
        case.reference,
        unit=case.unit,
        margin=case.margin,
        ratio=case.ratio,
        alternative="less" if sided == "one-sided" else "two-sided",
    )
    assert result.describe() == described
    assert result.brief() == row[7]


@pytest.mark.parametrize("row", CASES, ids=[c[0] for c in CASES])
def test_corpus_case_claim_verdict(row):
    check = _case(row).check()
    assert ("yes" if check.agrees else "no") == row[8]
    assert check.result.brief() == row[7]
    want = row[6]
    m = RANGE.search(want)
    if m:  # the range is an optimisation result: ours must be at least as wide, and close
        got = RANGE.search(check.reproduced_by)
        assert got, check.reproduced_by
        lo, hi = float(got.group(1)), float(got.group(2))
        assert lo <= float(m.group(1)) * 1.001 and hi >= float(m.group(2)) * 0.999
        assert lo > float(m.group(1)) * 0.9 and hi < float(m.group(2)) * 1.1
        want, got_label = want[: m.start()], check.reproduced_by[: got.start()]
    else:
        got_label = check.reproduced_by
    assert got_label == want


def test_false_inequality_is_named():
    check = _case(CASES[12]).check()  # PR194: t and df right, p<0.001 false
    assert [n.status for n in check.numbers] == ["reproduced", "reproduced", "not reproduced"]
    assert any("p<0.001 is false" in f and "0.00193" in f for f in check.findings)


def test_claim_words_disagreeing_with_numbers_are_reported():
    check = _case(CASES[3]).check()  # PR1914 says Welch; Student reproduces
    assert check.result.test == "student"
    assert any("names a welch test" in f for f in check.findings)


def test_default_margins_find_the_bpb_margin_mistake():
    case = _case(CASES[12])
    check = check_claim(case.claim, case.new, case.reference, unit="bpb", ratio=TOKENIZER_RATIOS["sp1024"])
    assert check.result.margin_text == "0.005 bpb"
    assert check.result.brief() == "t=16.04 df=2.00 p=0.00193"


def test_rounded_inputs_cannot_rescue_a_claim_its_own_t_contradicts():
    # t and df reproduce at the printed inputs; rounding could move p, but not with t and df fixed.
    check = _case(CASES[14]).check()
    assert not check.reproduced and not check.agrees


def test_two_sided_claim_picks_two_sided_test():
    new = [1.1417, 1.1392, 1.1400]
    ref = Reference.constant(1.1428)
    two = run_test("one_sample", new, ref, alternative="two-sided")
    check = check_claim(f"two-sided t={two.t:.3f} df=2 p={two.p:.4f}", new, ref, margins=[NO_MARGIN])
    assert check.agrees and check.result.alternative == "two-sided"


def test_paired_claim_is_recognised_when_named():
    new, old = [1.100, 1.104, 1.101], [1.106, 1.108, 1.104]
    d = np.array(old) - np.array(new)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    check = check_claim(f"paired t={t:.3f} df=2", new, Reference.seeds(old), margins=[NO_MARGIN])
    assert check.agrees and check.result.test == "paired"


# --- parsing ---------------------------------------------------------------------------------------
def test_parse_claim_forms():
    c = parse_claim("Welch t(3.31) = −11.83, p ≤ 1e-7, Δ=0.0028 bpb, one-sided")
    got = {(n.name, n.op, n.value) for n in c.numbers}
    assert ("t", "=", -11.83) in got and ("df", "=", 3.31) in got
    assert ("p", "<=", 1e-7) in got and ("delta", "=", 0.0028) in got
    assert c.test_hint == "welch" and c.sided == "less"
    c = parse_claim("t-stat: 3.4, dof ≈ 3.9, p-value 0.014")
    assert {(n.name, n.op) for n in c.numbers} == {("t", "="), ("df", "~")} | (
        {("p", "=")} if any(n.name == "p" for n in c.numbers) else set()
    )
    with pytest.raises(StatsError):
        parse_claim("beats the SOTA by a lot")


def test_parse_margin_and_implied_ratio():
    assert parse_margin("0") == (NO_MARGIN, None)
    assert parse_margin("0.005 bpb") == (Margin(0.005, "bpb"), None)
    margin, ratio = parse_margin("0.005 nats (=0.00296 bpb)")
    assert margin == Margin(0.005, "nats") and ratio == TOKENIZER_RATIOS["sp1024"]
    margin, ratio = parse_margin("0.005 nats (=0.00228 bpb)")
    assert ratio == TOKENIZER_RATIOS["sp8192-caseops"]
    with pytest.raises(StatsError):
        parse_margin("some")


@pytest.mark.parametrize(
    "text,places", [("1.88", 2), ("1.8798", 4), ("1", 0), ("1e-05", 5), ("2.5e-3", 4), ("−0.00943", 5), (1.22436570, 7)]
)
def test_decimals_of(text, places):
    assert decimals_of(text) == places


# --- conversion, hand-computed ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "tok,margin_bpb",
    [
        ("sp1024", 0.002961),
        ("sp4096", 0.002173),
        ("sp8192", 0.001936),
        ("sp8192-caseops", 0.002285),
        ("byte", 0.007213),
    ],
)
def test_written_margin_in_bpb_per_tokenizer(tok, margin_bpb):
    # docs/stats.md (nats ↔ bpb): 0.005 nats / r
    assert Margin(0.005, "nats").in_unit("bpb", TOKENIZER_RATIOS[tok]) == pytest.approx(margin_bpb, abs=5e-7)


def test_conversion_by_hand():
    # val_loss 2.07269931 / val_bpb 1.22436570 = 1.69288... (the naive-baseline val set)
    assert ratio_of(2.07269931, 1.22436570) == pytest.approx(1.692876, abs=1e-6)
    assert to_nats(0.00283, 2.583104) == pytest.approx(0.00731, abs=5e-6)  # "0.00283 bpb = 0.00731 nats"
    assert to_bpb(0.005, 1.688458) == pytest.approx(0.0029613, abs=1e-7)
    assert Margin(0.003, "bpb").in_unit("nats", 2.0) == pytest.approx(0.006)
    assert Margin(0.005, "nats").in_unit("nats", None) == 0.005
    assert TOKENIZER_RATIOS["byte"] == pytest.approx(0.693147, abs=1e-6)
    with pytest.raises(StatsError):
        Margin(0.005, "nats").in_unit("bpb", None)
    with pytest.raises(StatsError):
        ratio_of(2.0, 0.0)


@pytest.mark.parametrize(
    "bpb,nats,ratio,correct,word",
    [
        ("0.00224", "0.00488", 2.188371, True, "correct"),
        ("0.0223", "0.0155", 2.188371, False, "ln 2"),
        ("0.00070", "0.00181", 2.188371, False, "sp8192"),
        ("0.011042", "0.011042", 2.583104, False, "labelled as nats"),
        ("0.0223", "0.0155", None, False, "ln 2"),
    ],
)
def test_conversion_diagnosis(bpb, nats, ratio, correct, word):
    c = check_conversion(bpb, nats, ratio)
    assert c.correct is correct and word in c.diagnosis


def test_conversion_error_in_a_claim_makes_it_disagree():
    new, ref = [1.0800, 1.0805, 1.0795], Reference.seeds([1.1023, 1.1020, 1.1027])
    assert check_claim("Δ -0.0223 BPB = -0.0489 nats", new, ref, ratio=2.188371).agrees
    bad = check_claim("Δ -0.0223 BPB = -0.0155 nats", new, ref, ratio=2.188371)
    assert not bad.agrees and any("ln 2" in f for f in bad.findings)


def test_cross_tokenizer_nats_refused():
    with pytest.raises(StatsError, match="across tokenizers"):
        require_comparable("nats", "sp8192", "sp1024")
    require_comparable("bpb", "sp8192", "sp1024")
    require_comparable("nats", "sp1024", "sp1024")


# --- against scipy on random inputs ----------------------------------------------------------------
samples = st.lists(st.floats(0.9, 1.3, allow_nan=False), min_size=2, max_size=8).filter(lambda xs: np.std(xs) > 1e-6)
margins = st.sampled_from([0.0, 0.001, 0.003])


@settings(max_examples=60, deadline=None)
@given(samples, samples, margins, st.booleans())
def test_two_sample_matches_scipy(new, old, margin, welch):
    res = run_test("welch" if welch else "student", new, Reference.seeds(old), margin=Margin(margin, "bpb"))
    ref = sps.ttest_ind(np.array(old) - margin, new, equal_var=not welch, alternative="greater")
    assert res.t == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    assert res.df == pytest.approx(ref.df, rel=1e-9)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    if margin == 0:  # the spec's recipe for the progression rule gives -T
        less = sps.ttest_ind(new, old, equal_var=not welch, alternative="less")
        assert res.p == pytest.approx(less.pvalue, rel=1e-7, abs=1e-12)
    two = run_test("welch" if welch else "student", new, Reference.seeds(old), alternative="two-sided")
    assert two.p == pytest.approx(sps.ttest_ind(new, old, equal_var=not welch).pvalue, rel=1e-7, abs=1e-12)
    ci = sps.ttest_ind(old, new, equal_var=not welch, alternative="greater").confidence_interval(0.95)
    assert two.improvement == pytest.approx(np.mean(old) - np.mean(new))
    assert res.ci_low + 0 == pytest.approx(ci.low, rel=1e-7, abs=1e-10) and math.isinf(res.ci_high)


@settings(max_examples=60, deadline=None)
@given(samples, st.floats(0.9, 1.3), margins)
def test_one_sample_matches_scipy(new, sota, margin):
    res = run_test("one_sample", new, Reference.constant(sota), margin=Margin(margin, "bpb"))
    ref = sps.ttest_1samp(new, sota - margin, alternative="less")
    assert res.t == pytest.approx(-ref.statistic, rel=1e-9, abs=1e-9)
    assert res.df == len(new) - 1
    assert res.p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(samples, st.floats(0.9, 1.3), st.floats(1e-4, 1e-2), st.integers(2, 12), margins)
def test_summary_welch_matches_scipy(new, mean, sd, n, margin):
    res = run_test("welch", new, Reference.summary(mean, sd, n), margin=Margin(margin, "bpb"))
    ref = sps.ttest_ind_from_stats(
        mean - margin, sd, n, np.mean(new), np.std(new, ddof=1), len(new), equal_var=False, alternative="greater"
    )
    assert res.t == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(samples)
def test_summary_matches_scipy(values):
    s = Summary.of(values)
    ci = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert s.sd == pytest.approx(np.std(values, ddof=1))
    assert s.se == pytest.approx(sps.sem(values))
    assert (s.ci_low, s.ci_high) == pytest.approx(ci)


@settings(max_examples=25, deadline=None)
@given(samples, samples)
def test_claim_built_from_our_numbers_is_reproduced(new, old):
    res = run_test("welch", new, Reference.seeds(old))
    check = check_claim(
        f"Welch t={res.t:.3f} df={res.df:.2f} p={res.p:.3g}", new, Reference.seeds(old), margins=[NO_MARGIN]
    )
    assert check.agrees and check.result.test == "welch"


# --- verdicts and refusals -------------------------------------------------------------------------
def test_progression_passes_where_written_rule_fails():
    new = [1.05679341, 1.05662016, 1.05610947]
    ref = Reference.seeds([1.05807084, 1.05730104, 1.05740567])
    w = written_rule(new, ref, ratio=TOKENIZER_RATIOS["sp8192-caseops"])
    p = progression_rule(new, ref)
    assert p.passed is True and p.test.p == pytest.approx(0.0138, abs=5e-5)
    assert w.passed is False and "below the required 0.005 nats" in w.reason
    assert w.test.margin == pytest.approx(0.005 / TOKENIZER_RATIOS["sp8192-caseops"])


def test_written_rule_passes_with_a_large_improvement():
    new, old = [1.1460, 1.1466, 1.1449], [1.1756, 1.1742, 1.1744]
    w = written_rule(new, Reference.seeds(old), ratio=TOKENIZER_RATIOS["sp1024"])
    assert w.passed is True and w.test.p < 0.01


def test_written_rule_undecided_without_ratio():
    w = written_rule([1.14, 1.141, 1.142], Reference.constant(1.1748))
    assert w.passed is None and "needs r" in w.reason


def test_refuse_below_two_seeds_and_warn_below_three():
    with pytest.raises(StatsError, match="fewer than 2"):
        compare([1.1], sota=1.2)
    with pytest.raises(StatsError):
        run_test("one_sample", [1.1], Reference.constant(1.2))
    rep = compare([1.1, 1.11], sota=1.2, ratio=1.688458)
    assert any("only 2 new seeds" in w for w in rep.warnings)
    assert rep.written.test.warnings


def test_zero_spread_refused():
    with pytest.raises(StatsError, match="zero spread"):
        run_test("welch", [1.1, 1.1], Reference.seeds([1.2, 1.2]))


def test_single_baseline_run_falls_back_to_one_sample():
    rep = compare([1.10, 1.11, 1.105], baseline=[1.2], ratio=1.688458)
    assert rep.progression.test.test == "one_sample"
    assert any("single baseline run" in w for w in rep.warnings)


def test_compare_report_dict_and_markdown():
    rep = compare([1.1453, 1.1490, 1.1498], sota=1.1748, baseline=[1.17558517, 1.17423973, 1.17443456], ratio=1.688458)
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["schema_version"] == 1
    assert [t["role"] for t in d["tests"]] == ["written rule", "progression rule", "vs SOTA value"]
    assert d["verdicts"]["progression"]["passed"] is True
    md = rep.to_markdown()
    assert "| role | test | alternative |" in md and "**PASS**" in md
