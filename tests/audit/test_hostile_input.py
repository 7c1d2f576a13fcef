"""Fail closed: what the auditor could not look at keeps the verdict off `clean`; input that is not a
submission at all is a one-line usage error; nothing a folder holds makes the audit crash or blow up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from audit import codes
from audit.api import audit_folder
from audit.load import folder as folder_mod
from tests.support import ROOT, nested_dirs

# prints the log's lines itself: logs no shipped code can print are a finding of their own (PG008)
CLEAN_CODE = (
    "import torch\n\ndef main():\n    loss, bpb = 2.0, 1.2\n"
    "    print(f'step:1/1 train_loss:{loss} train_time:1000ms')\n"
    "    print(f'final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}')\n\nmain()\n"
)
LOG = "step:1/1 train_loss:2.0 train_time:1000ms\nfinal_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000\n"


def _record(tmp_path, code: str | bytes = CLEAN_CODE, log: bool = True, name: str = "train_gpt.py"):
    d = tmp_path / "rec"
    d.mkdir()
    (d / name).write_bytes(code if isinstance(code, bytes) else code.encode())
    (d / "README.md").write_text("# a record\n")
    (d / "submission.json").write_text(json.dumps({"name": "x", "val_bpb": 1.2}))
    if log:
        (d / "train.log").write_text(LOG)
    return d


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def _codes(rep) -> set[str]:
    return {f.code for f in rep.findings}


def test_the_baseline_of_these_cases_is_clean(tmp_path):
    assert audit_folder(str(_record(tmp_path))).verdict == "clean"


def test_no_entry_script_needs_a_human(tmp_path):
    d = _record(tmp_path)
    (d / "train_gpt.py").unlink()
    rep = audit_folder(str(d))
    assert rep.verdict == "needs-human" and codes.NOTHING_TO_AUDIT.code in _codes(rep)


def test_no_logs_needs_a_human(tmp_path):
    rep = audit_folder(str(_record(tmp_path, log=False)))
    assert rep.verdict == "needs-human" and codes.NO_LOGS.code in _codes(rep)


def test_a_source_over_the_read_bound_needs_a_human(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "MAX_FILE_BYTES", 1_000)
    d = _record(tmp_path)
    (d / "helper.py").write_text("x = 1\n" * 500)
    rep = audit_folder(str(d))
    assert rep.verdict == "needs-human" and codes.SOURCE_NOT_READ.code in _codes(rep)


def test_a_notebook_needs_a_human(tmp_path):
    d = _record(tmp_path)
    (d / "eval.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["exec('x')"]}]}))
    rep = audit_folder(str(d))
    assert rep.verdict == "needs-human" and codes.SOURCE_NOT_READ.code in _codes(rep)


def test_past_the_file_cap_the_rest_is_not_listed_and_a_human_looks(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "MAX_FOLDER_FILES", 30)
    d = _record(tmp_path)
    for i in range(200):
        (d / f"data_{i:03}.bin").write_bytes(b"\0")
    (d / "sub").mkdir()
    (d / "sub" / "x.py").write_text("x = 1\n")
    f = folder_mod.load_folder(d)
    assert len(f.sizes) + len(f.skipped) <= 32  # one pass stops at the cap: nothing past it is listed
    rep = audit_folder(str(d))
    unlisted = [f for f in rep.findings if f.code == codes.SOURCE_NOT_READ.code and "not listed" in f.message]
    assert unlisted and rep.verdict == "needs-human" and len(rep.findings) <= 10


def test_many_skipped_files_collapse_into_one_finding(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "MAX_FILE_BYTES", 10)
    d = _record(tmp_path)
    for i in range(200):
        (d / f"data_{i:03}.bin").write_bytes(b"\0" * 11)
    rep = audit_folder(str(d))
    skipped = [f for f in rep.findings if f.code == codes.FILE_SKIPPED.code]
    more = [f for f in rep.findings if f.code == codes.COLLAPSED.code]
    assert len(skipped) <= 10 and len(more) == 1 and "more PG012" in more[0].message


def test_the_folder_byte_budget_bounds_what_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "MAX_FOLDER_BYTES", 10_000)
    d = _record(tmp_path)
    for i in range(5):
        (d / f"blob_{i}.txt").write_text("y" * 4_000)
    f = folder_mod.load_folder(d)
    assert sum(len(b) for b in f.files.values()) <= 10_000
    assert any("were read; not this file" in why for _, why in f.skipped)


def test_symlink_loops_and_deep_nesting_are_findings_not_crashes(tmp_path):
    d = _record(tmp_path)
    os.symlink(d / "loop", d / "loop")
    os.symlink("/etc/hostname", d / "outside.txt")
    nested_dirs(d, 400)
    rep = audit_folder(str(d))
    messages = " ".join(f.message for f in rep.findings)
    assert "symlink loop" in messages and "leaves the folder" in messages and "nested deeper" in messages


def test_an_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _cli(str(tmp_path / "empty"))
    assert proc.returncode == 2 and "empty folder" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_folder_of_record_folders_is_a_usage_error_that_says_what_to_do(tmp_path):
    for name in ("2026-01-01_A", "2026-01-02_B"):
        (tmp_path / "records" / name).mkdir(parents=True)
        (tmp_path / "records" / name / "train_gpt.py").write_text(CLEAN_CODE)
    proc = _cli(str(tmp_path / "records"))
    assert proc.returncode == 2 and "holds 2 record folders" in proc.stderr and "pgolf-audit" in proc.stderr


@pytest.mark.parametrize("what", ["no-entry", "no-logs"])
def test_the_cli_exits_1_not_0_when_something_could_not_be_checked(tmp_path, what):
    d = _record(tmp_path, log=what != "no-logs")
    if what == "no-entry":
        (d / "train_gpt.py").unlink()
    proc = _cli(str(d))
    assert proc.returncode == 1, proc.stderr


# --- decoding: one budget for every layer, opaque exec reported -------------------------------------------
def _wrap(payload: str, layers: int) -> str:
    import base64

    text = payload
    for _ in range(layers):
        text = f"import base64\nexec(base64.b64decode({base64.b64encode(text.encode())!r}))\n"
    return text


def test_nesting_past_the_old_depth_is_decoded_and_judged(tmp_path):
    ttt = (
        "import torch\nval_tokens = torch.load('fineweb_val_000000.bin')\nopt = torch.optim.AdamW([])\n"
        "for epoch in range(3):\n    loss = model(val_tokens).mean()\n    loss.backward()\n    opt.step()\n"
    )
    rep = audit_folder(str(_record(tmp_path, code=_wrap(ttt, 12))))
    assert rep.verdict != "clean"
    assert len(rep.decode_chain.get("train_gpt.py", [])) >= 12 * 2


@pytest.mark.parametrize(
    "payload",
    [
        "exec(make_code())\n",  # built at run time
        "import codecs\nexec(codecs.decode(b'x', 'uu_codec'))\n",  # a codec outside the allow-list
        "exec(f'{1}')\n",  # an f-string
    ],
)
def test_exec_of_something_not_built_from_literals_needs_a_human(tmp_path, payload):
    rep = audit_folder(str(_record(tmp_path, code=CLEAN_CODE + payload)))
    assert rep.verdict == "needs-human"
    assert any(f.code == codes.SOURCE_NOT_READ.code and "exec" in f.message for f in rep.findings)


def test_allowed_codecs_decode_through_their_aliases(tmp_path):
    import codecs as _codecs

    rot = _codecs.encode(CLEAN_CODE, "rot13")
    rep = audit_folder(str(_record(tmp_path, code=f"import codecs\nexec(codecs.decode({rot!r}, 'rot_13'))\n")))
    assert rep.verdict == "clean" and "rot-13" in rep.decode_chain["train_gpt.py"]


@pytest.mark.parametrize(
    "payload",
    [
        "import codecs, bz2\nexec(codecs.decode("
        + repr(__import__("bz2").compress(b"#" * 40_000_000))
        + ", 'bz2_codec'))\n",
        "exec('#' * 100_000_000)\n",
        "exec(('#' * 1000).replace('#', '#' * 100_000))\n",
        "exec('#' + '#' * 60_000_000)\n",
    ],
    ids=["codec-alias-bomb", "repeat-bomb", "replace-bomb", "concat-bomb"],
)
def test_bombs_of_every_kind_stop_at_the_budget_and_need_a_human(tmp_path, payload):
    rep = audit_folder(str(_record(tmp_path, code=payload)))
    assert rep.verdict == "needs-human"
    assert any(f.code == codes.DECOMPRESSION_BOMB.code for f in rep.findings)


def test_a_long_concatenation_chain_is_folded_without_recursion(tmp_path):
    chain = "+".join(["'x=1;'"] * 2500)
    rep = audit_folder(str(_record(tmp_path, code=f"exec({chain})\n" + CLEAN_CODE)))
    assert rep.verdict == "clean"
    assert not any(f.code == codes.INTERNAL_ERROR.code for f in rep.findings)


def test_a_script_whose_first_bytes_look_binary_is_still_read_and_judged(tmp_path):
    noise = "# " + "".join(chr(c) for c in range(1, 9)) * 600 + "\n"
    ttt = "import torch\nval_tokens = torch.load('fineweb_val_000000.bin')\nopt = torch.optim.AdamW([])\nfor epoch in range(3):\n    loss = model(val_tokens).mean()\n    loss.backward()\n    opt.step()\n"
    rep = audit_folder(str(_record(tmp_path, code=noise + ttt)))
    assert rep.entry == "train_gpt.py" and rep.verdict == "flag"


def test_the_audit_budget_skips_and_reports_the_stages_left(tmp_path, monkeypatch):
    from audit import engine

    monkeypatch.setattr(engine, "AUDIT_BUDGET_S", -1.0)
    rep = audit_folder(str(_record(tmp_path)))
    assert rep.verdict == "needs-human"
    assert any(f.code == codes.INTERNAL_ERROR.code and "budget was spent" in f.message for f in rep.findings)


def test_a_fresh_trainer_skeleton_is_not_clean(tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "reference_trainer.cli", "new", str(tmp_path / "skel")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    proc = _cli(str(tmp_path / "skel"))
    assert proc.returncode == 1 and "NEEDS-HUMAN" in proc.stderr
