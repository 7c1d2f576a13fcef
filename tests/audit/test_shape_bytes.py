"""Byte denominators: a bpb formed from a constant bytes-per-token, an evaluation over a constant number of
batches (PG107), and the direction of the logged implied-bytes deviation (PG231 / PG232)."""

from __future__ import annotations

import math

import pytest

from audit.analysis import bytetables as bytelut
from audit.analysis.config import Config
from audit.analysis.program import Program
from audit.analysis.valueflow import ValFlow
from audit.engine import audit_submission
from audit.findings import Severity
from audit.load.folder import Folder
from audit.load.resolve import resolve
from audit.load.runcmd import effective_env
from tests.audit.test_claims import check_claims, make_sub, ratio_loss, run_log
from tests.support import make_submission


def _sub(code: str, readme: str = "") -> Folder:
    files = {"train_gpt.py": code}
    if readme:
        files["README.md"] = readme
    return make_submission(files, dedent=True)


def _facts(code: str, readme: str = "") -> bytelut.ByteAccounting:
    sub = _sub(code, readme)
    env, _ = effective_env(sub.readme_text)
    program = Program.build(list(resolve(sub).sources), Config(env=env))
    return bytelut.byte_accounting(program, ValFlow(program))


def _pg107(code: str, readme: str = "") -> list[tuple[str, str]]:
    rep = audit_submission(_sub(code, readme), select={"PG107"})
    return [(f.severity.value, f.message) for f in rep.findings if f.rule.startswith("PG107")]


# --- constant bytes per token ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr,bpt",
    [
        ("loss / (math.log(2) * 3.5)", 3.5),
        ("loss / math.log(2.0) / 3.5", 3.5),
        ("loss * 1.4427 / 3.5", 3.5),  # 1 / ln 2 written out
        ("loss / LN2 * (1 / 3.7)", 3.7),  # a module constant bound to math.log(2)
        ("loss / (np.log(2) * BPT)", 2.9),  # a config default
        ("nll_sum / n_tokens / (math.log(2) * 3.5)", 3.5),  # a mean written in the same expression
    ],
)
def test_constant_denominator_shapes(expr, bpt):
    code = f"""
        import math, os
        import numpy as np
        LN2 = math.log(2)
        BPT = float(os.environ.get("BPT", "2.9"))
        def score(model, val_tokens):
            loss = model(val_tokens).mean().item()
            nll_sum, n_tokens = model(val_tokens), val_tokens.numel()
            return {expr}
        print(score(None, None))
    """
    found = _facts(code).constant_denominators
    assert [round(d.bytes_per_token, 3) for d in found] == [bpt]
    assert found[0].from_val


def test_constant_reached_through_local_names():
    code = """
        import math
        TOKENS_PER_BYTE = 1 / 3.5
        def score(model, val_tokens):
            loss = model(val_tokens).mean().item()
            bits = loss / math.log(2)
            per_byte = TOKENS_PER_BYTE
            return bits * per_byte
        print(score(None, None))
    """
    found = _facts(code).constant_denominators
    assert len(found) == 1 and abs(found[0].bytes_per_token - 3.5) < 1e-9


@pytest.mark.parametrize(
    "expr",
    [
        "loss / math.log(2)",  # byte-level: bits per token are bits per byte
        "nll_sum / (math.log(2) * n_bytes)",  # the bytes are counted
        "loss / math.log(2) * (n_tokens / n_bytes)",  # the baseline's tokens-per-byte
        "nll_sum / n_tokens / (math.log(2) * 8)",  # an integer next to a mean: a rank count, not bytes
        "loss / math.log(2) * 100",  # a percentage
        "loss / (3.5 * 2)",  # no ln 2: not a bits conversion
    ],
)
def test_counted_or_unrelated_denominators_are_not_constant_bpb(expr):
    code = f"""
        import math
        def score(model, val_tokens):
            loss = model(val_tokens).mean().item()
            nll_sum, n_tokens, n_bytes = model(val_tokens), val_tokens.numel(), count(val_tokens)
            return {expr}
        print(score(None, None))
    """
    assert _facts(code).constant_denominators == []


def test_constant_bpb_severity_follows_the_loss_and_the_family():
    on_val = """
        import math
        def final_eval(model, val_tokens):
            return model(val_tokens).item() / (math.log(2) * 3.5)
        print(final_eval(None, None))
    """
    assert [s for s, _ in _pg107(on_val)] == ["error"]
    # the full-split average of a family: right only if that whole split is scored
    family = on_val.replace("3.5", repr(151_080_000 / 62_021_632))
    [(sev, msg)] = _pg107(family)
    assert sev == "warning" and "sp1024 full-split average" in msg
    # not traced to validation data: needs a human when nothing counts bytes, info next to a byte scorer
    untraced = """
        import math
        def estimate(x):
            return x / (math.log(2) * 3.5)
        print(estimate(2.0))
    """
    assert [s for s, _ in _pg107(untraced)] == ["warning"]
    with_scorer = untraced.replace(
        "print(estimate(2.0))",
        "def nbytes(base, space, boundary, x, y):\n"
        "            tb = base[y]\n"
        "            tb += space[y] & ~boundary[x]\n"
        "            return tb.sum()\n"
        "        print(estimate(2.0), nbytes(None, None, None, None, None))",
    )
    assert [s for s, _ in _pg107(with_scorer)] == ["info"]


def test_constant_bpb_behind_an_off_switch_is_info():
    code = """
        import math, os
        APPROX_BPB = int(os.environ.get("APPROX_BPB", "0"))
        def final_eval(model, val_tokens):
            loss = model(val_tokens).item()
            if APPROX_BPB:
                return loss / (math.log(2) * 3.5)
            return loss
        print(final_eval(None, None))
    """
    assert [s for s, _ in _pg107(code)] == ["info"]


# --- a constant number of batches -----------------------------------------------------------------------
FIXED = """
    import math
    import numpy as np
    def judge(model, nbytes_lut):
        data = np.memmap("./data/fineweb_val_000000.bin", dtype=np.uint16, mode="r")
        nll, nbytes = 0.0, 0.0
        for i in range({bounds}):
            start = i * {stride}
            rows = np.stack([data[start + j * 1024 : start + (j + 1) * 1024 + 1] for j in range(16)])
            nll += float(model(rows))
            nbytes += float(nbytes_lut[rows[:, 1:]].sum())
        return nll / math.log(2) / nbytes
    print(judge(None, None))
"""


def test_fixed_batches_coverage_is_computed_through_locals_and_comprehensions():
    [lp] = _facts(FIXED.format(bounds="50", stride="16 * 1024")).fixed_eval_loops
    assert (lp.batches, lp.tokens) == (50, 50 * 16 * 1024)
    [(sev, msg)] = _pg107(FIXED.format(bounds="50", stride="16 * 1024"))
    assert sev == "error" and "constant 50 batches (819,200 tokens at most)" in msg


def test_fixed_batches_covering_the_split_are_not_a_subset():
    # a constant bound that reaches past every full split (the loop ends with the data) is the whole split
    assert _facts(FIXED.format(bounds="4000", stride="16 * 1024")).fixed_eval_loops == []
    assert _facts(FIXED.format(bounds="0, 62_021_632, 16 * 1024", stride="1")).fixed_eval_loops == []


def test_fixed_batch_count_from_a_run_command():
    code = FIXED.format(bounds="int(os.environ.get('EVAL_BATCHES', '0'))", stride="16 * 1024").replace(
        "import math\n", "import math, os\n", 1
    )
    assert _facts(code).fixed_eval_loops == []  # the default evaluates nothing with this loop
    readme = "```bash\nEVAL_BATCHES=100 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    [lp] = _facts(code, readme).fixed_eval_loops
    assert lp.batches == 100


def test_loader_cap_count_is_found_by_folding_the_guard():
    code = """
        import math
        def evaluate(model, val_loader, luts, cap=25):
            nll, nbytes = 0.0, 0.0
            for step, (x, y) in enumerate(val_loader):
                if step + 1 > cap:
                    break
                nll += model(x, y).sum()
                nbytes += luts[y].sum()
            return nll / math.log(2) / nbytes
        print(evaluate(None, load("fineweb_val_*.bin"), None))
    """
    [lp] = _facts(code).fixed_eval_loops
    assert lp.batches == 25 and lp.tokens is None
    assert [s for s, _ in _pg107(code)] == ["warning"]


def test_training_windows_and_unscored_statistics_are_not_eval_loops():
    code = """
        import math
        def train(model, train_tokens, steps=20):
            total = 0.0
            for i in range(steps):
                total += model(train_tokens[i * 1024 : (i + 1) * 1024 + 1])
            return total / math.log(2)
        def val_stats(val_tokens):
            counts = 0
            for i in range(20):
                counts += val_tokens[i * 1024 : (i + 1) * 1024].sum()
            return counts
        print(train(None, None), val_stats(None))
    """
    assert _facts(code).fixed_eval_loops == []


# --- the logged implied bytes: the direction decides --------------------------------------------------------
def _integrity(tokens: int, split_bytes: float, name: str = "records/track_10min_16mb/x"):
    logs = {"train.log": run_log(1, "1.15000000", loss=ratio_loss(1.15, tokens, split_bytes), tokens=tokens)}
    rep = check_claims(make_sub(logs, {"val_bpb": 1.15}, name=name))
    return [(f.rule, f.severity, f.category) for f in rep.findings if f.rule[:5] in ("PG230", "PG231", "PG232")]


def test_overcount_with_an_unknown_token_count_is_a_byte_bug():
    # a custom tokenizer's own token count, 21 % more bytes than the split holds
    assert _integrity(62_363_648, 151_080_000 * 1.21) == [
        ("PG231/byte-accounting", Severity.ERROR, "tokenizer_bpb_bug")
    ]


def test_overcount_with_fewer_tokens_is_still_a_byte_bug():
    assert _integrity(49_999_872, 151_080_000 * 1.31) == [
        ("PG231/byte-accounting", Severity.ERROR, "tokenizer_bpb_bug")
    ]


def test_fewer_bytes_from_more_tokens_than_a_family_is_another_split():
    assert _integrity(52_000_000, 151_080_000 * 0.9) == [("PG232/val-split-mismatch", Severity.ERROR, "other")]


def test_small_drift_and_the_launch_day_export_are_not_flagged():
    assert _integrity(62_363_648, 151_080_000 * 1.003) == []
    rep = check_claims(
        make_sub(
            {"train.log": run_log(1, "1.15000000", loss=ratio_loss(1.15, 63_779_840, 155_770_000), tokens=63_779_840)},
            {"val_bpb": 1.15},
        )
    )
    drift = [f for f in rep.findings if f.rule == "PG233/val-bytes-drift"]
    assert drift and drift[0].severity is Severity.INFO and drift[0].category is None


def test_implied_bytes_formula():
    # val_tokens x val_loss / val_bpb / ln 2 = bytes: the helper the cases above rely on
    loss = float(ratio_loss(1.15, 62_363_648, 182_811_000))
    assert abs(62_363_648 * loss / 1.15 / math.log(2) - 182_811_000) < 200


def test_whole_number_constant_needs_a_human():
    code = """
        import math
        def final_eval(model, val_tokens):
            first, second = model(val_tokens).item(), model(val_tokens).item()
            return (first + second) / 2 / math.log(2)
        print(final_eval(None, None))
    """
    [(sev, msg)] = _pg107(code)
    assert sev == "warning" and "whole number" in msg


def test_constant_denominator_at_module_level_and_beside_functions_without_ln2():
    """Products are read only where a factor can be ln 2 (a candidate in the function, or a module constant
    bound to it); one written at module level is read, and a function without ln 2 does not hide it."""
    code = """
        import math
        def helper(x):
            return x / 3.5 * 2.0
        loss = helper(1.0)
        print(loss / (math.log(2) * 3.5))
    """
    found = _facts(code).constant_denominators
    assert [round(d.bytes_per_token, 3) for d in found] == [3.5]


def test_every_sidecar_name_holds_a_word_of_the_text_prefilter():
    """A source is searched for sidecar names only when its text holds one of the words: each alternative of the
    pattern must hold one, or a source using it would be skipped."""
    for alternative in bytelut.SIDECAR_NAME.pattern.split("|"):
        assert any(w in alternative.lower() for w in bytelut._SIDECAR_WORDS), alternative
