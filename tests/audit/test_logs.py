"""Log parser on short synthetic snippets, one per family of docs/logs.md §2 (written here)."""

from __future__ import annotations

import re
import textwrap

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit.engine import read_logs
from audit.load.folder import Folder
from audit.load.messages import _CODE_LINE, _may_be_code
from audit.logs import parse_log
from audit.logs.patterns import may_contain

SOURCE_ECHO = '''\
"""A training script, echoed into its own log."""
import os
import math


def main():
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")
    log0(f"stopping_early: wallclock_cap train_time:{t:.0f}ms step:{step}/{n}")
    return 0
'''


def log(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


FAMILY_A = log(
    """
    val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model
    train_loader:dataset:fineweb10B_sp1024 train_shards:80
    val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632
    model_params:17059912
    world_size:8 grad_accum_steps:1
    train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000
    seed:1337
    step:1/20000 train_loss:6.9300 train_time:70ms step_avg:70.00ms
    step:200/20000 train_loss:3.1000 train_time:8800ms step_avg:44.00ms
    step:13000/20000 val_loss:2.0700 val_bpb:1.2260 train_time:599990ms step_avg:46.15ms
    stopping_early: wallclock_cap train_time:600010ms step:13000/20000
    peak memory allocated: 10000 MiB reserved: 10300 MiB
    Serialized model: 67000000 bytes
    Code size: 47000 bytes
    Total submission size: 67047000 bytes
    Serialized model int8+zlib: 15800000 bytes (payload:17100000 raw_torch:17150000 payload_ratio:3.91x)
    Total submission size int8+zlib: 15847000 bytes
    final_int8_zlib_roundtrip val_loss:2.0800 val_bpb:1.2319 eval_time:1400ms
    final_int8_zlib_roundtrip_exact val_loss:2.08001234 val_bpb:1.23188765
    """
)


def test_family_a_baseline_fields():
    res = parse_log(SOURCE_ECHO + "=" * 100 + "\n" + FAMILY_A, "train.log")
    run = res.last
    assert len(res.runs) == 1
    assert run.seed == 1337 and run.world_size == 8
    assert run.stop_reason == "wallclock_cap" and run.train_time_ms == 600010
    assert run.val_tokens == 62021632 and run.peak_memory_mib == 10000 and run.model_params == 17059912
    assert run.artifact_bytes == 15847000  # the formatted total, not the raw 67 MB checkpoint line
    assert run.model_bytes == 15800000 and run.code_bytes == 47000
    assert run.scored.tag == "final_int8_zlib_roundtrip_exact" and run.scored.val_bpb == pytest.approx(1.23188765)
    assert run.scored.exact and run.scored.eval_time_ms == 1400  # inherited from the rounded line
    assert [s.kind for s in run.steps] == ["train", "train", "val"]
    assert run.hyperparams["train_seq_len"] == "1024"
    assert res.unmatched == []


def test_echoed_source_is_skipped_and_counted():
    res = parse_log(SOURCE_ECHO + "=" * 100 + "\n" + FAMILY_A)
    assert res.source_echo_lines == SOURCE_ECHO.count("\n")
    # the template lines inside the echo never become metrics or stops
    assert all("{" not in m.line for r in res.runs for m in r.metrics)
    assert all(e.lineno > SOURCE_ECHO.count("\n") for e in res.events)


def test_template_lines_without_echo_rule_do_not_match():
    text = '    log0(f"final_int8_zlib_roundtrip_exact val_loss:{a:.8f} val_bpb:{b:.8f}")\n'
    res = parse_log(text)
    assert res.last is None or res.last.metrics == []


def test_headless_echo_before_rule_is_skipped():
    cut = "        x = y + 1\n            val_loss_sum += loss * 1.0\n    return val_loss, val_bpb\n\ndef f():\n    import os\n    return 1\n"
    res = parse_log(FAMILY_A + cut + "=" * 100 + "\n")
    assert res.unmatched == []
    assert res.last.scored.val_bpb == pytest.approx(1.23188765)


def test_family_a_prime_tags_and_scored_choice():
    text = log(
        """
        seed:42
        DIAGNOSTIC post_ema val_loss:1.9000 val_bpb:1.1300 eval_time:2000ms
        Serialized model int6+zstd: 15500000 bytes
        Total submission size int6+zstd: 15560000 bytes
        final_int6_roundtrip val_loss:1.9500 val_bpb:1.1500 eval_time:6000ms
        final_int6_roundtrip_exact val_loss:1.95001111 val_bpb:1.15002222
        final_int6_sliding_window val_loss:1.9100 val_bpb:1.1300 stride:64 eval_time:75000ms
        final_int6_sliding_window_exact val_loss:1.91003333 val_bpb:1.13004444
        ttt_sliding:done val_loss=1.900000 val_bpb=1.125000 elapsed=400.5s
        legal_ttt_exact val_loss:1.90000123 val_bpb:1.12500456
        """
    )
    run = parse_log(text).last
    assert run.scored.tag == "legal_ttt_exact"
    diag = {m.tag for m in run.metrics if m.diagnostic}
    assert diag == {"DIAGNOSTIC post_ema", "ttt_sliding:done"}
    sw = next(m for m in run.metrics if m.tag == "final_int6_sliding_window")
    assert sw.stride == 64 and sw.eval_time_ms == 75000
    assert any(t.stage == "ttt_sliding:done" and t.seconds == 400.5 for t in run.eval_times)
    assert run.artifact_bytes == 15560000


FAMILY_B = log(
    """
    Hyperparameters:
      compressor: brotli
      seed: 314
      vocab_size: 8192
      world_size: 8
      max_wallclock_seconds: 600.0
    train_shards: 128
    val_tokens: 40540160
    model_params:35944602
    0/20000 val_loss: 9.0086 val_bpb: 3.4874
    1/20000 train_loss: 9.0089 train_time: 0.0m tok/s: 16515307
    4500/20000 train_loss: 2.8499 train_time: 8.9m tok/s: 6606485
    4867/20000 val_loss: 2.7700 val_bpb: 1.0723
    stopping_early: wallclock_cap train_time: 587193ms step: 4867/20000
    peak memory allocated: 40019 MiB reserved: 44090 MiB
    diagnostic pre-quantization post-ema val_loss:2.76877360 val_bpb:1.07184400 eval_time:5993ms
    Code size (uncompressed): 121884 bytes
    Code size (compressed): 27310 bytes
    Serialized model quantized+brotli: 15969354 bytes
    Total submission size quantized+brotli: 15996664 bytes
    diagnostic quantized val_loss:2.79823422 val_bpb:1.08324876 eval_time:45933ms
    ttt_progress: batch 778/782 batch_loss:2.7837 batch_bpb:1.1136 running_loss:2.7837 running_bpb:1.1136
    quantized_ttt_phased val_loss:2.77261000 val_bpb:1.07336388 eval_time:343300ms
    total_eval_time:390.2s
    """
)


def test_family_b_space_after_colon_and_minutes():
    res = parse_log(FAMILY_B)
    run = res.last
    assert run.seed == 314 and run.world_size == 8 and run.val_tokens == 40540160
    assert run.hyperparams["compressor"] == "brotli"
    assert run.train_time_ms == 587193
    step = next(s for s in run.steps if s.step == 4500)
    assert step.train_time_ms == pytest.approx(8.9 * 60000)  # minutes in B step lines
    assert run.code_bytes == 27310 and run.model_bytes == 15969354 and run.artifact_bytes == 15996664
    assert run.scored.tag == "quantized_ttt_phased" and run.scored.exact
    secs, timing = run.eval_seconds()
    assert secs == pytest.approx(390.2) and timing.stage == "total_eval_time"
    assert res.unmatched == []


def test_family_c_epoch_timestamp_prefix():
    stamped = "".join(f"1776143353.{i:03d} {line}\n" for i, line in enumerate(FAMILY_B.splitlines()))
    run = parse_log(stamped).last
    assert run.seed == 314 and run.scored.val_bpb == pytest.approx(1.07336388)


def test_family_d_torchrun_tee_prefix_and_size_block():
    text = log(
        """
        [default0]:seed:7
        [default0]:step:100/200 train_loss:3.0000 train_time:5000ms step_avg:50.00ms
        [default0]:stopping_early: wallclock_cap train_time:599000ms step:100/200
        [default0]:Packed code: 19646 bytes (raw=70361 bytes)
        [default0]:Model blob : 15979561 bytes
        [default0]:Submission size: 15999207 bytes
        [default0]:final_int6_roundtrip_exact val_loss:2.00000000 val_bpb:1.10000000
        """
    )
    run = parse_log(text).last
    assert run.seed == 7 and run.code_bytes == 19646 and run.model_bytes == 15979561
    assert run.artifact_bytes == 15999207 and run.train_time_ms == 599000


def test_family_e_ternary_key_value_dump():
    text = log(
        """
        --- Hyperparameters ---
        activation_type=relu2 adam_eps=1e-08 iterations=10000 seed=42 vocab_size=8192 train_seq_len=1024
        step:1000/10000 loss:3.3120 t:91478ms avg:91.5ms
        step:6530/10000 val_loss:3.0517 val_bpb:1.1816 train_time:599652ms zero_frac:0.336
        stopping_early: wallclock_cap train_time:599652ms step:6530/10000
        artifact:15.92MB ternary:64880640(14239486B) fp:2513744(2537376B) code:70853
        budget:15993853/16000000 (15.99/16.00MB) FITS
        final_ternary_roundtrip val_loss:3.0570 val_bpb:1.1837
        temp_scaling optimal_T:0.90 eval_time:146ms
        final_sliding val_loss:2.9869 val_bpb:1.1565 (stride=16, T=0.90) eval_time:429311ms
        """
    )
    res = parse_log(text)
    run = res.last
    assert run.seed == 42 and run.hyperparams["vocab_size"] == "8192"
    assert run.steps[0].train_time_ms == 91478  # `t:` is ms in this family
    assert run.artifact_bytes == 15993853 and not run.artifact_approx  # budget line, not the MB line
    assert run.code_bytes == 70853
    assert run.scored.tag == "final_sliding" and run.scored.stride == 16 and run.scored.eval_time_ms == 429311
    assert res.unmatched == []


def test_family_f_one_offs():
    text = log(
        """
        Raw model: 60000000 bytes | Code: 70969 bytes | Total: 60070969
        INT7+zlib model: 15370972 bytes | Total submission: 15441941 bytes
        final_INT7_zlib_roundtrip val_loss:2.0800 val_bpb:1.2353
        serialize_wallclock: 81.356s
        artifact_production_wallclock: 844.584s (must be < 600.0)
        wallclock:post_gptq total_elapsed:864.3s train_budget:600.0s
        """
    )
    run = parse_log(text).last
    assert run.artifact_bytes == 15441941 and run.model_bytes == 15370972
    stages = {w.stage: w.seconds for w in run.wallclocks}
    assert stages["artifact_production_wallclock"] == pytest.approx(844.584)
    assert stages["post_gptq_total_elapsed"] == pytest.approx(864.3)


def test_summary_log_with_json_fragments_and_seeds():
    text = log(
        """
        [19:23:20] RUN seed=42
        === seed=42 result ===
        {
          "seed": 42,
          "post_ttt_val_bpb": 1.06400238,
          "post_ttt_eval_time_ms": 525719
        }
        [19:35:17] RUN seed=0
        === seed=0 result ===
        {
          "seed": 0,
          "post_ttt_val_bpb": 1.06307957
        }
        """
    )
    res = parse_log(text)
    assert [r.seed for r in res.runs] == [42, 0]
    assert all(r.scored is None for r in res.runs)  # summaries repeat numbers: never the score
    assert res.runs[0].metrics[0].val_bpb == pytest.approx(1.06400238)


def test_concatenated_runs_report_each_and_use_last():
    first = FAMILY_A.replace("seed:1337", "seed:1").replace("1.23188765", "1.30000000")
    res = parse_log(SOURCE_ECHO + "=" * 100 + "\n" + first + SOURCE_ECHO + "=" * 100 + "\n" + FAMILY_A)
    assert len(res.runs) == 2
    assert res.runs[0].seed == 1 and res.runs[0].scored.val_bpb == pytest.approx(1.3)
    assert res.last.seed == 1337 and res.last.scored.val_bpb == pytest.approx(1.23188765)


def test_step_counter_reset_splits_runs_without_banner():
    text = "step:500/500 train_loss:3.0 train_time:1000ms\nfinal_x_exact val_loss:2.0 val_bpb:1.2\nstep:1/500 train_loss:6.0 train_time:10ms\n"
    assert len(parse_log(text).runs) == 2


def test_pr_pretty_printer_family():
    text = log(
        """
        step  1000/5120 | loss 5.5628 | lr 0.008954 | tok/s 4,627,982 | elapsed 1m53.20s
        [QUANT] Total artifact size:   15,921,334 bytes
        final_int8_zlib_roundtrip_exact val_bpb 1.0500312
        """
    )
    run = parse_log(text).last
    assert run.steps[0].train_time_ms == pytest.approx(113200)
    assert run.artifact_bytes == 15921334
    assert run.scored.val_loss is None and run.scored.val_bpb == pytest.approx(1.0500312)


def test_unmatched_data_lines_are_listed():
    res = parse_log("something odd happened: 123 bytes lost\nplain line\n")
    assert res.unmatched == [(1, "something odd happened: 123 bytes lost")]
    assert res.data_lines == 1


def test_nvidia_smi_rows_are_not_data():
    res = parse_log("| N/A   33C    P0   120W /  700W |    1516MiB / 81559MiB |      0%      Default |\n")
    assert res.data_lines == 0 and res.events[0].kind == "nvidia-smi"


def test_events_carry_line_numbers_and_kinds():
    res = parse_log(FAMILY_B)
    ev = {e.kind for e in res.events}
    assert {"stop_early", "metric", "progress", "hparam_kv"} <= ev
    stop = next(e for e in res.events if e.kind == "stop_early")
    assert FAMILY_B.splitlines()[stop.lineno - 1] == stop.text


def test_the_logs_stage_reads_every_log_file_once():
    sub = Folder(name="x", files={"train.log": FAMILY_A.encode(), "README.md": b"# r"}, sizes={})
    logs = read_logs(sub)
    assert list(logs.results) == ["train.log"]
    assert logs.results["train.log"].runs
    assert all(path == "train.log" for path, *_ in logs.lines)


def test_long_log_keeps_every_step():
    body = "".join(f"step:{i}/20000 train_loss:3.0 train_time:{i * 40}ms step_avg:40.00ms\n" for i in range(1, 20001))
    res = parse_log("seed:5\n" + body)
    assert len(res.runs) == 1 and len(res.last.steps) == 20000
    assert res.last.train_time_ms == 800000 and res.last.stop_reason == "iterations"


# --- the word filter in front of whole-log `(?i)` scans --------------------------------------------------------
@settings(max_examples=400, deadline=None)
@example("ıs", ("is",))
@example("MAX_WALL", ("max_wall",))
@example("ſ", ("s",))
@given(
    st.text(alphabet=st.sampled_from(list("maxwlockisgptqMAXWLOCKISİıKſ_ :=0")), max_size=12),
    st.sampled_from([("max_wall",), ("gptq", "calib"), ("kick",), ("is",), ("s",)]),
)
def test_may_contain_is_never_false_where_an_ignorecase_pattern_matches(text, words):
    pattern = re.compile("(?i)" + "|".join(map(re.escape, words)))
    if pattern.search(text):
        assert may_contain(text, words)


@settings(max_examples=400, deadline=None)
@example("  return x")
@example("\u2003def f")
@example("log_x (1)")
@example('f"{x}"')
@given(
    st.lists(
        st.sampled_from(
            [
                "def",
                "if",
                "log0",
                "print",
                "(",
                "f'",
                '"',
                "'",
                "f",
                "lo",
                "g",
                "pr",
                "int",
                " ",
                "\u2003",
                "\t",
                "x",
                "=",
            ]
        )
    )
)
def test_the_code_line_filter_passes_every_line_the_pattern_matches(parts):
    line = "".join(parts)
    if _CODE_LINE.search(line):
        assert _may_be_code(line)
