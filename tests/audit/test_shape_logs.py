"""Logs printed by code that is not shipped (RULES.md "The four conditions, and the shapes real submissions give
them"): whole-template log proof, the needs-human finding that quotes the lines, and the legal neighbours that
must stay quiet (renamed tags of an edited script, launcher chatter, an echo of the shipped script)."""

from __future__ import annotations

import ast
import textwrap

from audit.engine import audit_submission
from audit.load.messages import explained, log_templates, shell_templates
from tests.support import make_submission


def _templates(code: str):
    code = textwrap.dedent(code)
    return log_templates(ast.parse(code), "train_gpt.py", code)


def _explains(code: str, line: str) -> bool:
    return explained(line, _templates(code)) is not None


# --- whole templates ------------------------------------------------------------------------------------------


def test_fstring_template_matches_whole_line_only():
    code = 'log0(f"final_int8_zlib_roundtrip_exact val_loss:{a:.8f} val_bpb:{b:.8f}")\n'
    assert _explains(code, "final_int8_zlib_roundtrip_exact val_loss:1.00000000 val_bpb:0.50000000")
    assert not _explains(code, "final_int6_ttt_exact val_loss:1.00000000 val_bpb:0.50000000")


def test_conditional_fragment_gives_each_alternative():
    code = """
        def report(log0, ttt, loss):
            log0(f"final_{'ttt' if ttt else 'base'}_exact val_loss:{loss:.8f}")
    """
    assert _explains(code, "final_ttt_exact val_loss:1.00000000")
    assert _explains(code, "final_base_exact val_loss:1.00000000")
    assert not _explains(code, "final_slot_exact val_loss:1.00000000")


def test_plus_percent_and_format_templates():
    code = """
        import logging
        logger = logging.getLogger()
        def report(log0, n, t):
            log0("ttt:start chunks=" + str(n) + " lr=" + str(t))
            logger.info("cache:built %d entries in %.1fs", n, t)
            print("mixer:{} experts, eta={}".format(n, t))
    """
    assert _explains(code, "ttt:start chunks=12 lr=0.001")
    assert _explains(code, "cache:built 400 entries in 1.5s")
    assert _explains(code, "mixer:3 experts, eta=0.1")


def test_message_built_in_a_local_and_print_arguments():
    code = """
        def report(n, bpb):
            msg = f"ngram_eval:order={n}"
            msg += f" bpb={bpb:.4f}"
            print(msg)
            print("seed", n, "done")
    """
    assert _explains(code, "ngram_eval:order=7 bpb=1.1000")
    assert _explains(code, "seed 42 done")


def test_short_and_multiline_templates():
    code = 'print(f"ttt:done\\nfinal {x}")\nprint(f"{k}:{v}")\n'
    assert _explains(code, "ttt:done")
    assert _explains(code, "final 1.23")


def test_fstring_with_pep701_quotes_is_read_from_its_source_text():
    # Python 3.12 lets an f-string reuse its quote inside the braces; older parsers blank it, the template is
    # then rebuilt from the source line
    code = 'log0(f"ttt_eval:{d["mode"]} bpb={d["bpb"]:.4f}")\n'
    from audit.load import parse as pyparse

    tree, _ = pyparse.parse(code)
    templates = log_templates(tree, "train_gpt.py", code)
    assert explained("ttt_eval:score_first bpb=1.0900", templates) is not None


def test_wrapper_passing_its_argument_explains_nothing():
    code = """
        def log0(msg, console=True):
            print(msg)
        log0(f"seed:{1}")
    """
    templates = _templates(code)
    assert explained("anything at all", templates) is None
    assert explained("seed:1", templates) is not None


def test_shell_echo_templates():
    sh = 'echo "=== RUN seed=$SEED on ${NGPU} GPUs ==="\nprintf "verified %s shards\\n" "$N"\n'
    ts = shell_templates(sh, "run.sh")
    assert explained("=== RUN seed=42 on 8 GPUs ===", ts) is not None


# --- the finding ----------------------------------------------------------------------------------------------

_BASELINE = """
def main(log0, step, loss, bpb):
    log0(f"step:{step} train_loss:{loss:.4f}")
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
main(print, 1, 1.0, 1.0)
"""


def _audit(files: dict[str, str]):
    return audit_submission(make_submission(files))


def _pg008(rep):
    return [f for f in rep.findings if f.rule.startswith("PG008")]


def test_scored_line_of_other_code_needs_a_human_and_quotes_it():
    log = "step:1 train_loss:3.1000\nttt:start chunks=10\nfinal_int6_ttt_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    rep = _audit({"train_gpt.py": _BASELINE, "train.log": log})
    found = _pg008(rep)
    assert found and found[0].severity.value == "warning"
    assert "final_int6_ttt_exact" in found[0].message
    assert found[0].location.path == "train.log" and found[0].location.start_line == 3
    assert rep.verdict == "needs-human"


def test_mechanism_messages_of_other_code_need_a_human():
    log = "step:1 train_loss:3.1000\nTTT: epochs=3 lr=0.001\nttt:params unfrozen=100 frozen=9\n"
    log += "final_int8_zlib_roundtrip_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    rep = _audit({"train_gpt.py": _BASELINE, "train.log": log})
    assert _pg008(rep) and rep.verdict == "needs-human"


def test_prefill_from_training_shards_by_other_code_is_train_data_at_eval():
    log = (
        "step:1 train_loss:3.1000\n"
        "prefilling n-gram tables from training shards (frozen oracle)...\n"
        "final_oracle_mix_exact val_loss:0.05000000 val_bpb:0.03000000\n"
    )
    rep = _audit({"train_gpt.py": _BASELINE, "train.log": log})
    assert rep.verdict == "flag" and "train_data_at_eval" in rep.categories
    assert _pg008(rep)


def test_a_helper_script_of_the_folder_explains_the_lines_it_prints_and_is_read_only_for_them(monkeypatch):
    # `ttt_eval.py` is no program source (nothing imports it): its prints still explain the log's lines
    helper = 'def run(l, b):\n    print(f"final_int6_ttt_exact val_loss:{l:.8f} val_bpb:{b:.8f}")\n'
    log = "step:1 train_loss:3.1000\nfinal_int6_ttt_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    assert not _pg008(_audit({"train_gpt.py": _BASELINE, "ttt_eval.py": helper, "train.log": log}))
    assert _pg008(_audit({"train_gpt.py": _BASELINE, "train.log": log}))  # without it: printed by other code
    # a log the program explains line by line never needs the other files: they are not parsed for it
    import audit.checks.logsource as logsource

    read: list[str] = []
    original = logsource._other_py_templates
    monkeypatch.setattr(logsource, "_other_py_templates", lambda f, s: read.append(f.name) or original(f, s))
    quiet = "step:1 train_loss:3.1000\nfinal_int8_zlib_roundtrip_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    assert not _pg008(_audit({"train_gpt.py": _BASELINE, "ttt_eval.py": helper, "train.log": quiet})) and not read
    assert _audit({"train_gpt.py": _BASELINE, "ttt_eval.py": helper, "train.log": log}) and read


def test_renamed_tag_of_an_edited_script_is_not_other_code():
    # the log came from an earlier edit that named the stage differently: every word is still the script's own
    code = _BASELINE + 'def ttt(log0, l, b):\n    log0(f"final_int8_ttt_lora val_loss:{l:.4f} val_bpb:{b:.4f}")\n'
    log = "step:1 train_loss:3.1000\nfinal_ttt_lora val_loss:0.5000 val_bpb:0.3000\n"
    assert not _pg008(_audit({"train_gpt.py": code, "train.log": log}))


def test_launcher_and_library_chatter_is_not_other_code():
    log = (
        "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default\n"
        "Thu Mar 19 10:17:46 2026\n"
        "remote: Enumerating objects: 206, done.\n"
        "[modal] Launching torchrun on 8xH100...\n"
        "step:1 train_loss:3.1000\n"
        "W0327 07:07:04.379000 1885 torch/_dynamo/convert_frame.py:844] hit config.cache_size_limit (8)\n"
        "/usr/lib/torch/_inductor/utils.py:12: UserWarning: expert cache disabled for mixed dtypes\n"
        "final_int8_zlib_roundtrip_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    )
    assert not _pg008(_audit({"train_gpt.py": _BASELINE, "train.log": log}))


def test_launcher_preamble_before_the_scripts_first_line_does_not_count():
    log = (
        "=== FULL RUN (8xGPU) ===\n"
        "verified train_shards=80 val_shards=1\n"
        "Train script: /workspace/records/ngram_cache_run/train_gpt.py\n"
        "step:1 train_loss:3.1000\n"
        "final_int8_zlib_roundtrip_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    )
    assert not _pg008(_audit({"train_gpt.py": _BASELINE, "train.log": log}))


def test_a_log_with_no_line_of_the_shipped_script_counts_whole():
    log = "TTT: epochs=3 lr=0.001\nttt:params unfrozen=100 frozen=9\n"
    assert _pg008(_audit({"train_gpt.py": _BASELINE, "train.log": log}))


def test_one_unexplained_mechanism_line_is_not_enough():
    log = "verified train_shards=80 val_shards=1\nstep:1 train_loss:3.1000\n"
    assert not _pg008(_audit({"train_gpt.py": _BASELINE, "train.log": log}))


def test_conditional_tag_printed_by_the_shipped_code_is_explained():
    code = _BASELINE + (
        "def final(log0, ttt, l):\n"
        "    log0(f\"final_{'ttt_lora' if ttt else 'plain'}_exact val_loss:{l:.8f} val_bpb:{l:.8f}\")\n"
        "    log0(f'ttt:start chunks={l}')\n"
        "    log0(f'TTT: epochs={l} lr={l}')\n"
    )
    log = "TTT: epochs=3 lr=0.1\nttt:start chunks=5\nfinal_ttt_lora_exact val_loss:0.50000000 val_bpb:0.30000000\n"
    assert not _pg008(_audit({"train_gpt.py": code, "train.log": log}))


_ECHO_HEAD = "import os\nimport sys\nimport math\n"


def _echo_log(source: str) -> str:
    return source + "=" * 100 + "\nstep:1 train_loss:3.1000\n"


def test_echo_of_the_shipped_script_is_quiet_and_an_edit_too():
    code = _ECHO_HEAD + _BASELINE
    assert not _pg008(_audit({"train_gpt.py": code, "train.log": _echo_log(code)}))
    edited = code.replace("main(print, 1, 1.0, 1.0)", "main(print, 2, 1.0, 1.0)")
    assert not _pg008(_audit({"train_gpt.py": code, "train.log": _echo_log(edited)}))


def test_echo_of_another_program_needs_a_human():
    other = _ECHO_HEAD + "".join(
        f"def stage_{i}(x):\n    return x * {i}\n" for i in range(12)
    )  # a different program, most of whose lines are in no shipped file
    code = _ECHO_HEAD + _BASELINE
    found = _pg008(_audit({"train_gpt.py": code, "train.log": _echo_log(other)}))
    assert found and "echo" in found[0].message


def test_echo_of_lines_longer_than_the_parser_reads_is_compared_as_written():
    """The parser matches the first MAX_LINE_CHARS characters of a line; the echo is compared whole: a shipped
    script of long literal lines, echoed, is the shipped script."""
    from audit.logs.patterns import MAX_LINE_CHARS

    tables = "".join(f"TABLE_{i} = {list(range(i, i + MAX_LINE_CHARS // 3))}\n" for i in range(200))
    code = _ECHO_HEAD + tables + _BASELINE
    assert not _pg008(_audit({"train_gpt.py": code, "train.log": _echo_log(code)}))


# --- negative log evidence --------------------------------------------------------------------------------------


def _pg106(code: str, logs: dict[str, str]):
    files = {"train_gpt.py": textwrap.dedent(code), **logs}
    rep = audit_submission(make_submission(files), select={"PG106"})
    return [f for f in rep.findings if f.rule.startswith("PG106")]


def test_mechanism_whose_first_message_no_log_prints_is_lowered_to_a_warning():
    from audit.rules.pg106_train_data_at_eval import _SILENT_CALIBRATION

    logs = {
        "train_seed1.log": "step:6000 train_loss:2.1\ntraining done, exporting the model step:6000\n",
        "train_seed2.log": "step:6100 train_loss:2.0\ntraining done, exporting the model step:6100\n",
    }
    found = _pg106(_SILENT_CALIBRATION, logs)
    assert [f.severity.value for f in found] == ["warning"]
    assert "may not have run" in found[0].message
    assert any(e.path == "train_seed1.log" and e.start_line == 2 for e in found[0].evidence)


def test_mechanism_that_prints_its_first_message_keeps_its_error():
    from audit.rules.pg106_train_data_at_eval import _SILENT_CALIBRATION

    logs = {
        "train_seed1.log": "training done, exporting the model step:6000\ncalibration:collecting hessians over 256 "
        "batches\n",
        "train_seed2.log": "training done, exporting the model step:6100\n",  # one log without it is not enough
    }
    assert [f.severity.value for f in _pg106(_SILENT_CALIBRATION, logs)] == ["error"]


def test_log_that_stops_before_the_mechanism_says_nothing():
    from audit.rules.pg106_train_data_at_eval import _SILENT_CALIBRATION

    logs = {"train.log": "step:100 train_loss:4.0\n"}  # the run (or the log) ended before the line before it
    assert [f.severity.value for f in _pg106(_SILENT_CALIBRATION, logs)] == ["error"]


def test_silent_mechanism_needs_an_unconditional_first_message():
    from audit.load.messages import silent_mechanism

    code = textwrap.dedent(
        """
        def mech(log0, n):
            if n > 100:
                log0(f"mechanism:running over {n} batches")
        def main(log0):
            log0("mechanism comes next, stage ready")
            mech(log0, 5)
        """
    )
    tree = ast.parse(code)
    mech, main = tree.body
    site = main.body[1].value
    logs = [("a.log", 1, "mechanism comes next, stage ready")]
    assert silent_mechanism(main, site, mech, logs, code, code) is None  # its message is behind a condition
