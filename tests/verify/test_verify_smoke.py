"""--smoke: import the entry script and run a tiny CPU forward in a sandboxed child process.

The behaviour tests run in the bubblewrap sandbox where it works here and under the weaker guard elsewhere
(`unsafe=True` falls back only when bubblewrap cannot run); tests/verify/test_hostile_verify.py attacks the
sandbox itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from tests.verify.test_verify_fixtures import make_record
from verify import cli as verify_cli
from verify import smoke as smoke_mod
from verify.smoke import (
    BWRAP_ENV,
    SANDBOX_BWRAP,
    SANDBOX_UNSAFE,
    SandboxUnavailableError,
    read_results,
    sandbox_problem,
    scratch_copy,
)

SANDBOX_PROBLEM = sandbox_problem()
SMOKE_FLAG = "--unsafe-smoke" if SANDBOX_PROBLEM else "--smoke"


def smoke_test(*args, **kw):
    res = smoke_mod.smoke_test(*args, unsafe=True, **kw)
    assert res.sandbox == (SANDBOX_UNSAFE if SANDBOX_PROBLEM else SANDBOX_BWRAP)
    return res


@pytest.fixture
def torch_needed():
    pytest.importorskip("torch")


TINY_GPT = """
import os
import torch
import torch.nn as nn
import torch.nn.functional as F

class Hyperparameters:
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    num_layers = int(os.environ.get("NUM_LAYERS", 9))
    model_dim = int(os.environ.get("MODEL_DIM", 512))

class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return x + torch.relu(self.fc(x))

class GPT(nn.Module):
    def __init__(self, vocab_size, num_layers, model_dim):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, model_dim)
        self.blocks = nn.ModuleList(Block(model_dim) for _ in range(num_layers))
        self.head = nn.Linear(model_dim, vocab_size)
    def forward(self, input_ids, target_ids):
        x = self.emb(input_ids)
        for b in self.blocks:
            x = b(x)
        return F.cross_entropy(self.head(x).flatten(0, 1), target_ids.flatten())
%s
def main():
    raise SystemExit("main must not run during the smoke test")

if __name__ == "__main__":
    main()
"""


def _folder(tmp_path, extra=""):
    return make_record(tmp_path, script=TINY_GPT % extra, logs=False)


@pytest.mark.slow
def test_import_and_tiny_forward_ok(tmp_path, torch_needed):
    res = smoke_test(_folder(tmp_path), "train_gpt.py", timeout_s=120)
    assert res.ok, res.summary + res.detail
    assert res.summary.startswith("import OK in ") and "CPU forward OK" in res.summary
    assert "(GPT, " in res.summary  # the tiny config from the env: 2 layers, dim 64, vocab 64
    assert "socket guard" in res.isolation


@pytest.mark.slow
def test_cuda_only_call_at_import_is_reported_exactly(tmp_path, torch_needed):
    res = smoke_test(_folder(tmp_path, "\ntorch.cuda.set_device(0)\n"), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "import"
    assert "import FAILED" in res.summary and "train_gpt.py:" in res.where and "torch.cuda.set_device(0)" in res.where


@pytest.mark.slow
def test_cuda_tensor_in_forward_is_reported_as_forward_failure(tmp_path, torch_needed):
    script = TINY_GPT.replace("x = self.emb(input_ids)", "x = self.emb(input_ids.cuda())") % ""
    res = smoke_test(make_record(tmp_path, script=script, logs=False), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "forward" and res.summary.startswith("import OK")
    assert "CPU forward FAILED" in res.summary


@pytest.mark.slow
def test_network_is_blocked(tmp_path, torch_needed):
    extra = '\nimport socket\nsocket.create_connection(("example.com", 80), timeout=3)\n'
    res = smoke_test(_folder(tmp_path, extra), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "import"
    assert any(w in res.error for w in ("blocked", "unreachable", "Name or service", "resolution"))


@pytest.mark.slow
def test_path_bug_and_bom_are_named(tmp_path, torch_needed):
    folder = _folder(tmp_path, '\nopen("/nonexistent/records/tokenizer.model").read()\n')
    raw = (folder / "train_gpt.py").read_bytes()
    (folder / "train_gpt.py").write_bytes(b"\xef\xbb\xbf" + raw)
    res = smoke_test(folder, "train_gpt.py", timeout_s=120)
    assert not res.ok and "FileNotFoundError" in res.error
    assert any("BOM" in n for n in res.notes)


@pytest.mark.slow
def test_memory_limit_stops_a_runaway_import(tmp_path, torch_needed):
    res = smoke_test(
        _folder(tmp_path, "\nhog = bytearray(3 * 1024**3)\n"), "train_gpt.py", timeout_s=120, memory_mb=1024
    )
    assert not res.ok and res.stage == "import" and "MemoryError" in res.error


@pytest.mark.slow
def test_smoke_cli_exit_codes(tmp_path, capsys, torch_needed):
    ok = _folder(tmp_path / "a")
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(ok), SMOKE_FLAG, "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and rep["mode"] == "smoke" and rep["smoke"]["ok"] is True
    assert rep["smoke"]["sandbox"] == (SANDBOX_UNSAFE if SANDBOX_PROBLEM else SANDBOX_BWRAP)
    assert rep["smoke"]["summary"].endswith(f"(sandbox: {rep['smoke']['sandbox']})")
    bad = _folder(tmp_path / "b", "\nimport pgolf_not_a_package\n")  # FA3 has a stand-in; this has none
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(bad), SMOKE_FLAG, "--format", "markdown", "-q"])
    md = capsys.readouterr().out
    assert exc.value.code == 1 and "No module named 'pgolf_not_a_package'" in md
    assert "verdict=inconclusive" in md and "failure class: environment" in md  # a missing package, not a bug
    broken = _folder(tmp_path / "c", "\nundefined_name_in_the_submission\n")
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(broken), SMOKE_FLAG, "--format", "markdown", "-q"])
    md = capsys.readouterr().out
    assert exc.value.code == 1 and "verdict=failed" in md and "failure class: submission" in md


@pytest.mark.slow
def test_smoke_builds_a_model_that_takes_the_hyperparameters_object(torch_needed):
    from tests.support import EXAMPLES

    res = smoke_test(EXAMPLES / "clean_baseline", "train_gpt.py")
    assert res.ok, res.summary
    assert "CPU forward OK" in res.summary


# --- without bubblewrap ----------------------------------------------------------------------------------
def test_smoke_refuses_without_bubblewrap(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(BWRAP_ENV, str(tmp_path / "no-bwrap"))
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(_folder(tmp_path)), "--smoke", "-q"])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "bubblewrap" in lines[0] and "--unsafe-smoke" in lines[0] and "no-bwrap" in lines[0]
    with pytest.raises(SandboxUnavailableError):
        smoke_mod.smoke_test(_folder(tmp_path / "x"), "train_gpt.py")


@pytest.mark.slow
def test_unsafe_smoke_runs_without_bubblewrap_and_says_so(tmp_path, capsys, monkeypatch, torch_needed):
    monkeypatch.setenv(BWRAP_ENV, str(tmp_path / "no-bwrap"))
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(_folder(tmp_path)), "--unsafe-smoke", "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and rep["verdict"] == "verified"
    assert rep["smoke"]["sandbox"] == SANDBOX_UNSAFE == "unsafe: rlimits + socket guard"
    assert "(sandbox: unsafe: rlimits + socket guard)" in rep["smoke"]["summary"]


def test_unsafe_smoke_excludes_the_other_modes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(_folder(tmp_path)), "--unsafe-smoke", "--dry-run"])
    assert exc.value.code == 2 and "exclude each other" in capsys.readouterr().err


def test_limits_are_clamped_to_the_hard_limits(monkeypatch):
    import resource

    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda r: (100, 100) if r == resource.RLIMIT_AS else real(r))
    limits = dict(smoke_mod._rlimits(4096, 60))
    assert limits[resource.RLIMIT_AS] == (100, 100)
    assert limits[resource.RLIMIT_CPU][0] <= limits[resource.RLIMIT_CPU][1]


# --- the scratch copy --------------------------------------------------------------------------------------
def test_scratch_copy_skips_special_files_and_links_that_leave(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "pkg").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (src / "train_gpt.py").write_text("print('hi')\n")
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "__pycache__").mkdir()
    os.symlink("train_gpt.py", src / "alias.py")  # stays inside: kept
    os.symlink("../pkg/mod.py", src / "pkg" / "up.py")  # stays inside through ..: kept
    os.symlink(str(outside / "secret"), src / "leak")  # leaves: skipped
    os.symlink(str(outside), src / "leakdir")  # a folder outside: skipped, never walked
    os.symlink("/nonexistent", src / "dangling")
    os.mkfifo(src / "fifo")  # reading it would block the copy forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        notes = scratch_copy(src, tmp_path / "dst")
    finally:
        sock.close()
    dst = tmp_path / "dst"
    assert (dst / "train_gpt.py").read_text() == "print('hi')\n" and (dst / "pkg" / "mod.py").exists()
    assert os.readlink(dst / "alias.py") == "train_gpt.py" and (dst / "alias.py").read_text() == "print('hi')\n"
    assert (dst / "pkg" / "up.py").read_text() == "X = 1\n"
    for gone in ("leak", "leakdir", "dangling", "fifo", "sock", "__pycache__"):
        assert not os.path.lexists(dst / gone), gone
    text = "\n".join(notes)
    assert "leak, a symlink leaving the folder" in text and "leakdir, a symlink leaving" in text
    assert "fifo, not a regular file" in text and "sock, not a regular file" in text


# --- the result channel ------------------------------------------------------------------------------------
NONCE = "ab" * 16


def _line(**kw) -> bytes:
    return (json.dumps({"nonce": NONCE, **kw}) + "\n").encode()


IMPORT_OK = dict(stage="import", ok=True, seconds=0.5)
FORWARD_OK = dict(stage="forward", ok=True, seconds=0.1, model="GPT", params=10, loss=4.2, error=None)


def test_result_lines_with_the_nonce_and_the_schema_are_read():
    events, why = read_results(_line(**IMPORT_OK) + _line(**FORWARD_OK), NONCE)
    assert why == "" and [e["stage"] for e in events] == ["import", "forward"]
    assert "nonce" not in events[0]


def test_a_last_line_cut_by_a_kill_is_dropped_not_fatal():
    events, why = read_results(_line(**IMPORT_OK) + _line(**FORWARD_OK)[:20], NONCE)
    assert why == "" and len(events) == 1


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_line(**IMPORT_OK).replace(NONCE.encode(), b"cd" * 16), "wrong nonce"),
        (b'{"stage": "import", "ok": true, "seconds": 0.5}\n', "wrong nonce"),
        (b"PGOLF_SMOKE " + _line(**IMPORT_OK), "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (_line(stage="train", ok=True, seconds=1), "unknown stage"),
        (_line(stage="import", ok="yes", seconds=1), "'ok'"),
        (_line(stage="import", ok=None, seconds=1, error="x"), "'ok'"),
        (_line(stage="import", ok=True, seconds=True), "duration"),
        (_line(stage="import", ok=True, seconds=-1), "duration"),
        (_line(stage="import", ok=False, seconds=1), "no error message"),
        (_line(**IMPORT_OK) + _line(**{**FORWARD_OK, "loss": None}), "loss"),
        (_line(**IMPORT_OK) + _line(**{**FORWARD_OK, "params": "10"}), "parameter count"),
        (_line(**IMPORT_OK) + _line(**IMPORT_OK), "second import"),
        (_line(**FORWARD_OK), "before the import"),
        (b"x" * (smoke_mod.RESULT_CAP_BYTES + 1), "more than"),
    ],
)
def test_a_forged_or_malformed_result_line_rejects_the_channel(raw, needle):
    _, why = read_results(raw, NONCE)
    assert needle in why, why


# --- stand-ins for GPU-only imports, environment vs submission, no code blobs ------------------------------------
FA3_GPT = r"""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F
from flash_attn_interface import flash_attn_func as flash_attn_3_func, flash_attn_varlen_func
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _fused_kernel(X, Y, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    tl.store(Y + pid, tl.load(X + pid))


class Hyperparameters:
    vocab_size = int(os.environ.get("VOCAB_SIZE", 8192))
    num_layers = int(os.environ.get("NUM_LAYERS", 11))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", 4))


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, kv_heads * self.d)
        self.v = nn.Linear(dim, kv_heads * self.d)
        self.o = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.h, self.d)
        k = self.k(x).view(b, t, self.kv, self.d)
        v = self.v(x).view(b, t, self.kv, self.d)
        y = flash_attn_3_func(q, k, v, causal=True)
        # the stand-in computes what FlashAttention computes: causal grouped-query attention
        ref = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.repeat_interleave(self.h // self.kv, 2).transpose(1, 2),
            v.repeat_interleave(self.h // self.kv, 2).transpose(1, 2), is_causal=True,
        ).transpose(1, 2)
        assert torch.allclose(y, ref, atol=1e-5), "flash_attn_func differs from causal attention"
        cu = torch.tensor([0, t // 2, t], dtype=torch.int32)
        yv = flash_attn_varlen_func(q[0], k[0], v[0], cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=t,
                                    max_seqlen_k=t, causal=True)[None]
        assert torch.allclose(yv[:, : t // 2], y[:1, : t // 2], atol=1e-5), "varlen differs on the first document"
        %s
        return self.o(y.reshape(b, t, c))


class GPT(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.emb = nn.Embedding(h.vocab_size, h.model_dim)
        self.blocks = nn.ModuleList(Attention(h.model_dim, h.num_heads, h.num_kv_heads) for _ in range(h.num_layers))
        self.head = nn.Linear(h.model_dim, h.vocab_size)

    def forward(self, input_ids, target_ids):
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = x + blk(x)
        return F.cross_entropy(self.head(x).flatten(0, 1), target_ids.flatten())


def main():
    raise SystemExit("main must not run during the smoke test")


if __name__ == "__main__":
    main()
"""


def _fa3_record(tmp_path, line="pass"):
    return make_record(tmp_path, script=FA3_GPT % line, logs=False)


@pytest.mark.slow
def test_an_fa3_record_passes_on_cpu_through_the_standins(tmp_path, torch_needed):
    import importlib.util

    res = smoke_test(_fa3_record(tmp_path), "train_gpt.py", timeout_s=120)
    assert res.ok, res.summary + res.detail
    assert "CPU forward OK" in res.summary and res.standins == ["flash_attn_interface", "triton"]
    assert res.category == ""
    # the stand-ins lived in the sandbox only
    assert importlib.util.find_spec("flash_attn_interface") is None
    assert "flash_attn_interface" not in sys.modules


@pytest.mark.slow
def test_a_bug_in_an_fa3_record_is_the_submissions_fault(tmp_path, torch_needed):
    res = smoke_test(_fa3_record(tmp_path, "y = y * undefined_scale"), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "forward" and "NameError" in res.error
    assert res.category == "submission" and res.summary.endswith("[submission]")
    assert res.standins == ["flash_attn_interface", "triton"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "line, words",
    [
        ("_fused_kernel[(1,)](x, x, 1, BLOCK=128)", "triton kernel _fused_kernel needs a GPU"),
        ("import mamba_ssm; mamba_ssm.Mamba2(d_model=64)", "mamba_ssm.Mamba2 is GPU-only"),
        ("x = x.cuda()", "CUDA"),
    ],
)
def test_gpu_only_code_is_an_environment_gap(tmp_path, torch_needed, line, words):
    res = smoke_test(_fa3_record(tmp_path, line), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.category == "environment", res.summary
    assert words in res.error


@pytest.mark.slow
def test_smoke_cli_reports_the_class_and_the_standins(tmp_path, capsys, torch_needed):
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(_fa3_record(tmp_path / "ok")), SMOKE_FLAG, "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and rep["verdict"] == "verified"
    assert "CPU stand-ins used (sandbox only): flash_attn_interface, triton" in rep["smoke"]["detail"]
    gpu = _fa3_record(tmp_path / "gpu", "_fused_kernel[(1,)](x, x, 1, BLOCK=128)")
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(gpu), SMOKE_FLAG, "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1 and rep["verdict"] == "inconclusive" and rep["smoke"]["category"] == "environment"


PEP701 = 'LABELS = {"a": 1}\nSUMMARY = f"{LABELS["a"]}"\n'


def test_the_python_version_is_checked_before_the_import(tmp_path):
    from verify.environment import PythonNeed

    folder = make_record(tmp_path, script="print('x')\n", logs=False)
    need = PythonNeed((3, 99), "train_gpt.py:1", "a feature of a future Python")
    res = smoke_mod.smoke_test(folder, "train_gpt.py", unsafe=True, python_need=need)
    assert not res.ok and res.stage == "python" and res.category == "environment"
    assert res.summary.startswith("smoke NOT RUN (environment): the record needs Python 3.99+")
    assert res.import_s is None  # nothing ran


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="this interpreter parses PEP 701 f-strings")
def test_smoke_cli_names_the_python_a_312_record_needs(tmp_path, capsys):
    wrapped = _wrap("import os\n" + PEP701 + "x = 1\n" * 2000)
    folder = make_record(tmp_path, script=wrapped, logs=False)
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(folder), SMOKE_FLAG, "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1 and rep["verdict"] == "inconclusive"
    assert "needs Python 3.12+" in rep["reason"] and "decoded" in rep["reason"] and "line 3" in rep["reason"]


def _wrap(source: str) -> str:
    import base64
    import lzma

    blob = base64.b85encode(lzma.compress(source.encode())).decode()
    return f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'


@pytest.mark.slow
def test_a_wrapper_blob_never_reaches_the_report(tmp_path, capsys):
    import random

    rnd = random.Random(3)
    payload = "\n".join(f"V{i} = {rnd.random()!r}" for i in range(3000)) + "\nraise RuntimeError('boom in payload')\n"
    folder = make_record(tmp_path, script=_wrap(payload), logs=False)
    blob = (folder / "train_gpt.py").read_text().split('"')[1]
    assert len(blob) > 20_000
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(folder), SMOKE_FLAG, "--format", "json"])
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert exc.value.code == 1 and "boom in payload" in rep["reason"] and rep["smoke"]["category"] == "submission"
    for text in (out, err):
        assert blob[:60] not in text and blob[-60:] not in text
        assert max(len(line) for line in text.splitlines()) < 400
    assert "-character blob>" in rep["smoke"]["detail"]


def test_scrub_cuts_blobs_and_long_lines():
    import base64

    from verify.smoke import scrub

    b85 = base64.b85encode(os.urandom(4000)).decode()
    text = f'  exec(L.decompress(B.b85decode("{b85}")))\n' + "a " * 400
    out = scrub(text)
    assert b85[:50] not in out and "5,000-character blob>" in out and "[600 characters cut]" in out
    assert all(len(line) <= smoke_mod.MAX_LINE for line in out.splitlines())
