"""One size rule for pgolf-audit and pgolf-verify (audit.checks.size), and re-run logs of the same seed.

Synthetic records written here: a compressed code wrapper with a logged total; raw code whose log counts its
compressed form; logs that do not explain the files; a record that ships original and re-run logs of its seeds
by design, identical copies, an eval-only re-evaluation, and seeds that are really duplicated.
"""

from __future__ import annotations

import base64
import json
import lzma
import random
from pathlib import Path

from audit.checks.size import DOUBT, OVER, PASS, artifact_size
from audit.engine import audit_submission
from audit.findings import Severity
from audit.load.folder import load_folder
from audit.logs import parse_log
from verify.checks import Status
from verify.plan import make_plan
from verify.report import build_report, logs_evidence

CAP = 16_000_000
MODEL = 15_950_000  # leaves 50,000 bytes for code: a wrapper fits, the raw script does not


def big_script(n_funcs: int = 1200) -> str:
    """~150 KB of Python that lzma packs to ~30 KB (varied names and numbers, like a real record)."""
    rnd = random.Random(16)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "theta", "kappa", "lam", "mu", "rho", "tau"]
    out = ["import os", "import math", ""]
    for i in range(n_funcs):
        a, b = rnd.sample(words, 2)
        out.append(f"def f_{a}_{b}_{i}(x, y={rnd.randint(0, 9999)}):")
        out.append(f"    # {a} {b} step {rnd.random():.6f}")
        out.append(f"    return math.sqrt(abs(x * {rnd.random():.5f} + y)) + {rnd.randint(0, 99)}\n")
    out.append('if __name__ == "__main__":\n    print("seed:" + os.environ.get("SEED", "1"))\n')
    return "\n".join(out)


def wrapper_of(source: str) -> bytes:
    blob = base64.b85encode(lzma.compress(source.encode(), preset=9 | lzma.PRESET_EXTREME)).decode()
    return f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'.encode()


def size_log(
    seed: int,
    *,
    model: int,
    code: int,
    raw: int | None = None,
    bpb: float = 1.1,
    total: int | None = None,
    train_ms: int = 599_000,
    name_seed: int | None = None,
) -> str:
    lines = [
        "world_size:8 grad_accum_steps:1",
        f"seed:{seed}",
        f"step:5000/20000 train_loss:2.3 train_time:{train_ms - 100}ms step_avg:119.80ms",
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:5000/20000",
        f"Serialized model quantized+brotli: {model} bytes",
    ]
    if raw is not None:
        lines += [f"Code size (uncompressed): {raw} bytes", f"Code size (compressed): {code} bytes"]
    else:
        lines.append(f"Code size: {code} bytes")
    lines += [
        f"Total submission size quantized+brotli: {model + code if total is None else total} bytes",
        f"final_sliding_window val_loss:{bpb * 2.2:.4f} val_bpb:{bpb:.4f} eval_time:80000ms",
        f"final_sliding_window_exact val_loss:{bpb * 2.2:.8f} val_bpb:{bpb:.8f}",
        "",
    ]
    return "\n".join(lines)


def write_record(root: Path, code: bytes, logs: dict[str, str], claims: dict[int, float] | None = None) -> Path:
    folder = root / "records" / "track_10min_16mb" / "2026-04-30_Synthetic"
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_bytes(code)
    (folder / "README.md").write_text(
        "# Synthetic\n\n```bash\ntorchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    )
    if claims:
        meta = {
            "val_bpb": sum(claims.values()) / len(claims),
            "seed_results": {str(k): {"val_bpb": v} for k, v in claims.items()},
        }
        (folder / "submission.json").write_text(json.dumps(meta))
    for name, text in logs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def audit_size(folder: Path) -> str:
    """over / doubt / pass as the audit reports it (the size findings, by severity)."""
    rep = audit_submission(load_folder(str(folder)))
    size = [f for f in rep.findings if f.rule.split("/")[0] in ("PG210", "PG211", "PG214")]
    if any(f.severity is Severity.ERROR and f.category == "size_over_cap" for f in size):
        return OVER
    return DOUBT if any(f.severity is Severity.WARNING for f in size) else PASS


def verify_logs_only(folder: Path, tmp: Path):
    plan = make_plan(str(folder), str(tmp / "out"))
    return plan, build_report("logs-only", plan, logs_evidence(plan))


def verify_size(rep) -> str:
    st = {c.status for s in rep.seeds for c in s.checks if c.name == "size"}
    return OVER if Status.FAIL in st else DOUBT if Status.WARN in st else PASS


SEEDS = (42, 314, 1234)


# --- the size rule ---------------------------------------------------------------------------------------------
def test_a_compressed_wrapper_counts_as_its_own_bytes_and_both_tools_agree(tmp_path):
    source = big_script()
    wrapped = wrapper_of(source)
    assert len(source) + MODEL > CAP >= len(wrapped) + MODEL  # raw would not fit; the wrapper does
    logs = {
        f"train_seed{s}.log": size_log(s, model=MODEL + s, code=len(wrapped), raw=len(source), bpb=1.1 + s * 1e-6)
        for s in SEEDS
    }
    folder = write_record(tmp_path, wrapped, logs)
    plan, rep = verify_logs_only(folder, tmp_path)
    assert plan.code_bytes == len(wrapped)  # as shipped: the wrapper's own bytes
    assert verify_size(rep) == PASS == audit_size(folder)
    check = next(c for c in rep.seeds[0].checks if c.name == "size")
    assert check.measured == len(wrapped) + rep.seeds[0].facts.model_bytes
    assert "shipped code" in check.message


def test_raw_code_with_a_logged_compressed_total_passes_when_the_log_explains_the_files(tmp_path):
    source = big_script()
    packed = len(wrapper_of(source))
    logs = {f"train_seed{s}.log": size_log(s, model=MODEL, code=packed, raw=len(source)) for s in SEEDS}
    folder = write_record(tmp_path, source.encode(), logs)
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert verify_size(rep) == PASS == audit_size(folder)
    msg = next(c for c in rep.seeds[0].checks if c.name == "size").message
    assert f"logged total {MODEL + packed:,} bytes" in msg and "consistent with the files" in msg
    assert rep.verdict == "verified", rep.reason


def test_code_grown_since_the_run_is_added_uncompressed(tmp_path):
    source = big_script()
    packed = len(wrapper_of(source))
    grown = source + "# a comment added after the run\n" * 20  # +640 bytes, well within 5 %
    run = parse_log(size_log(1, model=MODEL, code=packed, raw=len(source))).last
    v = artifact_size(len(grown), run, code=grown.encode())
    assert v.status == PASS and v.basis == "log" and v.total == MODEL + packed + (len(grown) - len(source))
    tight = parse_log(size_log(1, model=CAP - packed - 100, code=packed, raw=len(source))).last
    assert artifact_size(len(grown), tight, code=grown.encode()).status == OVER  # the growth breaks the cap


def test_a_logged_total_that_does_not_explain_the_files_is_a_doubt_in_both_tools(tmp_path):
    source = big_script()
    # the log says it counted 100 code bytes: far below any compression of the shipped code, and no raw size
    logs = {f"train_seed{s}.log": size_log(s, model=MODEL, code=100) for s in SEEDS}
    folder = write_record(tmp_path, source.encode(), logs)
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert verify_size(rep) == DOUBT == audit_size(folder)
    # the log measured other code: 30 % less than the folder ships
    logs = {f"train_seed{s}.log": size_log(s, model=MODEL, code=20_000, raw=int(len(source) * 0.7)) for s in SEEDS}
    folder2 = write_record(tmp_path / "b", source.encode(), logs)
    _plan, rep2 = verify_logs_only(folder2, tmp_path / "b")
    assert verify_size(rep2) == DOUBT == audit_size(folder2)
    assert "not the code it measured" in next(c for c in rep2.seeds[0].checks if c.name == "size").message


def test_a_logged_total_over_the_cap_is_over_in_both_tools(tmp_path):
    logs = {f"train_seed{s}.log": size_log(s, model=CAP - 1000, code=2000) for s in SEEDS}
    folder = write_record(tmp_path, b"print('x')\n" * 180, logs)
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert verify_size(rep) == OVER == audit_size(folder) and rep.verdict == "failed"


def test_the_rule_for_a_rerun_reads_the_artifact_on_disk():
    run = parse_log(size_log(1, model=15_000_000, code=30_000, raw=150_000)).last
    assert artifact_size(150_000, run, model_on_disk=15_000_000).status == PASS  # consistent: the model it counted
    v = artifact_size(150_000, run, model_on_disk=15_900_000)  # the log counted another model than the file
    assert v.status == DOUBT and "on disk" in v.consistency
    assert artifact_size(10_000, None, model_on_disk=15_990_000).status == PASS  # exactly the cap
    assert artifact_size(10_000, None, model_on_disk=15_990_001).status == OVER
    assert artifact_size(10_000, None).status == "unknown"


# --- re-run logs of the same seed ----------------------------------------------------------------------------
def _logs_for(seeds, suffix: str, bpb0: float, **kw) -> dict[str, str]:
    return {
        f"train_seed{s}{suffix}.log": size_log(s, model=15_000_000 + s, code=40_000, bpb=bpb0 + s * 1e-6, **kw)
        for s in seeds
    }


def test_original_and_rerun_logs_of_the_same_seeds_are_recognised(tmp_path):
    logs = {
        **_logs_for(SEEDS, "_original", 1.1000, train_ms=599_600),
        **_logs_for(SEEDS, "_rerun", 1.1002, train_ms=592_000),
    }
    claims = {s: 1.1000 + s * 1e-6 for s in SEEDS}
    folder = write_record(tmp_path, b"print('x')\n" * 3636, logs, claims)
    plan, rep = verify_logs_only(folder, tmp_path)
    pkg = {c.name: c for c in rep.package}
    assert pkg["seeds_unique"].status == Status.PASS, pkg["seeds_unique"].message
    assert "train_seed42_rerun.log replaces train_seed42_original.log" in pkg["seeds_unique"].message
    assert sorted(s.source for s in rep.seeds) == sorted(f"train_seed{s}_rerun.log" for s in SEEDS)  # the latest counts
    assert pkg["seed_count"].status == Status.PASS and rep.verdict == "verified", rep.reason
    assert plan.logged_scores[42] == round(1.1002 + 42e-6, 8)
    assert plan.to_dict()["replaced_runs"]["train_seed42_original.log"]["by"] == "train_seed42_rerun.log"


def test_the_run_that_measured_the_shipped_code_is_the_later_one(tmp_path):
    code = b"print('x')\n" * 3636
    old = size_log(42, model=15_000_000, code=len(code) - 500, bpb=1.2)  # an earlier version of the script
    new = size_log(42, model=15_000_100, code=len(code), bpb=1.2001)
    folder = write_record(tmp_path, code, {"train_seed42_a.log": old, "train_seed42_b.log": new})
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert [s.source for s in rep.seeds] == ["train_seed42_b.log"]
    assert "measured the code as shipped" in next(c for c in rep.package if c.name == "seeds_unique").message


def test_identical_copies_count_once(tmp_path):
    log = size_log(1337, model=15_000_000, code=40_000)
    folder = write_record(tmp_path, b"print('x')\n" * 3636, {"train.log": log, "train_seed1337.log": log})
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert len(rep.seeds) == 1 and next(c for c in rep.package if c.name == "seeds_unique").status == Status.PASS


def test_an_eval_only_rerun_carries_its_training_run(tmp_path):
    train = size_log(0, model=15_000_000, code=40_000, bpb=1.0640)
    ttt = "\n".join(
        [
            "seed: 0",
            "TTT_EVAL_ONLY=1 — skipping training + GPTQ, loading saved artifact for TTT eval",
            "quantized_ttt_phased val_loss:2.32641216 val_bpb:1.06307957 eval_time:416500ms",
            "total_eval_time:416.5s",
            "",
        ]
    )
    folder = write_record(tmp_path, b"print('x')\n" * 3636, {"train_seed0.log": train, "ttt/seed_0.log": ttt})
    _plan, rep = verify_logs_only(folder, tmp_path)
    (seed,) = rep.seeds
    assert seed.source == "ttt/seed_0.log" and seed.facts.val_bpb == 1.06307957
    checks = {c.name: c.status for c in seed.checks}
    assert checks["train_time"] == Status.PASS and checks["size"] == Status.PASS  # from the training run
    assert seed.facts.trained_in == "train_seed0.log"


def test_two_unordered_runs_of_one_seed_still_fail(tmp_path):
    logs = {
        "train_a.log": size_log(42, model=15_000_000, code=40_000, bpb=1.2),
        "train_b.log": size_log(42, model=15_000_100, code=40_000, bpb=1.3),
    }
    folder = write_record(tmp_path, b"print('x')\n" * 3636, logs)
    _plan, rep = verify_logs_only(folder, tmp_path)
    c = next(c for c in rep.package if c.name == "seeds_unique")
    assert c.status == Status.FAIL and "nothing says which is the later" in c.message


def test_a_file_named_for_another_seed_is_a_duplicate_not_a_rerun(tmp_path):
    logs = {
        "train_seed42.log": size_log(42, model=15_000_000, code=40_000, bpb=1.2),
        "train_seed7_rerun.log": size_log(42, model=15_000_100, code=40_000, bpb=1.3),  # says seed 7, ran 42
    }
    folder = write_record(tmp_path, b"print('x')\n" * 3636, logs)
    _plan, rep = verify_logs_only(folder, tmp_path)
    assert next(c for c in rep.package if c.name == "seeds_unique").status == Status.FAIL


def test_a_claim_of_an_earlier_stage_is_scored_at_that_stage(tmp_path):
    def with_ttt(seed: int, bpb: float) -> str:
        return size_log(seed, model=15_000_000, code=40_000, bpb=bpb) + (
            f"final_int6_ttt val_loss:3.07421378 val_bpb:{1.33 + seed * 1e-6:.8f} eval_time:405410ms\n"
        )

    claims = {s: round(1.089 + s * 1e-6, 8) for s in SEEDS}
    logs = {f"train_seed{s}.log": with_ttt(s, claims[s]) for s in SEEDS}
    folder = write_record(tmp_path, b"print('x')\n" * 3636, logs, claims)
    plan, rep = verify_logs_only(folder, tmp_path)
    assert rep.verdict == "verified", rep.reason
    score = next(c for c in rep.seeds[0].checks if c.name == "score")
    assert score.status == Status.WARN and "final_sliding_window" in score.message and "final_int6_ttt" in score.message
    assert plan.claimed_tags == {s: "final_sliding_window_exact" for s in SEEDS}
