"""Calibration analysis and the PG105 (val_calibration) / PG106 (train_data_at_eval) rules beyond their
built-in cases: config switches, reserves, hand-lowered caps, minified one-liners, log parsing, and (with
PGOLF_MIRROR) a few real records."""

from __future__ import annotations

import csv
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.analysis import calibration as cal
from audit.analysis.calibration import log_calibration
from audit.api import audit_git
from audit.engine import audit_submission
from audit.findings import Severity
from tests.support import CORPUS, make_submission

COLLECTOR = """
def hessians(model, loader, n):
    H = {}
    def hook(mod, inp, out):
        x = inp[0].flatten(0, 1)
        H[mod] = H.get(mod, 0) + x.T @ x
    for m in model.modules():
        m.register_forward_hook(hook)
    for _ in range(n):
        model(loader.next_batch())
    return H
"""

TRAIN_THEN_CALIBRATE = (
    """
import os
class Hyperparameters:
    train_files = "data/fineweb_train_*.bin"
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", "600"))
    reserve_ms = float(os.environ.get("GPTQ_RESERVE_MS", "RESERVE"))
"""
    + COLLECTOR
    + """
def main(model, opt, Loader, elapsed_ms):
    args = Hyperparameters()
    max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
    max_wallclock_ms -= args.reserve_ms
    loader = Loader(args.train_files)
    while True:
        model(loader.next_batch()).backward()
        opt.step()
        if elapsed_ms() >= max_wallclock_ms:
            break
    return hessians(model, Loader(args.train_files), 64)
main(None, None, None, None)
"""
)


def _findings(code: str, rule: str, readme: str = "", logs: dict[str, str] | None = None):
    sub = make_submission(
        {"train_gpt.py": code, **({"README.md": readme} if readme else {}), **(logs or {})}, dedent=True
    )
    return [f for f in audit_submission(sub, select={rule}).findings if f.rule.startswith(rule)]


def _switch_code(default: str) -> str:
    return (
        f"""
import os
class Hyperparameters:
    calib_source = os.environ.get("GPTQ_CALIB_SOURCE", "{default}")
    train_files = "data/fineweb_train_*.bin"
    val_files = "data/fineweb_val_*.bin"
"""
        + COLLECTOR
        + """
def main(model, Loader):
    args = Hyperparameters()
    loader = Loader(args.val_files if args.calib_source == "val" else args.train_files)
    return hessians(model, loader, 8)
main(None, None)
"""
    )


def test_readme_override_selects_validation_calibration():
    assert not [f for f in _findings(_switch_code("train"), "PG105") if f.severity is not Severity.INFO]
    readme = "```bash\nGPTQ_CALIB_SOURCE=val torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    found = _findings(_switch_code("train"), "PG105", readme=readme)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert any("val_files" in e.snippet for e in found[0].evidence)


def test_runtime_switch_is_a_warning():
    code = (
        "import sys\n"
        + COLLECTOR
        + """
def main(model, Loader, args):
    loader = Loader(args.val_files if sys.argv[1] == "val" else args.train_files)
    return hessians(model, loader, 8)
main(None, None, None)
"""
    )
    found = _findings(code, "PG105")
    assert [f.severity for f in found] == [Severity.WARNING]


def test_uncalled_collector_on_validation_is_not_reported():
    code = (
        COLLECTOR
        + """
def unused(model, Loader, args):
    return hessians(model, Loader(args.val_files), 8)
"""
    )
    assert all(f.severity is Severity.INFO for f in _findings(code, "PG105"))


def test_reserve_of_zero_is_no_reserve():
    assert _findings(TRAIN_THEN_CALIBRATE.replace("RESERVE", "12000"), "PG106") == []
    found = _findings(TRAIN_THEN_CALIBRATE.replace("RESERVE", "0"), "PG106")
    assert [f.severity for f in found] == [Severity.ERROR]


def test_rounded_zero_reserve_in_log_keeps_code_reserve():
    log = """
    gptq:reserving 0s, effective=599500ms
    stopping_early: wallclock_cap train_time:599512ms step:4000/20000
    gptq:calibrating with 64 batches (training data)...
    """
    assert _findings(TRAIN_THEN_CALIBRATE.replace("RESERVE", "500"), "PG106", logs={"train.log": log}) == []


def test_hand_lowered_cap_is_a_warning_unless_a_log_ran_to_600s():
    code = TRAIN_THEN_CALIBRATE.replace("RESERVE", "0")
    readme = "```bash\nMAX_WALLCLOCK_SECONDS=590 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    assert [f.severity for f in _findings(code, "PG106", readme=readme)] == [Severity.WARNING]
    log = """
    stopping_early: wallclock_cap train_time:600050ms step:6000/20000
    gptq:calibrating with 256 batches...
    """
    assert [f.severity for f in _findings(code, "PG106", readme=readme, logs={"a.log": log})] == [Severity.ERROR]


def test_minified_train_then_calibrate_on_one_line():
    code = (
        """
class H:
    train_files = "data/fineweb_train_*.bin"
    max_wallclock_seconds = 600.0
"""
        + COLLECTOR
        + """
def train_model(h, model, opt, loader, elapsed_ms):
    max_wallclock_ms = 1e3 * h.max_wallclock_seconds
    while True:
        model(loader.next_batch()).backward(); opt.step()
        if elapsed_ms() >= max_wallclock_ms: break
def run(h, model, opt, Loader, elapsed_ms):
    train_model(h, model, opt, Loader(h.train_files), elapsed_ms); hs = hessians(model, Loader(h.train_files), 64)
run(H(), None, None, None, None)
"""
    )
    found = _findings(code, "PG106")
    assert [f.severity for f in found] == [Severity.ERROR]
    assert any("train_model" in e.note for e in found[0].evidence)


def test_log_calibration_parsing():
    events = [
        ("a.log", 1, "gptq:reserving 12s, effective=588000ms"),
        ("a.log", 2, "stopping_early: wallclock_cap train_time:588011ms step:10/20"),
        ("a.log", 3, "gptq:calibrating with 64 batches (training data)..."),
        ("b.log", 1, "gptq:collecting hessians batches=64 source=val"),
        ("c.log", 1, "calibration: not on validation data"),
        ("d.log", 1, "stopping_early: wallclock_cap train_time:600000ms step:10/20"),
        ("d.log", 2, "gptq:collecting hessians from autoregressive data..."),
    ]
    by_path = {lc.path: lc for lc in log_calibration(events)}
    assert by_path["a.log"].reserve[2] == 12000.0
    assert by_path["a.log"].stop[2] == 588011.0
    assert [n for n, _ in by_path["a.log"].train_calib] == [3]
    assert [n for n, _ in by_path["b.log"].val_calib] == [1]
    assert by_path["c.log"].val_calib == []
    assert by_path["d.log"].calib_after_stop == []  # self-generated calibration is not a data read


# --- real records (read from the mirror at test time; nothing from them is committed) ---------------
LABELS = [CORPUS / "dev_labels.tsv", CORPUS / "merged.tsv"]


def _row(pr: str) -> dict:
    for path in LABELS:
        if os.path.exists(path):
            for row in csv.DictReader(open(path), delimiter="\t"):
                if row["pr"] == pr:
                    return row
    pytest.skip(f"row {pr} not in the labelled corpus")


@pytest.mark.parametrize(
    "pr,rule,want",
    [
        ("535", "PG106", Severity.ERROR),  # train shards after a 600 s loop, no reserve
        ("968", "PG105", Severity.ERROR),  # GPTQ_CALIB_SOURCE defaults to val
        ("1060", "PG106", None),  # merged: reserve subtracted from the budget
        ("1019", "PG105", None),  # merged: "ValCalib" folder, self-generated calibration
    ],
)
def test_real_records(mirror, pr, rule, want):
    row = _row(pr)
    rep = audit_git(mirror, row["ref_sha"], row["folder"], select={rule})
    sevs = {f.severity for f in rep.findings if f.rule.startswith(rule)}
    assert (want in sevs) if want else not (sevs - {Severity.INFO}), sevs


def test_hookless_collector_after_the_clock():
    code = """
import torch
class H:
    train_files = "data/fineweb_train_*.bin"
    max_wallclock_seconds = 600.0
def collect_layer_hessians(model, loader, n):
    model.eval()
    with torch.inference_mode():
        for _ in range(n):
            model(loader.next_batch())
            accumulate_saved_inputs(model)
    return model.saved
def main(model, opt, Loader, elapsed_ms):
    h = H()
    max_wallclock_ms = 1e3 * h.max_wallclock_seconds
    loader = Loader(h.train_files)
    while True:
        model(loader.next_batch()).backward()
        opt.step()
        if elapsed_ms() >= max_wallclock_ms:
            break
    return collect_layer_hessians(model, Loader(h.train_files), 32)
main(None, None, None, None)
"""
    assert [f.severity for f in _findings(code, "PG106")] == [Severity.ERROR]


# --- calibration behind a switch: every reaching definition, each branch's guard folded -----------------
GENERATOR = """
def sample_tokens(model, n):
    toks = torch.zeros(n, 1, dtype=torch.long)
    for _ in range(64):
        p = model(toks)[:, -1].softmax(-1)
        toks = torch.cat([toks, torch.multinomial(p, 1)], 1)
    return toks
"""


def _branch_code(switch_line: str, body: str) -> str:
    return "import os, sys, torch\n" + switch_line + "\n" + COLLECTOR + GENERATOR + body + "main(None, None)\n"


IF_ELSE = """
def main(model, val_tokens):
    if CALIB_VAL:
        data = val_tokens[:4096]
    else:
        data = sample_tokens(model, 16)
    return hessians(model, data, 8)
"""


@pytest.mark.parametrize(
    "default,readme,want",
    [
        ("1", "", [Severity.ERROR]),  # the validation branch is the default
        ("0", "", []),  # the self-generated branch is the default (the legal neighbour)
        ("0", "```bash\nCALIB_VAL=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n", [Severity.ERROR]),
    ],
)
def test_if_else_switch_folded_under_the_effective_config(default, readme, want):
    code = _branch_code(f'CALIB_VAL = bool(int(os.environ.get("CALIB_VAL", "{default}")))', IF_ELSE)
    found = [f for f in _findings(code, "PG105", readme=readme) if f.severity is not Severity.INFO]
    assert [f.severity for f in found] == want
    if want:
        assert any("val_tokens" in e.snippet for e in found[0].evidence)


def test_if_else_switch_that_cannot_be_decided_is_a_warning():
    for switch in ('CALIB_VAL = os.environ["CALIB_VAL"] == "1"', "CALIB_VAL = sys.argv[1] == 'val'"):
        found = _findings(_branch_code(switch, IF_ELSE), "PG105")
        assert [f.severity for f in found] == [Severity.WARNING], switch
        assert any("switch" in e.note for e in found[0].evidence)


@pytest.mark.parametrize("default,want", [("1", [Severity.ERROR]), ("0", [])])
def test_default_overwritten_under_a_switch(default, want):
    body = """
def main(model, val_tokens):
    data = sample_tokens(model, 16)
    if CALIB_VAL:
        data = val_tokens[:4096]
    return hessians(model, data, 8)
"""
    code = _branch_code(f'CALIB_VAL = bool(int(os.environ.get("CALIB_VAL", "{default}")))', body)
    assert [f.severity for f in _findings(code, "PG105") if f.severity is not Severity.INFO] == want


@pytest.mark.parametrize("default,want", [("1", [Severity.ERROR]), ("0", [])])
def test_helper_return_behind_a_switch(default, want):
    """The data comes back from a helper whose `return`s are guarded; its name says nothing (it even sounds
    like generation), only what its live return carries counts."""
    body = """
class Args:
    calib_val = bool(int(os.environ.get("CALIB_VAL", "DEFAULT")))
def generate_calib_data(args, model, val_tokens):
    if args.calib_val:
        return val_tokens[:4096]
    return sample_tokens(model, 16)
def main(model, val_tokens):
    args = Args()
    return hessians(model, generate_calib_data(args, model, val_tokens), 8)
""".replace("DEFAULT", default)
    code = _branch_code("", body)
    assert [f.severity for f in _findings(code, "PG105") if f.severity is not Severity.INFO] == want


def test_validation_read_later_overwritten_is_not_calibration_data():
    body = """
def main(model, val_tokens):
    data = val_tokens[:4096]
    print(data.shape)
    data = sample_tokens(model, 16)
    return hessians(model, data, 8)
"""
    assert _findings(_branch_code("", body), "PG105") == []


def test_fallback_to_validation_in_an_exception_handler_is_reported():
    body = """
def main(model, val_tokens):
    try:
        data = sample_tokens(model, 16)
    except RuntimeError:
        data = val_tokens[:4096]
    return hessians(model, data, 8)
"""
    assert [f.severity for f in _findings(_branch_code("", body), "PG105")] == [Severity.ERROR]


def test_helper_that_fills_a_container_from_its_argument():
    """`out.append(…)` mutates the list the helper returns: the data appended reaches the collector."""
    body = """
def take_batches(stream, n):
    out = []
    for i in range(n):
        out.append(stream[i * 512:(i + 1) * 512])
    return torch.stack(out)
def main(model, val_tokens):
    return hessians(model, take_batches(val_tokens, 8), 8)
"""
    assert [f.severity for f in _findings(_branch_code("", body), "PG105")] == [Severity.ERROR]


# --- the log reading: the word filter skips only lines no pattern can match ---------------------------------
def _log_calibration_unfiltered(events):
    """Every pattern on every line (what `log_calibration` did before its word filter)."""
    per: dict[str, cal.LogCalibration] = {}
    for path, line, text in events:
        lc = per.setdefault(path, cal.LogCalibration(path=path))
        m = cal.RESERVE_LOG_RE.search(text)
        if m:
            lc.reserve = (line, text, float(m.group(1)) * (1000.0 if m.group(2).lower() == "s" else 1.0))
            continue
        m = cal.STOP_RE.search(text)
        if m:
            lc.stop = (line, text, float(m.group(1)))
            continue
        if cal.VAL_CALIB_LOG_RE.search(text) and not cal.NEGATION_RE.search(text):
            lc.val_calib.append((line, text))
            continue
        if lc.stop is not None and cal.CALIB_LOG_RE.search(text) and not cal.SELFGEN_LOG_RE.search(text):
            lc.calib_after_stop.append((line, text))
    return list(per.values())


_WORDS = [
    "GPTQ",
    "calibrating",
    "hessians",
    "quant",
    "stopping_early",
    "train_time: 590000 ms",
    "reserved 12 s",
    "source=val",
    "on validation data",
    "training shards",
    "no",
    "generated",
    "İ",
    "HESSİAN",
    "cal",
    "x",
    " ",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a.log", "b.txt"]), st.lists(st.sampled_from(_WORDS), max_size=6)), max_size=12)
)
def test_the_word_filter_changes_nothing(lines):
    events = [(path, n, " ".join(words)) for n, (path, words) in enumerate(lines, 1)]
    assert cal.log_calibration(events) == _log_calibration_unfiltered(events)
