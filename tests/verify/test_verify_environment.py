"""Re-runs in the record's environment: --python / --venv, requirements.txt, the Python version the code needs,
a CPU-only torch; and the audit gate's --ignore. Nothing here launches a seed: every check is before launch."""

from __future__ import annotations

import base64
import json
import lzma
import sys
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.load.folder import load_folder
from audit.load.resolve import resolve
from tests.verify.test_verify_fixtures import make_record
from verify import cli as verify_cli
from verify.environment import (
    Probe,
    PythonNeed,
    install_requirements,
    python_for,
    required_python,
    requirements_problems,
    version_problem,
)

PEP701 = 'd = {"k": 1}\nprint(f"{d["k"]}")\n'  # only Python 3.12+ parses this


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def cuda_probe(monkeypatch):
    """The seeds' interpreter as the CLI sees it: Python 3.11 with a CUDA torch (no real probe, no torch import)."""
    fake = Probe("/opt/py311/bin/python", (3, 11, 7), {"torch": "2.9.1+cu128", "numpy": "2.1.0"}, "2.9.1+cu128", "12.8")
    monkeypatch.setattr(verify_cli, "probe", lambda python, torch=True: fake)
    return fake


def wrapper_of(source: str) -> str:
    blob = base64.b85encode(lzma.compress(source.encode())).decode()
    return f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'


# --- which Python the code needs --------------------------------------------------------------------------------
def test_required_python_sees_pep701_fstrings_plain_and_inside_a_wrapper(tmp_path):
    plain = make_record(tmp_path / "a", script="import os\n" + PEP701, logs=False)
    need = required_python(resolve(load_folder(str(plain))).sources)
    assert need is not None and need.version == (3, 12) and need.where == "train_gpt.py:3" and "PEP 701" in need.why
    wrapped = make_record(tmp_path / "b", script=wrapper_of("x = 1\n" + PEP701), logs=False)
    need = required_python(resolve(load_folder(str(wrapped))).sources)
    assert need is not None and "decoded" in need.where and need.where.endswith("line 3")
    ordinary = make_record(tmp_path / "c", script='d = {"k": 1}\nprint(f"{d[\'k\']}")\n', logs=False)
    assert required_python(resolve(load_folder(str(ordinary))).sources) is None


def test_version_problem_names_the_fix():
    need = PythonNeed((3, 12), "train_gpt.py:3", "an f-string that reuses its own quotes (PEP 701)")
    old = Probe("/usr/bin/python3", (3, 11, 7))
    msg = version_problem(need, old)
    assert "Python 3.12+" in msg and "3.11.7" in msg and "--python or --venv" in msg and "train_gpt.py:3" in msg
    assert version_problem(need, Probe("/x/python3.12", (3, 12, 1))) == ""
    assert version_problem(None, old) == ""


def test_a_rerun_refuses_before_launch_when_the_python_is_too_old(tmp_path, capsys, cuda_probe):
    folder = make_record(tmp_path, script="import os\n" + PEP701)
    out = tmp_path / "out"
    code, _o, err = run(capsys, folder, "--no-audit", "--out", out, "--nproc", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "needs Python 3.12+" in lines[0] and "/opt/py311/bin/python is 3.11.7" in lines[0]
    assert not (out / "ledger.json").exists()  # nothing was launched


# --- requirements.txt -----------------------------------------------------------------------------------------
REQS = """# Python deps
torch==2.9.1+cu128
numpy>=2
sentencepiece
brotli ; python_version < "3"
--extra-index-url https://example.invalid/simple
"""


def test_requirements_are_checked_against_the_interpreter():
    p = Probe("py", (3, 11, 7), {"torch": "2.9.1+cu126", "numpy": "1.26.4"})
    problems = requirements_problems(REQS, p)
    # the CUDA-wheel label of the same torch release is fine; the old numpy and the missing package are not
    assert problems == [
        "numpy 1.26.4 does not satisfy numpy>=2",
        "sentencepiece is not installed (requirements.txt: sentencepiece)",
    ]
    assert requirements_problems("torch==2.9.1+cu128\n", Probe("py", packages={"torch": "2.8.0+cu128"})) == [
        "torch 2.8.0+cu128 does not satisfy torch==2.9.1+cu128"
    ]


def test_unmet_requirements_stop_a_rerun_in_one_line(tmp_path, capsys, cuda_probe):
    folder = make_record(tmp_path)
    (folder / "requirements.txt").write_text("torch==2.9.1+cu128\npgolf-no-such-package==1.0\n")
    code, _o, err = run(capsys, folder, "--no-audit", "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "pgolf-no-such-package is not installed" in lines[0] and "--install-requirements" in lines[0]


def test_dry_run_reports_the_environment_without_failing(tmp_path, capsys, cuda_probe):
    folder = make_record(tmp_path)
    (folder / "requirements.txt").write_text("pgolf-no-such-package\n")
    code, out, _err = run(capsys, folder, "--no-audit", "--dry-run", "--format", "json", "-q")
    notes = json.loads(out)["notes"]
    assert code == 0
    assert any(n.startswith("error before launch: requirements.txt not met") for n in notes), notes
    code, out, _err = run(capsys, folder, "--no-audit", "--dry-run", "--format", "json", "-q", "--ignore-requirements")
    assert any(n.startswith("warning: requirements.txt not met") for n in json.loads(out)["notes"])


def test_a_cpu_only_torch_is_a_warning(tmp_path, capsys, monkeypatch):
    cpu = Probe("/venv/bin/python", (3, 11, 7), {"torch": "2.13.0+cpu"}, "2.13.0+cpu", None)
    monkeypatch.setattr(verify_cli, "probe", lambda python, torch=True: cpu)
    code, out, _err = run(capsys, make_record(tmp_path), "--no-audit", "--dry-run", "--format", "json", "-q")
    assert code == 0 and any("CPU-only torch (2.13.0+cpu)" in n for n in json.loads(out)["notes"])


# --- --python / --venv / --install-requirements ----------------------------------------------------------------
def test_python_and_venv_choose_the_seeds_interpreter(tmp_path, capsys, cuda_probe):
    folder = make_record(tmp_path)
    code, out, _err = run(
        capsys, folder, "--no-audit", "--dry-run", "--format", "json", "-q", "--python", sys.executable
    )
    plan = json.loads(out)["plan"]
    assert code == 0 and all(j["argv"][0] == str(Path(sys.executable).absolute()) for j in plan["jobs"])
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    code, out, _err = run(capsys, folder, "--no-audit", "--dry-run", "--format", "json", "-q", "--venv", venv)
    assert code == 0 and json.loads(out)["plan"]["jobs"][0]["argv"][0] == str(venv / "bin" / "python")
    # the interpreter's path does not change what a seed is: a resumed run under another venv keeps its ledger
    base = json.loads(run(capsys, folder, "--no-audit", "--dry-run", "--format", "json", "-q")[1])["plan"]
    assert [j["fingerprint"] for j in base["jobs"]] == [j["fingerprint"] for j in plan["jobs"]]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--python", "/no/such/python"], "--python /no/such/python: not an executable file"),
        (["--venv", "/no/such/venv"], "no bin/python in it"),
        (["--python", "python3", "--venv", "/x"], "give --python or --venv, not both"),
        (["--install-requirements"], "ships no requirements.txt"),
    ],
)
def test_bad_interpreter_options_are_one_line(tmp_path, capsys, args, words):
    code, _o, err = run(capsys, make_record(tmp_path), "--no-audit", "--out", tmp_path / "out", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err


def test_python_for():
    assert python_for(None, None) == sys.executable
    with pytest.raises(InputError):
        python_for("python3", "/tmp/v")


@pytest.mark.slow
def test_install_requirements_builds_and_reuses_a_per_record_venv(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# nothing to install: the venv itself is what is tested\n")
    py = install_requirements(sys.executable, req, tmp_path / "out" / "venv")
    assert Path(py).is_file() and Path(py).parent.parent == tmp_path / "out" / "venv"
    log = tmp_path / "out" / "venv-install.log"
    assert "pip install" in log.read_text()
    log.unlink()
    assert install_requirements(sys.executable, req, tmp_path / "out" / "venv") == py and not log.exists()  # reused


# --- the audit gate's --ignore ---------------------------------------------------------------------------------
def test_ignore_selectors_reach_the_audit_gate(tmp_path, capsys, cuda_probe):
    folder = make_record(tmp_path)
    for s in (42, 314, 1234):  # every log over the cap: the audit flags size_over_cap
        log = folder / f"train_seed{s}.log"
        log.write_text(
            log.read_text().replace(
                "Total submission size int8+zlib: 1002000", "Total submission size int8+zlib: 16002000"
            )
        )
    code, out, _err = run(capsys, folder, "--dry-run", "--format", "json", "-q")
    assert code == 0 and json.loads(out)["audit"]["verdict"] == "flag"
    code, out, _err = run(capsys, folder, "--dry-run", "--format", "json", "-q", "--ignore", "size_over_cap,PG212")
    audit = json.loads(out)["audit"]
    assert audit["verdict"] != "flag" and audit["ignored"] == ["PG212", "size_over_cap"]
    code, _o, err = run(capsys, folder, "--dry-run", "--ignore", "size_over_capp")
    assert code == 2 and "unknown rule selector 'size_over_capp'" in err and len(err.strip().splitlines()) == 1
