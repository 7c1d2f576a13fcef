"""`pgolf-train pack` / `package --pack`: the packed wrapper decodes (statically) to the exact script, runs the
same code on CPU, its log counts the wrapper's bytes, and the packaged record audits with those bytes."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from audit.logs import parse_log
from reference_trainer import train_gpt as T
from reference_trainer.cli import cli
from reference_trainer.package import REFERENCE_SCRIPT, pack_source, unpack_source
from reference_trainer.synthetic import export_synthetic_dataset, tiny_env

SOURCE = REFERENCE_SCRIPT.read_bytes()


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_wrapper_decodes_statically_to_the_exact_script(tmp_path):
    wrapper = pack_source(SOURCE)
    assert pack_source(SOURCE) == wrapper  # deterministic
    assert unpack_source(wrapper) == SOURCE
    assert len(wrapper) < len(SOURCE) / 2
    # Three statements and nothing else: an import, the blob, and exec of the decoded blob.
    body = ast.parse(wrapper).body
    assert [type(n).__name__ for n in body] == ["Import", "Assign", "Expr"]
    assert (
        ast.unparse(body[2])
        == "exec(compile(lzma.decompress(base64.b85decode(PGOLF_PACKED_SOURCE)), __file__, 'exec'))"
    )
    # The static decoder accepts that exact shape only, so nothing can run besides the decoded script.
    for tampered in (
        wrapper + b"import os\n",
        b"import os\n" + wrapper,
        wrapper.replace(b"exec(compile(", b"eval(compile("),
        wrapper.replace(b'PGOLF_PACKED_SOURCE = "', b'PGOLF_PACKED_SOURCE = "A'),
        SOURCE,
    ):
        assert unpack_source(tampered) is None
    # The trainer reads a wrapper the same way: readable source for the log, the wrapper's bytes for the size.
    path = tmp_path / "train_gpt.py"
    path.write_bytes(wrapper)
    assert T.read_code(path) == (SOURCE.decode(), len(wrapper), True)
    assert T.read_code(REFERENCE_SCRIPT) == (SOURCE.decode(), len(SOURCE), False)


def test_pack_and_unpack_commands(tmp_path):
    out = tmp_path / "w" / "train_gpt.py"
    r = invoke("pack", "--out", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == pack_source(SOURCE)
    r = invoke("unpack", out)
    assert r.exit_code == 0 and r.stdout.encode() == SOURCE
    again = invoke("pack", out, "--out", tmp_path / "x.py")
    assert again.exit_code == 2 and "already a packed wrapper" in again.output
    bad = invoke("unpack", REFERENCE_SCRIPT)
    assert bad.exit_code == 2 and "not a train_gpt.py packed by pgolf-train" in bad.output


@pytest.fixture(scope="module")
def packed_runs(tmp_path_factory):
    """Two seeds trained by running the wrapper (a fresh Python process each), and one seed trained in-process
    by the readable script with the same settings."""
    root = tmp_path_factory.mktemp("packed")
    ds = export_synthetic_dataset(root / "data", n_docs=200, val_docs=20)
    wrapper = root / "packed" / "train_gpt.py"
    wrapper.parent.mkdir()
    wrapper.write_bytes(pack_source(SOURCE))
    env = tiny_env(ds, ITERATIONS=6, EVAL_STRIDE=16)
    logs = {}
    for seed in (1337, 42):
        run_env = {**os.environ, **env, "SEED": str(seed), "RUN_ID": f"packed{seed}", "OMP_NUM_THREADS": "1"}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            run_env.pop(k, None)
        r = subprocess.run(
            [sys.executable, str(wrapper)], cwd=root, env=run_env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr[-3000:]
        logs[seed] = root / "logs" / f"packed{seed}.txt"
    with pytest.MonkeyPatch.context() as mp:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            mp.delenv(k, raising=False)
        for k, v in {**env, "SEED": "1337", "RUN_ID": "readable1337"}.items():
            mp.setenv(k, v)
        mp.chdir(root)
        torch.set_num_threads(1)
        assert T.main() == 0
    logs["readable"] = root / "logs" / "readable1337.txt"
    return wrapper, logs


def test_the_wrapper_runs_the_same_code_and_its_log_counts_its_bytes(packed_runs):
    wrapper, logs = packed_runs
    text = logs[1337].read_text()
    assert text.startswith(SOURCE.decode() + "\n" + "=" * 100 + "\n")  # the readable source is echoed
    size = wrapper.stat().st_size
    assert f"\nCode size: {size} bytes\n" in text
    assert f"\nPacked code: {size} bytes (raw={len(SOURCE)} bytes)\n" in text
    run = parse_log(text, "packed.log").last
    assert run.code_bytes == size and run.artifact_bytes == size + run.model_bytes
    readable = parse_log(logs["readable"].read_text(), "readable.log").last
    assert readable.code_bytes == len(SOURCE)
    # Same code, same settings, same seed: the same losses and the same score.
    assert (run.scored.tag, run.scored.val_bpb) == (readable.scored.tag, readable.scored.val_bpb)
    losses = [s.loss for s in run.steps]
    assert losses and losses == [s.loss for s in readable.steps]


def test_package_pack_ships_the_wrapper_and_audits_with_its_bytes(tmp_path, packed_runs):
    wrapper, logs = packed_runs
    out = tmp_path / "2026-01-01_Packed"
    r = invoke("package", out, "--pack", "--logs", logs[1337], "--logs", logs[42])
    assert r.exit_code == 0, r.output
    assert (out / "train_gpt.py").read_bytes() == wrapper.read_bytes()
    data = json.loads((out / "submission.json").read_text())
    size = wrapper.stat().st_size
    assert data["bytes_code"] == size
    readme = (out / "README.md").read_text()
    assert "packed wrapper" in readme and "pgolf-train unpack train_gpt.py" in readme
    # pgolf-audit (the command) decodes the wrapper, counts its bytes and finds the logged scores.
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from audit.cli import main; main()",
            str(out),
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["code_bytes"] == size and report["decode_chain"]["train_gpt.py"][-1] == "exec"
    claims = report["claims"]
    for seed in (1337, 42):
        logged = parse_log(logs[seed].read_text(), "x").last
        assert claims["per_seed"][str(seed)] == logged.scored.val_bpb == data["seed_results"][str(seed)]["val_bpb"]
    assert claims["code_bytes"] == size and claims["artifact_bytes"] == data["bytes_total"]
    rules = {f["rule"] for f in report["findings"]}
    assert not {r for r in rules if re.match(r"PG2(0|1)\d", r)} - {"PG230/val-subset"}, rules  # no size/claim finding


def test_package_refuses_logs_that_did_not_run_what_ships(tmp_path, packed_runs):
    wrapper, logs = packed_runs
    # Logs of the readable script cannot be shipped as a wrapper: they count the readable script's bytes.
    r = invoke("package", tmp_path / "a", "--pack", "--logs", logs["readable"])
    assert r.exit_code == 2 and f"but the packed train_gpt.py is {wrapper.stat().st_size} bytes" in r.output
    assert "pgolf-train pack" in r.output
    # Nor can logs of the wrapper ship the readable script.
    r = invoke("package", tmp_path / "b", "--logs", logs[1337], "--script", REFERENCE_SCRIPT)
    assert r.exit_code == 2 and "not produced by this script" in r.output
    # A log that echoes other source is refused even when the byte count happens to agree.
    forged = tmp_path / "forged.log"
    text = logs["readable"].read_text()
    forged.write_text(text.replace("Hyperparameters from env vars", "Hyperparameters from env vars!", 1))
    r = invoke("package", tmp_path / "c", "--logs", forged)
    assert r.exit_code == 2 and "echoed at the top of the log is not the packaged script" in r.output
