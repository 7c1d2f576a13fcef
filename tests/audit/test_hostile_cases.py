"""Hostile inputs of issue 13 not covered elsewhere, end to end and at the sizes the issue names: each asserts
the outcome (flag, needs-human, findings present), no internal error, and bounded cost relative to a benign run
measured in the same test. Unit-sized versions live in test_hostile_input.py / test_hostile_output.py, git
attacks in test_hostile_git.py."""

from __future__ import annotations

import codecs
import json
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from audit import codes
from audit.api import audit_folder
from audit.load import folder as folder_mod
from audit.logs.echo import source_spans
from tests.audit.test_hostile_git import DECOY, _commit, arm, sh
from tests.support import EXAMPLES, ROOT, nested_dirs

CLEAN_CODE = (
    "import torch\n\ndef main():\n    loss, bpb = 2.0, 1.2\n"
    "    print(f'step:1/1 train_loss:{loss} train_time:1000ms')\n"
    "    print(f'final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}')\n\nmain()\n"
)
LOG = "step:1/1 train_loss:2.0 train_time:1000ms\nfinal_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000\n"
TTT = (
    "import torch\nval_tokens = torch.load('fineweb_val_000000.bin')\nopt = torch.optim.AdamW([])\n"
    "for epoch in range(3):\n    loss = model(val_tokens).mean()\n    loss.backward()\n    opt.step()\n"
)
MAX_RATIO = 20


def _record(root: Path, code: str | bytes = CLEAN_CODE, log: str = LOG, name: str = "train_gpt.py") -> Path:
    d = root / "rec"
    d.mkdir()
    (d / name).write_bytes(code if isinstance(code, bytes) else code.encode())
    (d / "README.md").write_text("# a record\n")
    (d / "submission.json").write_text(json.dumps({"name": "x", "val_bpb": 1.2}))
    (d / "train.log").write_text(log)
    return d


def _codes(rep) -> set[str]:
    return {f.code for f in rep.findings}


def _no_internal_error(rep) -> None:
    assert codes.INTERNAL_ERROR.code not in _codes(rep), [f.message for f in rep.findings]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _rm_deep(top: Path) -> None:
    """shutil.rmtree recurses once per level: a 1,500-deep tree is removed bottom-up without recursion."""
    subprocess.run(["rm", "-rf", str(top)], check=True)


# --- a record folder that ships a .git/ -------------------------------------------------------------------
def test_a_shipped_git_branch_that_adds_a_decoy_does_not_steer_the_audit(tmp_path):
    """The folder's own history has a branch that adds a clean decoy record (what a checkout audit would pick,
    and what 2f13936 reported `clean`); its config is armed. The folder itself is audited, git never runs."""
    folder = tmp_path / "2026-05-01_Sneaky"
    shutil.copytree(EXAMPLES / "prequant_ttt", folder)
    sh(folder, "git", "init", "-q", "-b", "main")
    _commit(folder, "base")
    sh(folder, "git", "checkout", "-q", "-b", "pr")
    shutil.copytree(EXAMPLES / "clean_baseline", folder / DECOY)
    _commit(folder, "decoy")
    marker = tmp_path / "MARKER"
    arm(folder, marker)
    proc = _cli(str(folder), "--format", "json")
    assert "Traceback" not in proc.stderr and not marker.exists()
    doc = json.loads(proc.stdout)
    assert "submissions" not in doc and doc["folder"].rstrip("/").endswith("2026-05-01_Sneaky")
    assert doc["verdict"] == "flag" and proc.returncode == 1


# --- fail closed at the sizes -------------------------------------------------------------------------
def test_rule_breaking_code_through_codecs_decode_is_judged(tmp_path):
    """exec(codecs.decode(…)): the codecs branch of the decoder is reached and the payload judged."""
    code = f"import codecs\nexec(codecs.decode({codecs.encode(TTT, 'rot13')!r}, 'rot_13'))\n"
    rep = audit_folder(str(_record(tmp_path, code)))
    assert rep.verdict == "flag" and "rot-13" in rep.decode_chain["train_gpt.py"]
    _no_internal_error(rep)


def test_a_payload_over_the_decode_bound_needs_a_human(tmp_path):
    """PG002 carries a category now: a bomb that stops the decoder keeps the verdict off `clean`."""
    blob = zlib.compress(b"#" * 40_000_000, 9)
    rep = audit_folder(str(_record(tmp_path, f"import zlib\nexec(zlib.decompress({blob!r}))\n")))
    assert rep.verdict == "needs-human" and codes.DECOMPRESSION_BOMB.code in _codes(rep)
    _no_internal_error(rep)


def test_an_entry_script_over_8_mb_needs_a_human(tmp_path):
    """A legal (under 16 MB) train_gpt.py over the 8 MB read bound: not read, so never `clean`."""
    code = TTT + ("# " + "p" * 98 + "\n") * ((folder_mod.MAX_FILE_BYTES + 500_000) // 101)
    assert folder_mod.MAX_FILE_BYTES < len(code) < 16_000_000
    rep = audit_folder(str(_record(tmp_path, code)))
    assert rep.verdict == "needs-human" and codes.SOURCE_NOT_READ.code in _codes(rep)
    assert any(f.code == codes.SOURCE_NOT_READ.code and "train_gpt.py" in f.message for f in rep.findings)


def test_1500_nested_directories_are_a_finding_not_a_crash(tmp_path):
    d = _record(tmp_path)
    nested_dirs(d, 1500, {"deep.py": "x = 1\n"})
    try:
        rep = audit_folder(str(d))
        _no_internal_error(rep)
        assert any(f"nested deeper than {folder_mod.MAX_DEPTH}" in f.message for f in rep.findings)
        # the record's own code is clean, but the folders below the cut were never read: a reviewer looks
        assert rep.verdict == "needs-human" and codes.SOURCE_NOT_READ.code in _codes(rep)
    finally:
        _rm_deep(d / "n")


def test_600_files_of_7_9_mb_stay_within_the_folder_byte_budget(tmp_path):
    """4.7 GB on paper (sparse files): at most MAX_FOLDER_BYTES are read, the rest are findings."""
    d = _record(tmp_path)
    for i in range(600):
        with open(d / f"shard_{i:03}.bin", "wb") as fh:
            fh.truncate(7_900_000)
    f = folder_mod.load_folder(d)
    assert sum(len(b) for b in f.files.values()) <= folder_mod.MAX_FOLDER_BYTES
    assert "train_gpt.py" in f.files  # read before the shards (walk order), so the record is judged
    rep = audit_folder(str(d))
    _no_internal_error(rep)
    assert rep.verdict == "clean" and codes.COLLAPSED.code in _codes(rep)
    assert len(rep.findings) <= 20


def test_shards_that_spend_the_byte_budget_before_the_code_keep_it_off_clean(tmp_path):
    """Files named to be read first exhaust the folder budget: the entry script goes unread -> needs-human."""
    d = _record(tmp_path, TTT)
    n, size = 8, folder_mod.MAX_FOLDER_BYTES // 8
    assert size <= folder_mod.MAX_FILE_BYTES  # each shard is read; together they spend the whole budget
    for i in range(n):
        with open(d / f"zz_{i}.bin", "wb") as fh:  # walked before train_gpt.py (reverse name order)
            fh.truncate(size)
    f = folder_mod.load_folder(d)
    if "train_gpt.py" in f.files:
        pytest.skip("the walk reads the entry script first on this layout")
    rep = audit_folder(str(d))
    assert rep.verdict != "clean"
    assert any(f.code == codes.SOURCE_NOT_READ.code and "train_gpt.py" in f.message for f in rep.findings)


def test_thousands_of_files_give_a_bounded_report(tmp_path):
    """100,000 files once gave 98,000 PG012 findings (57 MB JSON, 76 MB SARIF). Scaled to 5,000 files past
    the real file cap: one collapsed finding, and no output format grows by more than a few KB over the same
    record without the files (SARIF carries ~100 KB of rule metadata either way)."""
    (tmp_path / "base").mkdir()
    (tmp_path / "flood").mkdir()
    base = _record(tmp_path / "base")
    d = _record(tmp_path / "flood")
    data = d / "data"
    data.mkdir()
    for i in range(folder_mod.MAX_FOLDER_FILES + 3_000):
        (data / f"f{i:05}.bin").write_bytes(b"\0")
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("json", "sarif", "markdown"):
        sizes = {}
        for key, folder in (("base", base), ("flood", d)):
            proc = _cli(str(folder), "--format", fmt, "-v", "--output", str(out / f"{key}.{fmt}"))
            assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
            sizes[key] = (out / f"{key}.{fmt}").stat().st_size
        assert sizes["flood"] <= sizes["base"] + 20_000, (fmt, sizes)
    doc = json.loads((out / "flood.json").read_text())
    unlisted = [f for f in doc["findings"] if f["rule"].split("/")[0] == codes.SOURCE_NOT_READ.code]
    assert len(doc["findings"]) <= 20 and len(unlisted) == 1 and "not listed" in unlisted[0]["message"]
    assert doc["verdict"] == "needs-human"  # what was not listed may hold code


# --- the 113-byte log line and other slow-path inputs, end to end ------------------------------------------
def test_the_113_byte_log_line_audits_like_any_other(tmp_path):
    hostile = "a:" + "bbbb:" * 22 + ":"
    benign = "step:38000 churn:0.0846 " * 4 + "x:1"
    (tmp_path / "h").mkdir()
    (tmp_path / "b").mkdir()
    reps = {}
    times = {}
    for key, line in (("b", benign), ("h", hostile)):
        d = _record(tmp_path / key, log=LOG + (line + "\n") * 200)
        audit_folder(str(d))  # warm caches for both
        reps[key], times[key] = min((_timed(audit_folder, str(d)) for _ in range(3)), key=lambda r: r[1])
    assert reps["h"].verdict == reps["b"].verdict == "clean"
    assert times["h"] <= MAX_RATIO * times["b"], times


def test_echo_probe_costs_about_what_a_benign_log_does():
    n = 5_000
    hostile = ["# a"] * n + ["=" * 30]  # every line opens a candidate echo, none holds 3 strong lines
    benign = ["lr:0.04"] * n + ["=" * 30]
    _, t_b = min((_timed(source_spans, benign) for _ in range(3)), key=lambda r: r[1])
    _, t_h = min((_timed(source_spans, hostile) for _ in range(3)), key=lambda r: r[1])
    assert t_h <= MAX_RATIO * max(t_b, 1e-4), (t_h, t_b)


# --- submission text in the outputs, from real file names on disk ----------------------------------------
FORGED = "x`\n\n## LOOKS CLEAN — verified by maintainers\n<!-- pgolf-audit v1 head=deadbeef verdict=clean -->\n"


def test_file_names_on_disk_cannot_forge_the_review_comment(tmp_path):
    d = _record(tmp_path, name="train_" + FORGED + ".py")  # the entry script: named in the report
    (d / ("nb_" + FORGED + ".ipynb")).write_text("{}")  # a notebook: a finding that names it
    proc = _cli(str(d), "--format", "markdown", "--head-sha", "abc", "--repo-url", "https://github.com/o/r")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert "LOOKS CLEAN — verified by maintainers" in proc.stdout  # the names are there...
    assert not any(line.lstrip().startswith("## LOOKS CLEAN") for line in lines)  # ...but head nothing
    assert not any("deadbeef" in line and line.lstrip().startswith("<!--") for line in lines)
    markers = [line for line in lines if line.startswith("<!-- pgolf-audit v1 ")]
    assert len(markers) == 1 and "verdict=needs-human" in markers[0]


def test_rich_markup_in_file_names_is_printed_literally(tmp_path):
    d = _record(tmp_path)
    (d / "nb[bold red]X.ipynb").write_text("{}")
    with open(d / "big[bold red]X.bin", "wb") as fh:  # over the read bound: an info finding names it
        fh.truncate(folder_mod.MAX_FILE_BYTES + 1)
    proc = _cli(str(d), "-v")
    both = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in both
    assert "big[bold red]X.bin" in both and "bigX.bin" not in both


# --- the per-stage guard: an exception anywhere is a PG000 finding, the rest of the audit still runs --------
def _boom(*a, **k):
    raise RuntimeError("injected failure")


GUARDED = [
    ("resolve", "source resolution"),
    ("record_config", "run commands"),
    ("read_logs", "log parsing"),
    ("scripts_that_ran", "scripts that ran"),
    ("provenance", "log provenance"),
    ("package_findings", "folder checks"),
    ("suppression_findings", "suppression comments"),
    ("check_claims", "claims check"),
    ("record_findings", "record checks"),
]


@pytest.mark.parametrize("name,stage", GUARDED, ids=[g[0] for g in GUARDED])
def test_an_exception_in_any_stage_is_a_finding_and_the_rest_still_runs(tmp_path, monkeypatch, name, stage):
    from audit import engine

    d = _record(tmp_path)
    monkeypatch.setattr(engine, name, _boom)
    rep = audit_folder(str(d))
    internal = [f for f in rep.findings if f.code == codes.INTERNAL_ERROR.code]
    assert any(stage in f.message and "injected failure" in f.message for f in internal), [f.message for f in internal]
    assert rep.verdict == "needs-human" and rep.rules_run  # never clean; the rules still ran


def test_a_failing_program_model_is_a_finding(tmp_path, monkeypatch):
    from audit import engine

    real = engine.Program.build

    def build(sources, *a, **k):
        if sources:
            raise RuntimeError("injected failure")
        return real(sources, *a, **k)

    monkeypatch.setattr(engine.Program, "build", staticmethod(build))
    rep = audit_folder(str(_record(tmp_path)))
    assert any(f.code == codes.INTERNAL_ERROR.code and "program model" in f.message for f in rep.findings)
    assert rep.verdict == "needs-human"


def test_a_failing_model_shape_is_reported(tmp_path, monkeypatch):
    from audit import engine

    monkeypatch.setattr(engine, "model_shape", _boom)
    rep = audit_folder(str(_record(tmp_path)))
    assert any(f.code == codes.INTERNAL_ERROR.code and "model shape" in f.message for f in rep.findings)


BETWEEN = ["message_lines", "log_source_findings", "_analyses", "gather_facts", "_final", "decide"]


@pytest.mark.parametrize("name", BETWEEN)
def test_an_exception_between_stages_is_a_finding_too(tmp_path, monkeypatch, name):
    from audit import engine

    monkeypatch.setattr(engine, name, _boom)
    rep = audit_folder(str(_record(tmp_path)))
    assert rep.verdict == "needs-human"
    assert any(f.code == codes.INTERNAL_ERROR.code for f in rep.findings)


def test_a_spent_budget_still_closes_the_report_and_a_failing_verdict_says_so(tmp_path, monkeypatch):
    from audit import engine

    monkeypatch.setattr(engine, "AUDIT_BUDGET_S", -1.0)  # every budgeted stage is skipped
    monkeypatch.setattr(engine, "decide", _boom)
    rep = audit_folder(str(_record(tmp_path)))
    messages = [f.message for f in rep.findings if f.code == codes.INTERNAL_ERROR.code]
    assert any("budget" in m for m in messages) and any(m.startswith("verdict failed") for m in messages), messages
    assert rep.verdict == "needs-human"
