"""Extra cases for the n-gram rules (PG110 target-keyed cache reads, PG111 unnormalised byte mixtures):
structural traps, reachability through logs and per-command README envs, and the labelled corpus rows."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.analysis.ngram import _guard_cores, log_proof
from audit.api import audit_git
from audit.engine import audit_submission
from audit.findings import Reachability, Severity
from tests.support import CORPUS as CORPUS_DIR
from tests.support import make_submission

NGRAM_RULES = {"PG110", "PG111"}


def _findings(code: str, readme: str = "", logs: dict[str, str] | None = None, rule: str | None = None):
    sub = make_submission(
        {"train_gpt.py": code, **({"README.md": readme} if readme else {}), **(logs or {})}, dedent=True
    )
    rep = audit_submission(sub, select={rule} if rule else NGRAM_RULES)
    return [f for f in rep.findings if f.code in NGRAM_RULES]


def _errors(findings):
    return [f for f in findings if f.severity is Severity.ERROR]


# A hashed backoff cache whose target-keyed read sits behind an off-by-default branch.
DIRICHLET_CACHE = """
import os
import numpy as np
DIRICHLET = int(os.environ.get("NGRAM_DIRICHLET", "0"))
def eval_ngram(val_np, gj, nll, mask, ctx_t, full_t):
    ctx_hash = val_np[gj - 1].astype(np.uint64) * 36313
    ck = (ctx_hash & mask).astype(np.int64)
    tgt_np = val_np[gj].astype(np.uint64)
    fk = ((ctx_hash ^ (tgt_np * 27191)) & mask).astype(np.int64)
    p = np.exp(-nll)
    if DIRICHLET:
        cc = ctx_t[ck].astype(np.float64)
        fc = full_t[fk].astype(np.float64)
        p = (np.minimum(fc, cc) + 2.0 * p) / (cc + 2.0)
    np.add.at(ctx_t, ck, 1)
    np.add.at(full_t, fk, 1)
    return -np.log(p).sum()
print("ngram_cache:enabled")
print(eval_ngram(None, None, None, 0, None, None))
"""


def test_newest_context_token_is_not_mistaken_for_the_target():
    # tokens[pos] is the last *context* token here (the cache predicts pos + 1): no sibling read keys on a
    # strict subset, so nothing marks tokens[pos] as the predicted token.
    code = """
    import numpy as np
    def hint_lookup(tokens, positions, hint_table, mask):
        out = []
        for pos in positions:
            key = ((int(tokens[pos]) * 36313) ^ (int(tokens[pos - 1]) * 27191)) & mask
            out.append(hint_table[key])
        return out
    def update(tokens, positions, hint_table, mask):
        for pos in positions:
            key = ((int(tokens[pos]) * 36313) ^ (int(tokens[pos - 1]) * 27191)) & mask
            hint_table[key] += 1
    print(hint_lookup(None, [], None, 0)); update(None, [], None, 0)
    """
    assert _findings(code) == []


def test_exact_tuple_keyed_counts_are_not_reported():
    # An unhashed (context, token) dictionary gives exact counts: count(ctx, v) / count(ctx) sums to one.
    code = """
    def exact_ngram(tokens, targets, ctx_counts, pair_counts):
        total = 0.0
        for i, tgt in enumerate(targets):
            ctx = tuple(tokens[i - 2:i])
            total += pair_counts.get((ctx, tgt), 0) / max(ctx_counts.get(ctx, 0), 1)
            pair_counts[(ctx, tgt)] = pair_counts.get((ctx, tgt), 0) + 1
            ctx_counts[ctx] = ctx_counts.get(ctx, 0) + 1
        return total
    print(exact_ngram([], [], {}, {}))
    """
    assert _findings(code) == []


def test_log_line_naming_the_branch_makes_it_live():
    off = _findings(DIRICHLET_CACHE)
    assert off and all(f.severity is Severity.INFO for f in off)
    on = _findings(
        DIRICHLET_CACHE, logs={"train.log": "ngram_cache:enabled orders=2-7 dirichlet=True buckets=4194304\n"}
    )
    errs = _errors(on)
    assert errs and errs[0].reachability is Reachability.ENABLED_BY_RUN_COMMAND
    assert "dirichlet=True" in errs[0].reachability_reason


def test_logged_hyperparameter_false_beats_a_family_log_line():
    code = """
    import os
    class Hyperparameters:
        ppm_enabled = bool(int(os.environ.get("PPM_ENABLED", "0")))
    args = Hyperparameters()
    def ppm_mixture_bpb(nll_nats, token_bytes):
        out = []
        for i, tb in enumerate(token_bytes):
            n_bytes = len(tb)
            token_logp = -float(nll_nats[i])
            out.append(token_logp / n_bytes)
        return out
    if args.ppm_enabled:
        print(ppm_mixture_bpb([], []))
    """
    log = """
    Hyperparameters:
      ppm_enabled: False
    ppm_mix_progress seq:500/60568 mix_bpb:0.77
    """
    found = _findings(code, logs={"train.log": log})
    assert found and not _errors(found)


def test_each_readme_command_is_a_way_the_code_runs():
    # The merged README env (training + TTT eval) takes the TTT path; the training command alone reaches the
    # cache, which is on by default on 8 GPUs.
    code = """
    import os
    import numpy as np
    def eval_sliding(val_np, gj, nll, mask, ctx_t, full_t, world_size):
        use_ngram = bool(int(os.environ.get("NGRAM_CACHE", "1" if world_size > 1 else "0")))
        if use_ngram:
            ctx_hash = val_np[gj - 1].astype(np.uint64) * 36313
            tgt = val_np[gj].astype(np.uint64)
            fk = ((ctx_hash ^ (tgt * 27191)) & mask).astype(np.int64)
            nll = nll - np.log1p(full_t[fk])
            np.add.at(full_t, fk, 1)
        return nll.sum()
    def eval_ttt(model):
        return 0.0
    if int(os.environ.get("TTT_ENABLED", "0")):
        print(eval_ttt(None))
    else:
        print(eval_sliding(None, None, None, 0, None, None, 8))
    """
    readme = """
    ```bash
    export SEED=42
    torchrun --standalone --nproc_per_node=8 train_gpt.py

    export TTT_ENABLED=1
    torchrun --standalone --nproc_per_node=8 train_gpt.py
    ```
    """
    errs = _errors(_findings(code, readme=readme))
    assert errs and "README run command" in errs[0].reachability_reason


def test_guard_cores_and_log_proof():
    assert _guard_cores("`args.use_phrase_cache` is False") == ["phrase_cache"]
    assert _guard_cores("`int(os.environ.get('PPM_ENABLED', '0'))` is False") == ["ppm"]
    assert _guard_cores("`legal_ttt and args.ttt_enabled` is True") == []  # a true guard already excludes the site
    events = [
        ("a.log", 3, "phrase_cache:enabled probes=[20, 16]"),
        ("a.log", 9, "ppm_mix bytes=10982035 mix_bpb=1.0003"),
    ]
    assert log_proof("`use_phrase` is False", events) == events[0]
    assert log_proof("`args.ppm_enabled` is False", events) == events[1]
    assert log_proof("`use_mixer` is False", events) is None
    # indented hyperparameter dump lines are not proof that a feature ran
    assert log_proof("`args.ttt_enabled` is False", [("a.log", 1, "  ttt_batch_size: 64")]) is None


# --- the labelled corpus (mirror) -----------------------------------------------------------------
CORPUS = {
    # pr: (folder, rules that must report an error; empty for "no error from our rules"). A hashed cache read at
    # the target's key scores the token with a target-only count ratio: C1 and C2 at once (RULES lesson 11).
    "761": ("records/track_10min_16mb/2026-03-26_ScoreFirst_TTT_Ngram_Backoff", {"PG110", "PG111"}),
    "797": ("records/track_10min_16mb/2026-03-26_7gram_NgramCache_0.8960", {"PG110", "PG111"}),
    "846": ("records/track_10min_16mb/2026-03-27_TwoPassNgram_0.1434", {"PG110", "PG111"}),
    "870": ("records/track_10min_16mb/2026-03-26_FullRescore_NgramCache_0.0935", {"PG110", "PG111"}),
    "972": ("records/track_10min_16mb/2026-03-27_Normalized_Ngram_Bayesian_FirstMatch_0.3922", {"PG111"}),
    "1170": ("records/track_non_record_16mb/2026-03-31_11L_NativeFlowMatcher_LegalTTT", {"PG110", "PG111"}),
    "1858": ("records/track_10min_16mb/2026-04-27_ScoreFirstTTT_PPMD_QK525", {"PG111"}),
    "1967": ("records/track_10min_16mb/2026-04-30_NgramTilt_V21_LeakyReLU_1.05851", {"PG110"}),
    "2103": ("records/track_10min_16mb/2026-04-30_SP1024_ValueResid_PPMMix", {"PG111"}),
    "2039": ("records/track_10min_16mb/2026-04-30_CondPPM_1.015784", set()),
}


def _label_rows(pr: str) -> dict | None:
    import csv
    import os

    for path in (CORPUS_DIR / "dev_labels.tsv", CORPUS_DIR / "merged.tsv"):
        if not os.path.exists(path):
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["pr"] == pr:
                    return row
    return None


@pytest.mark.parametrize("pr", sorted(CORPUS))
def test_corpus_rows(mirror, pr):
    row = _label_rows(pr)
    if row is None:
        pytest.skip("corpus labels not available")
    folder, rules = CORPUS[pr]
    rep = audit_git(mirror, row["ref_sha"], folder, select=NGRAM_RULES)
    errors = {f.code for f in rep.findings if f.code in NGRAM_RULES and f.severity is Severity.ERROR}
    assert errors == rules, [(f.code, f.severity, f.message) for f in rep.findings]


def _log_proof_by_pattern(why, log_events):
    """`log_proof` as the patterns alone answer it (no word prefilter)."""
    for core in _guard_cores(why):
        last = core.split("_")[-1]
        on = re.compile(rf"\b\w*{re.escape(last)}\w*\s*[=:]\s*(true|1|on|yes|enabled)\b", re.I)
        named = re.compile(rf"^\[?{re.escape(core)}\w*[\s:\]][^\n]*\d", re.I)
        for e in log_events:
            if on.search(e[2]) or named.search(e[2]):
                return e
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["`args.use_phrase_cache` is False", "`ppm_k` is False", "`os.environ.get('DIRICHLET')` is False"]),
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    "phrase",
                    "_cache",
                    "CACHE",
                    "Cache",
                    "ppm",
                    "K",
                    "\u212a",
                    "dirichlet",
                    "=",
                    ":",
                    " ",
                    "true",
                    "1",
                    "[",
                    "x",
                    "ſ",
                    "enabled",
                ]
            ),
            max_size=8,
        ).map("".join),
        max_size=6,
    ),
)
def test_log_proof_finds_what_its_patterns_find(why, texts):
    events = [("run.log", i + 1, t) for i, t in enumerate(texts)]
    assert log_proof(why, events) == _log_proof_by_pattern(why, events)
