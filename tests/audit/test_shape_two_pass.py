"""Two-pass / full-table rescoring (C3, C4) judged on the evaluation model, and the model itself.

Synthetic snippets only: each INVALID shape is written several ways (a helper incrementing a table passed to
it, a method on a cache object, `np.bincount`, `np.add.at`, `index_add_`, an inline scoring loop), and each
legal neighbour next to it (single-pass score-first cache, halves of the data, diagnostic variants with
fresh caches, a warm-up table thrown away, a switch that is off).
"""

from __future__ import annotations

import ast

from audit.analysis.context import Analyses
from audit.analysis.evaluation import ADD_AT, AT_TARGET, COUNT_BUILD, FULL_VOCAB, INDEX_ADD, OPTIMIZER_STEP
from audit.analysis.program import Program
from audit.engine import audit_submission
from audit.findings import Reachability, Severity
from audit.load.resolve import resolve
from tests.support import make_submission


def _pg104(code: str, readme: str = ""):
    files = {"train_gpt.py": code}
    if readme:
        files["README.md"] = readme
    rep = audit_submission(make_submission(files, dedent=True), select={"PG104"})
    return [f for f in rep.findings if f.rule.startswith("PG104")]


def _evaluation(code: str):
    sub = make_submission({"train_gpt.py": code}, dedent=True)
    program = Program.build(resolve(sub).sources)
    return Analyses(program).evaluation


CACHE_CLASS = """
import numpy as np
import torch
class Cache:
    def __init__(self, n):
        self.ctx = torch.zeros(n)
        self.full = torch.zeros(n)
    def insert(self, toks, a, b):
        keys = (toks[a - 1:b - 1] * 31) % self.ctx.numel()
        self.ctx.index_add_(0, keys, torch.ones(b - a))
        self.full.index_add_(0, (keys * 7 + toks[a:b]) % self.ctx.numel(), torch.ones(b - a))
    def lookup(self, toks, a, b):
        keys = (toks[a - 1:b - 1] * 31) % self.ctx.numel()
        return self.full[(keys * 7 + toks[a:b]) % self.ctx.numel()] / self.ctx[keys].clamp(min=1)
def run(model, toks, cache, spans, grow):
    nll = 0.0
    with torch.no_grad():
        for a, b in spans:
            logp = torch.log_softmax(model(toks[a - 1:b - 1]), -1)
            p = 0.7 * logp.exp().gather(-1, toks[a:b, None])[:, 0] + 0.3 * cache.lookup(toks, a, b)
            nll += float(-torch.log(p).sum())
            if grow:
                cache.insert(toks, a, b)
    return nll
"""


def test_torch_index_add_cache_rescored_after_a_full_pass():
    code = (
        CACHE_CLASS
        + """
def main(model):
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    spans = [(i, i + 128) for i in range(1, len(val_tokens) - 128, 128)]
    cache = Cache(1 << 18)
    p1 = run(model, val_tokens, cache, spans, True)
    p2 = run(model, val_tokens, cache, spans, False)
    print(f"final_exact val_bpb:{p2}")
main(None)
"""
    )
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.ERROR]
    msg = found[0].message
    assert "C3 score-before-update" in msg and "C4 single pass" in msg and "fills `cache`" in msg
    notes = " ".join(e.note for e in found[0].evidence)
    assert "first pass" in notes and "index add" in notes


def test_single_pass_and_diagnostic_variants_with_fresh_caches_pass():
    code = (
        CACHE_CLASS
        + """
def main(model):
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    spans = [(i, i + 128) for i in range(1, len(val_tokens) - 128, 128)]
    plain = run(model, val_tokens, Cache(1), spans, False)
    print(f"diagnostic val_bpb:{plain}")
    cache = Cache(1 << 18)
    small = run(model, val_tokens, cache, spans, True)
    print(f"diagnostic_small val_bpb:{small}")
    cache = Cache(1 << 20)
    big = run(model, val_tokens, cache, spans, True)
    print(f"final_exact val_bpb:{big}")
main(None)
"""
    )
    assert not _pg104(code)


def test_halves_sharing_one_cache_score_each_position_once():
    code = (
        CACHE_CLASS
        + """
def main(model):
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    h = len(val_tokens) // 2
    cache = Cache(1 << 18)
    a = run(model, val_tokens[:h], cache, [(1, h)], True)
    b = run(model, val_tokens[h:], cache, [(1, h)], True)
    print(f"final_exact val_bpb:{a + b}")
main(None)
"""
    )
    assert not _pg104(code)


def test_table_built_in_one_shot_then_an_inline_scoring_loop_is_full_table_rescoring():
    code = """
    import numpy as np
    def count_all(table, toks):
        table += np.bincount((toks[:-1] * 131 + toks[1:]) % len(table), minlength=len(table))
    def main(model_probs):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        table = np.zeros(1 << 20)
        count_all(table, val_tokens)
        loss = 0.0
        for t in range(1, len(val_tokens)):
            q = table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] / len(val_tokens)
            loss += -np.log(0.9 * model_probs[t] + 0.1 * q)
        print(f"final_exact val_loss:{loss}")
    main(None)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert found[0].message.startswith("Full-table rescoring (C3 score-before-update)")
    assert "C4" not in found[0].message


def test_rescoring_only_in_a_diagnostic_log_is_a_warning():
    code = """
    import numpy as np
    def store(model, toks):
        return np.concatenate([np.log(model(toks[i:i + 8])) for i in range(0, len(toks), 8)])
    def rescore(toks, table, lp):
        return float(-(lp + np.log(table[toks % len(table)] + 1)).mean())
    def main(model):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        lp = store(model, val_tokens)
        print(f"final_exact val_loss:{-lp.mean()}")
        table = np.zeros(1024)
        np.add.at(table, val_tokens % 1024, 1)
        print(f"debug_rescored val_loss:{rescore(val_tokens, table, lp)}")
    main(None)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.WARNING]
    assert "diagnostic" in found[0].message


TWO_PASS_SWITCH = """
import os
import numpy as np
TWO_PASS = int(os.environ.get("TWO_PASS", "0"))
def store(model, toks):
    return np.concatenate([np.log(model(toks[i:i + 8])) for i in range(0, len(toks), 8)])
def build(table, toks):
    np.add.at(table, (toks[:-1] * 7 + toks[1:]) % len(table), 1)
def rescore(toks, table, lp):
    return float(-np.log(0.5 * np.exp(lp[1:]) + 0.5 * table[(toks[:-1] * 7 + toks[1:]) % len(table)]).mean())
def main(model):
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    lp = store(model, val_tokens)
    bpb = float(-lp.mean())
    if TWO_PASS:
        table = np.zeros(4096)
        build(table, val_tokens)
        bpb = rescore(val_tokens, table, lp)
    print(f"final_exact val_bpb:{bpb}")
main(None)
"""


def test_two_pass_behind_a_switch_that_is_off_is_info():
    found = _pg104(TWO_PASS_SWITCH)
    assert [f.severity for f in found] == [Severity.INFO]
    assert found[0].reachability is Reachability.DISABLED_BY_DEFAULT


def test_two_pass_switched_on_by_the_readme_run_command_is_an_error():
    readme = "## Run\n\n```bash\nTWO_PASS=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    found = _pg104(TWO_PASS_SWITCH, readme=readme)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert "stores per-token probabilities" in found[0].message


def test_evaluation_model_records_passes_states_updates_and_forms():
    ev = _evaluation(TWO_PASS_SWITCH)
    main_passes = [p for p in ev.passes if getattr(p.scope, "name", "") == "main"]
    assert [p.callee for p in main_passes] == ["store", "rescore"]
    first, second = main_passes
    assert first.per_token and not second.per_token
    assert "table" in second.reads and "lp" in second.reads
    assert first.reported is not None and second.reported is not None
    assert {s.form for s in second.sites} == {AT_TARGET}
    builds = [u for u in ev.updates if getattr(u.scope, "name", "") == "main"]
    assert [(u.state, u.kind, u.via, u.from_val) for u in builds] == [("table", ADD_AT, "build", True)]
    assert [u.node.lineno for u in ev.stale_updates(second)] == [builds[0].node.lineno]
    assert ev.reporting_functions and all(getattr(s, "name", "") == "main" for s in ev.reporting_functions)
    assert ev.reachability(first)[0] is Reachability.REACHABLE
    assert ev.reachability(second)[0] is Reachability.DISABLED_BY_DEFAULT  # behind `if TWO_PASS:`, off


def test_evaluation_model_follows_helpers_through_self_and_arguments():
    code = """
    import numpy as np
    import torch
    import torch.nn.functional as F
    class Tab:
        def __init__(self):
            self.t = np.zeros(64)
        def bump(self, keys):
            _hist(self.t, keys)
    def _hist(table, keys):
        counts = np.bincount(keys, minlength=len(table))
        table += counts
    def ttt(model, val_tokens):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        total = 0.0
        for i in range(0, len(val_tokens), 8):
            with torch.no_grad():
                total += F.cross_entropy(model(val_tokens[i:i + 8]), val_tokens[i + 1:i + 9]).item()
            F.cross_entropy(model(val_tokens[i:i + 8]), val_tokens[i + 1:i + 9]).backward()
            opt.step()
        return total
    def main(model):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        tab = Tab()
        tab.bump(val_tokens % 64)
        print(f"final_exact val_bpb:{ttt(model, val_tokens)}")
    main(None)
    """
    ev = _evaluation(code)
    bumps = [u for u in ev.updates if getattr(u.scope, "name", "") == "main" and u.kind != OPTIMIZER_STEP]
    assert [(u.state, u.kind, u.via) for u in bumps] == [("tab", COUNT_BUILD, "bump")]
    assert ast.unparse(bumps[0].primitive[1]) == "table += counts"  # inside the helper of the helper
    steps = [(getattr(u.scope, "name", ""), u.state, u.via) for u in ev.updates if u.kind == OPTIMIZER_STEP]
    assert steps == [("ttt", "model", None), ("main", "model", "ttt")]  # the step, and the call that makes it
    ttt_pass = [p for p in ev.passes if p.callee == "ttt"]
    assert ttt_pass and {s.form for s in ttt_pass[0].sites} == {FULL_VOCAB}
    assert INDEX_ADD != ADD_AT  # distinct kinds for other rules to read


def test_two_inline_loops_the_second_rescoring_cold_positions_is_two_pass():
    code = """
    import numpy as np
    def main(model_p):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        table = np.zeros(1 << 16)
        nll = np.zeros(len(val_tokens))
        for t in range(1, len(val_tokens)):
            q = table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] / t
            nll[t] = -np.log(0.9 * model_p[t] + 0.1 * q)
            table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] += 1
        total = nll.sum()
        for t in range(1, 4096):
            q = table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] / len(val_tokens)
            total += -np.log(0.9 * model_p[t] + 0.1 * q) - nll[t]
        print(f"final_exact val_loss:{total}")
    main(None)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert "fills `table` while scoring" in found[0].message and "C4 single pass" in found[0].message


def test_cache_seeded_before_a_score_first_pass_needs_a_human():
    # another rank's share added up front, then score-first: legal when the seed precedes the scored span,
    # which the code does not show statically -> a warning, never clean and never an error
    code = """
    import numpy as np
    def main(model_p, rank, start):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        table = np.zeros(1 << 16)
        if rank > 0:
            np.add.at(table, (val_tokens[: start - 1] * 131 + val_tokens[1:start]) % len(table), 1)
        loss = 0.0
        for t in range(start, len(val_tokens)):
            q = table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] / t
            loss += -np.log(0.9 * model_p[t] + 0.1 * q)
            table[(val_tokens[t - 1] * 131 + val_tokens[t]) % len(table)] += 1
        print(f"final_exact val_loss:{loss}")
    main(None, 1, 100)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.WARNING]
    assert found[0].message.startswith("Pre-filled cache (C3 undecided)")


BEST_OF = """
import torch
import torch.nn.functional as F
def score(model, val_tokens, temperature):
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(val_tokens) - 64, 64):
            x, y = val_tokens[i:i + 64], val_tokens[i + 1:i + 65]
            total += F.cross_entropy(model(x) / temperature, y, reduction="sum").item()
    return total
def main(model):
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    plain = score(model, val_tokens, 1.0)
    sharp = score(model, val_tokens, 0.9)
    {line}
main(None)
"""


def test_min_over_two_passes_on_the_same_tokens_is_reported_best_of():
    found = _pg104(BEST_OF.replace("{line}", 'print(f"final_exact val_bpb:{min(plain, sharp)}")'))
    assert [f.severity for f in found] == [Severity.ERROR]
    assert found[0].message.startswith("Best of several passes (C4 single pass)")


def test_two_diagnostic_variants_with_one_reported_pass():
    line = 'print(f"diagnostic val_bpb:{plain}")\n    print(f"final_exact val_bpb:{sharp}")'
    assert not _pg104(BEST_OF.replace("{line}", line))


def test_table_built_by_a_constructor_then_rescored():
    code = """
    import numpy as np
    class Bigram:
        def __init__(self, toks, n):
            self.t = np.zeros(n)
            np.add.at(self.t, (toks[:-1] * 131 + toks[1:]) % n, 1)
        def q(self, toks):
            return self.t[(toks[:-1] * 131 + toks[1:]) % len(self.t)] / len(toks)
    def nll(model, toks, big):
        return float(-np.log(0.9 * model(toks) + 0.1 * big.q(toks)).sum())
    def main(model):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        big = Bigram(val_tokens, 1 << 20)
        print(f"final_exact val_loss:{nll(model, val_tokens, big)}")
    main(None)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert "`big`" in found[0].message


def test_module_level_table_updated_through_a_helper_then_rescored():
    code = """
    import numpy as np
    COUNTS = np.zeros(1 << 16)
    def remember(toks):
        COUNTS[(toks[:-1] * 131 + toks[1:]) % len(COUNTS)] += 1
    def first_pass(model, toks):
        out = []
        for i in range(0, len(toks) - 64, 64):
            out.append(np.log(model(toks[i:i + 64])))
            remember(toks[i:i + 65])
        return np.concatenate(out)
    def second_pass(toks, lp):
        q = COUNTS[(toks[:-1] * 131 + toks[1:]) % len(COUNTS)] / len(toks)
        return float(-np.log(0.9 * np.exp(lp) + 0.1 * q).mean())
    def main(model):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        lp = first_pass(model, val_tokens)
        bpb = second_pass(val_tokens, lp)
        print(f"final_exact val_bpb:{bpb}")
    main(None)
    """
    found = _pg104(code)
    assert [f.severity for f in found] == [Severity.ERROR]
    assert "fills `COUNTS` while scoring" in found[0].message


def _state(ev) -> list[tuple]:
    """The model's updates and resets, by node identity (the two models compared share one program's trees)."""
    by = lambda u: id(u.by_pass.node) if u.by_pass is not None else None  # noqa: E731
    ups = [(id(u.scope), id(u.node), u.state, u.kind, u.via, u.from_val, by(u)) for u in ev.updates]
    return ups + [(id(r.scope), id(r.node), r.state) for r in ev.resets]


def _stale(ev) -> list[list[int]]:
    return [[id(u.node) for u in ev.stale_updates(p)] for p in ev.passes]


def test_updates_made_on_demand_do_not_depend_on_what_is_asked_first():
    """A function's updates and resets are made when first asked for: every update asked first, or only the
    passes' stale updates first, gives the same model and the same stale updates."""
    from tests.support import EXAMPLES

    codes = [TWO_PASS_SWITCH, CACHE_CLASS] + [p.read_text() for p in sorted(EXAMPLES.glob("*/train_gpt.py"))]
    made = 0
    for code in codes:
        program = Program.build(resolve(make_submission({"train_gpt.py": code}, dedent=True)).sources)
        every_first, passes_first = Analyses(program).evaluation, Analyses(program).evaluation
        state = _state(every_first)
        stale = _stale(passes_first)
        assert _stale(every_first) == stale and _state(passes_first) == state
        made += len(state)
    assert made  # the codes do update state


MUTUAL_HELPERS = """
import torch
GLOBAL_T = torch.zeros(64)
def add(table, keys, n):
    table.index_add_(0, keys, torch.ones(len(keys)))
    if n:
        spread(table, keys, n - 1)
def spread(t, k, n):
    GLOBAL_T.index_add_(0, k, torch.ones(len(k)))
    add(t, k, n)
def score(model, toks, table):
    logp = torch.log_softmax(model(toks[:-1]), -1)
    nll = -logp.gather(-1, toks[1:, None]).sum()
    spread(table, toks[1:], 3)
    return nll
"""


def test_facts_of_mutually_recursive_helpers_follow_the_cycle_once_from_either_side():
    """`add` and `spread` call each other. `spread`'s facts see `add` whole (its parameter update, and through
    it the module table), and `add`'s see `spread` as it stood when the recursion reached it: its own update of
    the module table only. Asked for in either order, the facts are the same."""
    facts = []
    for first in ("add", "spread"):
        ev = _evaluation(MUTUAL_HELPERS)
        fns = {fn.name: fn for fn in ast.walk(ev.p.indexes[0].tree) if isinstance(fn, ast.FunctionDef)}
        order = [first, "spread" if first == "add" else "add"]
        got = {name: ev.facts(fns[name]) for name in order}
        facts.append({name: (sorted(f.mutates), sorted(f.reads), sorted(f.resets)) for name, f in got.items()})
    assert facts[0] == facts[1]
    assert facts[0]["add"][0] == ["global:GLOBAL_T", "table"]
    assert facts[0]["spread"][0] == ["global:GLOBAL_T", "t"]
