"""Claims vs logs on small synthetic submissions (README, submission.json and logs written here)."""

from __future__ import annotations

import json
import textwrap

from audit.checks.claims import (
    ClaimedValue,
    extract_claims,
    value_matches,
)
from audit.checks.claims import check_claims as _check_claims
from audit.findings import Severity
from audit.load.folder import Folder
from audit.load.resolve import resolve
from tests.support import make_submission


def run_log(
    seed: int,
    bpb: str,
    *,
    loss: str = "2.06000000",
    train_ms: int = 599500,
    total: int = 15_900_000,
    model: int = 15_850_000,
    tokens: int = 62_021_632,
    eval_ms: int = 70000,
) -> str:
    return textwrap.dedent(
        f"""\
        val_loader:shards pattern=./data/fineweb_val_*.bin tokens:{tokens}
        world_size:8 grad_accum_steps:1
        seed:{seed}
        step:13000/20000 train_loss:2.1000 train_time:{train_ms - 40}ms step_avg:46.00ms
        stopping_early: wallclock_cap train_time:{train_ms}ms step:13000/20000
        Serialized model int8+zlib: {model} bytes (payload:1 raw_torch:1 payload_ratio:1.00x)
        Code size: 50000 bytes
        Total submission size int8+zlib: {total} bytes
        final_sliding_window val_loss:2.0600 val_bpb:{bpb[:6]} stride:64 eval_time:{eval_ms}ms
        final_sliding_window_exact val_loss:{loss} val_bpb:{bpb}
        """
    )


def ratio_loss(bpb: float, tokens: int = 62_021_632, split_bytes: float = 151_080_000) -> str:
    """val_loss consistent with the full split: val_loss / val_bpb = ln2 * bytes / token."""
    import math

    return f"{bpb * math.log(2) * split_bytes / tokens:.8f}"


def make_sub(
    logs: dict[str, str],
    sub_json: dict | None = None,
    readme: str = "",
    name: str = "records/track_10min_16mb/x",
    code: bytes = b"print('hi')\n",
) -> Folder:
    files: dict[str, str | bytes] = {**logs, "train_gpt.py": code}
    if sub_json is not None:
        files["submission.json"] = json.dumps(sub_json, indent=2)
    if readme:
        files["README.md"] = readme
    return make_submission(files, name=name)


def check_claims(sub: Folder):
    """The claims check as the engine runs it: after source resolution (train_gpt.py is the code)."""
    return _check_claims(sub, resolve(sub))


def three_seeds(**kw) -> dict[str, str]:
    vals = {1337: "1.15000000", 42: "1.15300000", 2025: "1.15400000"}
    return {f"train_seed{s}.log": run_log(s, v, loss=ratio_loss(float(v)), **kw) for s, v in vals.items()}


def rules(rep) -> list[str]:
    return [f.rule for f in rep.findings]


def test_value_matching_rounding_and_truncation():
    c = ClaimedValue(1.1234, "1.1234", "README.md", 1, "")
    assert value_matches(c, 1.12344) and value_matches(c, 1.12336) and value_matches(c, 1.12349)
    assert not value_matches(c, 1.1236)


def test_honest_three_seed_submission_has_no_warnings():
    sub = make_sub(three_seeds(), {"val_bpb": 1.1523, "seeds": [1337, 42, 2025], "bytes_total": 15900000})
    rep = check_claims(sub)
    assert [f for f in rep.findings if f.severity is not Severity.INFO] == []
    s = rep.summary
    assert s.claimed_bpb == 1.1523 and s.matched_tag.startswith("mean of")
    assert s.seeds == [42, 1337, 2025] and s.n_logs == 3 and s.tokenizer == "sp1024"
    assert s.artifact_bytes == 15900000 and s.train_seconds == 599.5 and s.eval_seconds == 70.0
    assert s.to_dict()["per_seed"]["42"] == 1.153
    assert "claimed 1.1523" in s.line()


def test_claim_absent_from_logs_is_reported_with_the_claim_line():
    sub = make_sub(three_seeds(), {"val_bpb": 1.1400})
    rep = check_claims(sub)
    f = next(f for f in rep.findings if f.rule == "PG201/claim-not-in-logs")
    assert f.severity is Severity.WARNING and f.category is None
    assert f.location.path == "submission.json" and '"val_bpb"' in f.location.snippet


def test_exact_claim_reports_matching_tag():
    sub = make_sub(three_seeds(), {"val_bpb": 1.153})
    rep = check_claims(sub)
    assert rep.summary.matched_tag == "final_sliding_window_exact"


def test_per_seed_mismatch_from_seed_results():
    claims = {
        "val_bpb": 1.1523,
        "seed_results": {"1337": {"val_bpb": 1.15}, "42": {"val_bpb": 1.1490}, "2025": {"val_bpb": 1.154}},
    }
    rep = check_claims(make_sub(three_seeds(), claims))
    mism = [f for f in rep.findings if f.rule == "PG202/seed-value-mismatch"]
    assert len(mism) == 1 and "seed 42" in mism[0].message and "1.149" in mism[0].message
    assert mism[0].location.path == "train_seed42.log"


def test_readme_seed_table_is_checked():
    readme = "# r\n\n**val_bpb: 1.1523**\n\n| Seed | val_bpb | bytes |\n|---|---|---|\n| 1337 | 1.1500 | 1 |\n| 42 | 1.1600 | 2 |\n"
    rep = check_claims(make_sub(three_seeds(), None, readme))
    mism = [f for f in rep.findings if f.rule == "PG202/seed-value-mismatch"]
    assert [("seed 42" in f.message) for f in mism] == [True]
    assert any(e.path == "README.md" and e.start_line == 8 for e in mism[0].evidence)


def test_seed_label_contradicted_by_printed_seed():
    logs = three_seeds()
    logs["train_seed7.log"] = logs.pop("train_seed2025.log")
    rep = check_claims(make_sub(logs, {"val_bpb": 1.1523}))
    f = next(f for f in rep.findings if f.rule == "PG203/seed-label-mismatch")
    assert "seed 7" in f.message and "2025" in f.message


def test_duplicated_run_presented_as_two_seeds():
    logs = three_seeds()
    logs["train_seed99.log"] = logs["train_seed42.log"]
    rep = check_claims(make_sub(logs, {"val_bpb": 1.1523}))
    f = next(f for f in rep.findings if f.rule == "PG204/duplicate-run")
    assert f.severity is Severity.WARNING and "different seeds" in f.message


def test_fewer_logs_than_claimed_seeds():
    logs = three_seeds()
    del logs["train_seed2025.log"]
    rep = check_claims(make_sub(logs, {"val_bpb": 1.1523, "seeds": [1337, 42, 2025]}))
    f = next(f for f in rep.findings if f.rule == "PG205/missing-seed-logs")
    assert "2025" in f.message


def test_artifact_over_cap_is_an_error():
    logs = three_seeds(total=16_000_001, model=15_950_001)
    rep = check_claims(make_sub(logs, {"val_bpb": 1.1523}, code=b"#" * 50_000))
    f = next(f for f in rep.findings if f.rule == "PG210/size-over-cap")
    assert f.severity is Severity.ERROR and f.category == "size_over_cap"
    assert "16,000,001" in f.message and f.location.snippet.startswith("Total submission size")


def test_size_line_older_than_repacked_code_still_breaks_the_cap():
    logs = three_seeds(total=16_000_001, model=15_950_001)  # the log counted 50,000 code bytes
    rep = check_claims(make_sub(logs, {"val_bpb": 1.1523}, code=b"#" * 20_000))
    assert "PG210/size-over-cap" not in rules(rep)
    f = next(f for f in rep.findings if f.rule == "PG214/stale-size-line")
    # the scored run's artifact was over the cap; repacking the code later is noted, not excused
    assert f.severity is Severity.ERROR and f.category == "size_over_cap" and "would fit" in f.message


def test_shipped_code_plus_model_over_cap():
    rep = check_claims(make_sub(three_seeds(model=15_990_000), {"val_bpb": 1.1523}, code=b"#" * 20_000))
    f = next(f for f in rep.findings if f.rule == "PG211/shipped-size-over-cap")
    assert f.category is None and f.severity is Severity.WARNING and "16,010,000" in f.message


def test_claimed_bytes_over_cap_and_not_in_logs():
    rep = check_claims(make_sub(three_seeds(), {"val_bpb": 1.1523, "bytes_total": 16_100_000}))
    assert "PG213/claimed-size-over-cap" in rules(rep)
    assert "PG212/byte-claim-not-in-logs" in rules(rep)


def test_train_time_over_cap_beyond_one_step():
    ok = check_claims(make_sub(three_seeds(train_ms=600_040), {"val_bpb": 1.1523}))
    assert "PG220/train-time-over-cap" not in rules(ok)  # one-step overshoot of the wallclock check
    bad = check_claims(make_sub(three_seeds(train_ms=612_000), {"val_bpb": 1.1523}))
    f = next(f for f in bad.findings if f.rule == "PG220/train-time-over-cap")
    assert (
        f.severity is Severity.ERROR
        and f.category == "time_over_cap"
        and f.location.snippet.startswith("stopping_early")
    )


def test_non_record_track_time_is_informational():
    sub = make_sub(three_seeds(train_ms=14_400_000), {"val_bpb": 1.1523}, name="records/track_non_record_16mb/y")
    f = next(f for f in check_claims(sub).findings if f.rule == "PG220/train-time-over-cap")
    assert f.severity is Severity.INFO and f.category is None


def test_eval_time_over_cap():
    rep = check_claims(make_sub(three_seeds(eval_ms=601_000), {"val_bpb": 1.1523}))
    f = next(f for f in rep.findings if f.rule == "PG221/eval-time-over-cap")
    assert f.category == "time_over_cap" and "601.0 s" in f.message


def test_val_subset_is_a_tokenizer_bpb_bug():
    logs = {
        "train.log": run_log(
            1, "1.15000000", loss=ratio_loss(1.15, 8_000_000, 151_080_000 * 8 / 62.02), tokens=8_000_000
        )
    }
    rep = check_claims(make_sub(logs, {"val_bpb": 1.15}))
    f = next(f for f in rep.findings if f.rule == "PG230/val-subset")
    assert f.severity is Severity.ERROR and f.category == "tokenizer_bpb_bug" and "8,000,000" in f.message


PREP = """import argparse
ap = argparse.ArgumentParser()
ap.add_argument("--val-docs", type=int, default=%s)
def shard_name(i):
    return f"fineweb_val_{i:06d}.bin"
"""


def test_val_subset_from_own_split_builder_is_a_wrong_split():
    logs = {
        "train.log": run_log(
            1, "1.15000000", loss=ratio_loss(1.15, 8_000_000, 151_080_000 * 8 / 62.02), tokens=8_000_000
        )
    }
    sub = make_sub(logs, {"val_bpb": 1.15})
    sub.files["prepare_data.py"] = (PREP % "10_000").encode()
    f = next(f for f in check_claims(sub).findings if f.rule == "PG232/val-split-mismatch")
    assert f.category == "other" and "prepare_data.py" in f.message
    # a builder that exports the challenge's 50,000 documents does not explain the subset: still PG230
    sub.files["prepare_data.py"] = (PREP % "50_000").encode()
    assert "PG230/val-subset" in rules(check_claims(sub))


def test_per_seed_score_dict_counts_as_claimed_seeds():
    # the claimed stage (a mixer) is printed before the last scored line (plain sliding window), as in real logs
    logs = {
        f"train_seed{s}.log": run_log(s, "1.10000000")
        + f"quantized_mixer val_loss:2.30000000 val_bpb:{v}\n"
        + "final_sliding_window_exact val_loss:2.06000000 val_bpb:1.10000000\n"
        for s, v in ((1, "1.01000000"), (2, "1.02000000"))
    }
    claimed = {"val_bpb": 1.015, "artifact_bytes_per_seed": {"1": 15_000_000, "2": 15_000_001}}
    # with no per-seed scores the headline is still the mean of a stage both seeds print (subset means)
    rep = check_claims(make_sub(logs, claimed))
    assert "PG201/claim-not-in-logs" not in rules(rep) and rep.summary.matched_tag.endswith("(quantized_mixer)")
    claimed["val_bpb_per_seed"] = {"1": 1.01, "2": 1.02}
    rep = check_claims(make_sub(logs, claimed))
    assert "PG201/claim-not-in-logs" not in rules(rep) and rep.summary.matched_tag == "mean of 2 claimed seeds"
    claimed["val_bpb"] = 1.05  # no stage, seed or set of seeds gives it
    assert "PG201/claim-not-in-logs" in rules(check_claims(make_sub(logs, claimed)))


def test_inflated_byte_count_on_full_split():
    logs = {"train.log": run_log(1, "1.15000000", loss=ratio_loss(1.15, split_bytes=151_080_000 * 1.04))}
    rep = check_claims(make_sub(logs, {"val_bpb": 1.15}))
    f = next(f for f in rep.findings if f.rule == "PG231/byte-accounting")
    assert f.category == "tokenizer_bpb_bug" and "+4.00%" in f.message


def test_ratio_without_token_count_uses_vocab_family():
    text = "seed=1 a=1 b=2 c=3 d=4 vocab_size=1024 e=5\nfinal_sliding val_loss:2.1000 val_bpb:1.1000\n"
    rep = check_claims(make_sub({"log.txt": text}, {"val_bpb": 1.1}))
    f = next(f for f in rep.findings if f.rule == "PG234/bytes-per-token-mismatch")
    assert f.severity is Severity.WARNING and f.category == "tokenizer_bpb_bug"


def test_claims_layouts_seeds_and_scores_lists():
    data = {"mean_bpb": 1.2, "seeds": [1, 2], "seed_scores": [1.19, 1.21], "bytes_total": 15000000}
    sub = make_sub({}, data)
    c = extract_claims(sub)
    assert c.headline_bpb.value == 1.2 and c.seeds == [1, 2]
    assert [v.value for v in c.per_seed_bpb[2]] == [1.21]
    assert int(c.total_bytes.value) == 15000000


def test_claims_nested_rerun_seed_results():
    data = {"val_bpb": 1.06, "compliance_rerun": {"seed_results": {"42": {"val_bpb": 1.0608}}}}
    c = extract_claims(make_sub({}, data))
    assert c.per_seed_bpb[42][0].value == 1.0608


def test_summary_dict_is_serialisable():
    rep = check_claims(make_sub(three_seeds(), {"val_bpb": 1.1523}))
    json.dumps(rep.summary.to_dict())


def test_no_logs_no_crash():
    rep = check_claims(make_sub({}, {"val_bpb": 1.0, "seeds": [1]}))
    assert "PG201/claim-not-in-logs" in rules(rep) and "PG205/missing-seed-logs" in rules(rep)
    assert rep.summary.n_logs == 0
