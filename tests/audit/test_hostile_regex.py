"""Linear-time parsing: lines built to make a backtracking regex explode cost about what a benign line of the
same length costs, and normal lines still match with the same groups.

Timings are relative only: each adversarial input is compared with a benign one of similar length, measured in
the same test (best of several rounds), and may cost at most MAX_RATIO times as much. The old patterns failed
these by factors of hundreds to millions (exponential for the key:value line)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit.load.resolve import (
    _IMPORT_LINE,
    _bare_exec,
    _is_effectively_empty,
    _launch_targets,
    _py_in_cmd,
    import_lines,
)
from audit.logs import parse_log
from audit.logs import parser as logparser
from audit.logs.patterns import MAX_LINE_CHARS, P

MAX_RATIO = 20
N = MAX_LINE_CHARS  # the longest line a log pattern is ever given


def _best(fn, arg, rounds: int = 7) -> float:
    """Best time per call: each round repeats the call until it has run for at least ~2 ms."""
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(arg)
        if time.perf_counter() - t0 >= 0.002 or reps >= 1 << 16:
            break
        reps *= 2
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(arg)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def _ratio(fn, hostile: str, benign: str) -> float:
    assert abs(len(hostile) - len(benign)) <= len(benign) // 4, "compare lines of similar length"
    return _best(fn, hostile) / _best(fn, benign)


def _pad(s: str, n: int = N) -> str:
    return (s * (n // len(s) + 1))[:n]


_TAIL = " val_loss:2.07269931 val_bpb:1.22436570"

# (name, function under test, adversarial input, benign input of similar length that takes the same path)
CASES = [
    (
        "kv_colon_line",  # exponential before: a:bbbb:bbbb:… that fails at the very end
        logparser.is_kv_colon_line,
        "a:" + _pad("bbbb:", N - 3) + ":",
        _pad("lr:0.04 ", N),
    ),
    (
        "kv_colon_line_113_bytes",  # the old regex needed hours for this one line
        logparser.is_kv_colon_line,
        "a:" + "bbbb:" * 22 + ":",
        "step:38000 churn:0.0846 " * 4 + "x:1",
    ),
    ("kv_colon_tokens", logparser._KV_COLON_TOKEN.findall, "k:vk:" + "a" * (N - 8) + "-b:c", _pad("lr:0.04 ", N)),
    ("kv_eq_tokens", logparser._KV_EQ_TOKEN.findall, "a=1 b=2 c=3 d=4 e=5 " + "x" * (N - 20), _pad("lr=0.04 ", N)),
    (
        "metric",  # quadratic before: a run of spaces where the tag may end
        P["metric"].match,
        "a" + " " * (N - 2) + "x",
        _pad("final int8 ", N - len(_TAIL)) + _TAIL,
    ),
    (
        "metric_bpb_only",
        P["metric_bpb_only"].match,
        "[a" + " " * (N - 3) + ":",
        _pad("final int8 ", N - 20) + " val_bpb:1.22436570",
    ),
    ("json_kv", P["json_kv"].match, '"k": a' + " " * (N - 7) + "b", '"k": ' + _pad("a b ", N - 6) + ","),
    ("json_kv_comma", P["json_kv"].match, '"k":' + " " * (N - 6) + ",x", '"k": ' + _pad("a b ", N - 6) + ","),
    (
        "py_in_cmd",  # quadratic before: a long path-like run with no .py, rescanned from every `/`
        _py_in_cmd,
        "x" + _pad("/a", N - 1),
        _pad("torchrun --nproc_per_node=8 train_gpt.py ", N),
    ),
    (
        "launch_sibling",  # quadratic before: many calls and no .py literal after them
        _launch_targets,
        _pad("subprocess.run(x) ", 8 * N),
        _pad("print(x, 'y.txt') ", 8 * N),
    ),
    ("launch_execv", _launch_targets, "execv" * (8 * N // 5), _pad("print(x, 'y.txt') ", 8 * N)),
]


@pytest.mark.parametrize("name,fn,hostile,benign", CASES, ids=[c[0] for c in CASES])
def test_adversarial_line_costs_about_what_a_benign_one_does(name, fn, hostile, benign):
    ratio = _ratio(fn, hostile, benign)
    assert ratio <= MAX_RATIO, f"{name}: adversarial input took {ratio:.1f}x the benign one"


def test_a_huge_line_is_truncated_for_matching_not_dropped():
    hostile = "a" + " " * 1_000_000 + "x val_loss:1.0 val_bpb:0.5"
    benign = "\n".join(_pad("step:1/2 train_loss:3.0 train_time:70ms ", 200) for _ in range(5000))
    assert _best(parse_log, hostile, rounds=3) <= MAX_RATIO * _best(parse_log, benign, rounds=3)
    res = parse_log("x" * (MAX_LINE_CHARS + 10) + "\nfinal_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    assert res.n_lines == 2 and len(res.events[0].text) == MAX_LINE_CHARS
    assert res.last.scored.val_bpb == pytest.approx(1.2)


# --- normal lines keep their matches and groups ----------------------------------------------------------------
def _groups(rx, line):
    m = rx.match(line)
    return None if m is None else {k: v for k, v in m.groupdict().items()}


@pytest.mark.parametrize(
    "line,groups",
    [
        (
            "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570",
            dict(
                tag="final_int8_zlib_roundtrip_exact", quals="", qual=None, loss="2.07269931", bpb="1.22436570", rest=""
            ),
        ),
        (
            "pre-quantization post-ema val_loss:2.81543002 val_bpb:1.08994070 eval_time:6006ms",
            dict(
                tag="pre-quantization post-ema",
                quals="",
                qual=None,
                loss="2.81543002",
                bpb="1.08994070",
                rest=" eval_time:6006ms",
            ),
        ),
        (
            "final_int6_sliding_window val_loss:1.9100 val_bpb:1.1300 stride:64 eval_time:75000ms",
            dict(
                tag="final_int6_sliding_window",
                quals="",
                qual=None,
                loss="1.9100",
                bpb="1.1300",
                rest=" stride:64 eval_time:75000ms",
            ),
        ),
        (
            "final_sliding stride:64 sliding val_loss:1.91 sliding val_bpb:1.13",
            dict(tag="final_sliding", quals=" stride:64", qual="sliding ", loss="1.91", bpb="1.13", rest=""),
        ),
        (
            "DIAGNOSTIC post_ema val_loss:1.9000 val_bpb:1.1300 eval_time:2000ms",
            dict(tag="DIAGNOSTIC post_ema", quals="", qual=None, loss="1.9000", bpb="1.1300", rest=" eval_time:2000ms"),
        ),
        ("a  b val_loss:1 val_bpb:2", dict(tag="a  b", quals="", qual=None, loss="1", bpb="2", rest="")),
        ("step:1/20000 train_loss:6.9300 train_time:70ms", None),
    ],
)
def test_metric_groups_unchanged(line, groups):
    assert _groups(P["metric"], line) == groups


@pytest.mark.parametrize(
    "line,groups",
    [
        (
            "ppm_mixer val_bpb:0.99528899 eval_time:348292ms order=4 H=0.9",
            dict(tag="ppm_mixer", bpb="0.99528899", rest=" eval_time:348292ms order=4 H=0.9"),
        ),
        (
            "final_int6_zstd-22_roundtrip_exact val_bpb:1.09826483",
            dict(tag="final_int6_zstd-22_roundtrip_exact", bpb="1.09826483", rest=""),
        ),
        ("[EVAL] final  val_bpb 1.25", dict(tag="[EVAL] final", bpb="1.25", rest="")),
        ("final val_bpb:1.25x", None),
    ],
)
def test_metric_bpb_only_groups_unchanged(line, groups):
    assert _groups(P["metric_bpb_only"], line) == groups


@pytest.mark.parametrize(
    "line,groups",
    [
        ('  "val_bpb": 1.0734,', dict(key="val_bpb", val="1.0734")),
        ('  "seed": 1337', dict(key="seed", val="1337")),
        (
            '        "optimizers": [o.state_dict() for o in optimizers],',
            dict(key="optimizers", val="[o.state_dict() for o in optimizers]"),
        ),
        ('"k": a b ,  ', dict(key="k", val="a b ")),
        ('"k":   ,', dict(key="k", val=" ")),
        ('"k":   ', dict(key="k", val=" ")),
        ('"k": a, b', None),
        ('"k":', None),
    ],
)
def test_json_kv_groups_unchanged(line, groups):
    assert _groups(P["json_kv"], line) == groups


@pytest.mark.parametrize(
    "line,is_kv,tokens",
    [
        (
            "tie_embeddings:True embed_lr:0.05 head_lr:0.0",
            True,
            [("tie_embeddings", "True"), ("embed_lr", "0.05"), ("head_lr", "0.0")],
        ),
        ("step:38000 churn:0.0846", True, [("step", "38000"), ("churn", "0.0846")]),
        ("a:bb:cc", True, [("a", "bb")]),  # a:b + b:cc (no space needed between tokens)
        ("a:b:c", False, [("a", "b")]),  # the middle `b` cannot be both a value and a key
        ("a:" + "bbbb:" * 22 + ":", False, [("a", "bbbb")] + [("bbbb", "bbbb")] * 10),
        ("lr:0.04", False, [("lr", "0.04")]),
        (" lr:0.04 x:1", False, [("lr", "0.04"), ("x", "1")]),
        ("12ab:c de:f", False, [("ab", "c"), ("de", "f")]),
    ],
)
def test_kv_colon_line_unchanged(line, is_kv, tokens):
    assert logparser.is_kv_colon_line(line) is is_kv
    assert logparser._KV_COLON_TOKEN.findall(line) == tokens


def test_kv_eq_tokens_unchanged():
    line = "num_layers=11 model_dim=512 Xlr=0.1 seed=1337 run_id=abc=def tail"
    assert logparser._KV_EQ_TOKEN.findall(line) == [
        ("num_layers", "11"),
        ("model_dim", "512"),
        ("lr", "0.1"),
        ("seed", "1337"),
        ("run_id", "abc=def"),
    ]


def test_entry_script_patterns_unchanged():
    assert _py_in_cmd("torchrun --standalone --nproc_per_node=8 records/x/train_gpt.py --flag") == [
        "records/x/train_gpt.py"
    ]
    assert _py_in_cmd("python prep.py && SCRIPT=train.py bash run.sh a.py.bak") == ["prep.py", "train.py", "a.py"]
    assert _py_in_cmd("(cd x/y.py)") == ["x/y.py"]
    assert _py_in_cmd("(x/y.py)") == ["y.py"]  # after `(`, only a `/` starts the path
    assert _py_in_cmd("python x.pyc") == []
    src = "import runpy\nrunpy.run_path('train_gpt_v2.py')\nsubprocess.run(['torchrun', \"eval.py\"])\nos.system(cmd)\n"
    assert _launch_targets(src) == ["train_gpt_v2.py", "eval.py"]
    assert _launch_targets("os.execv(sys.executable, [sys.executable, 'b.py'])") == ["b.py"]
    assert _launch_targets("subprocess.run(x)\nprint('a.py')") == ["a.py"]  # the first literal after the call


def _launch_targets_reference(text: str) -> list[str]:
    """The `.py` literal each launch names: every literal listed first, then each call's first one after it."""
    from audit.load.resolve import _LAUNCH_SIBLING, _PY_LITERAL

    lits = [(m.start(1) - 1, m.end(1) + 1, m.group(1)) for m in _PY_LITERAL.finditer(text)]
    out, pos = [], 0
    while (call := _LAUNCH_SIBLING.search(text, pos)) is not None:
        after = [lit for lit in lits if lit[0] >= call.end()]
        if not after:
            break
        _, pos, name = after[0]
        out.append(name)
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["os.system(", "run_path (", "'a.py'", '"b/c.py"', "x", "'", "\n", ".py", "(", ")"]),
        max_size=14,
    )
)
def test_launch_targets_are_each_calls_first_literal_after_it(parts):
    text = "".join(parts)
    assert _launch_targets(text) == _launch_targets_reference(text)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["#", "x", " ", "\t", "\n", "\r", "\r\n", "\x0c", "\x1f", "\x85", "\u2028", "\xa0", "# c"]),
        max_size=12,
    )
)
def test_effectively_empty_is_every_line_blank_or_a_comment(parts):
    text = "".join(parts)
    expected = all(not s or s.startswith("#") for s in (line.strip() for line in text.splitlines()))
    assert _is_effectively_empty(text) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["exec", "eval", "x", "é", "_", ".", " ", "(", "1", "\n", "ev", "al"]), max_size=12))
def test_bare_exec_finds_what_the_look_behind_pattern_finds(parts):
    """The exec/eval prefilter of source decoding answers as `(?<![\\w.])(?:exec|eval)\\b` does."""
    text = "".join(parts)
    assert _bare_exec(text) == bool(re.search(r"(?<![\w.])(?:exec|eval)\b", text))


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["from", "import", " ", "\t", "\n", "\r", "\x0c", "\u2028", "a", ".b", ",", "x = 1; ", "#", "é", "from "]
        ),
        max_size=16,
    )
)
@example(["import", " ", "a", ",", "\n", "import", " ", "a"])  # a list runs on: the second keyword is inside it
@example(["\n", " ", "\n", "from", " ", "a", " ", "import", " ", "a"])  # blank lines before the keyword
def test_import_lines_are_the_matches_finditer_gives(parts):
    """Import lines are found from the keywords' positions; the matches (span and groups) are finditer's."""
    text = "".join(parts)
    expected = [(m.span(), m.groups()) for m in _IMPORT_LINE.finditer(text)]
    assert [(m.span()[1], m.groups()) for m in import_lines(text)] == [(end, g) for (_, end), g in expected]


def _launch_targets_by_search(text: str) -> list[str]:
    """The definition: search for the next launch call from where the last named literal ended."""
    from audit.load.resolve import _LAUNCH_SIBLING, _PY_LITERAL

    out: list[str] = []
    pos = 0
    while (call := _LAUNCH_SIBLING.search(text, pos)) is not None:
        lit = _PY_LITERAL.search(text, call.end())
        if lit is None:
            break
        pos = lit.end(1) + 1
        out.append(lit.group(1))
    return out


_LAUNCH_PIECES = [
    "runpy.run_path(",
    "run_module(",
    "subprocess.run([",
    "subprocess.",
    "os.system (",
    "os.execv(",
    "execvexecv(",
    "'a.py'",
    '"b/c.py"',
    "'x.py",
    "print(",
    " ",
    "\n",
    "os.",
    "run_",
]


@given(st.lists(st.sampled_from(_LAUNCH_PIECES), max_size=14))
@settings(max_examples=300, deadline=None)
@example(["subprocess.run([", "'a.py'", "subprocess.run([", "'x.py", "'a.py'"])
@example(["subprocess.run([", "'a.py'", "subprocess.run([", '"b/c.py"'])  # a call right after the literal
@example(["os.system (", "subprocess.", "run([", "'a.py'"])  # a call that starts inside another call's name
def test_launch_targets_are_what_searching_from_each_literal_gives(pieces):
    """The launches found at the occurrences of their words are the ones a search from each position finds."""
    text = "".join(pieces)
    assert _launch_targets(text) == _launch_targets_by_search(text)


@pytest.mark.parametrize("repeat", [3, 200])  # a few calls, and more than are tried one by one
def test_many_launch_calls_are_found_as_searching_finds_them(repeat):
    text = "".join(
        ["subprocess.run([", "'a.py'", "os.system (", "subprocess.", "'b.py", "execvexecv(", '"c/d.py"'] * repeat
    )
    assert _launch_targets(text) == _launch_targets_by_search(text)
    assert len(_launch_targets(text)) >= 2 * repeat
