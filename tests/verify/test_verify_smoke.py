"""--smoke: import the entry script and run a tiny CPU forward in a sandboxed child process."""

from __future__ import annotations

import json

import pytest

from tests.verify.test_verify_fixtures import make_record
from verify import cli as verify_cli
from verify.smoke import smoke_test

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # each case starts a sandboxed python that imports torch

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


def test_import_and_tiny_forward_ok(tmp_path):
    res = smoke_test(_folder(tmp_path), "train_gpt.py", timeout_s=120)
    assert res.ok, res.summary + res.detail
    assert res.summary.startswith("import OK in ") and "CPU forward OK" in res.summary
    assert "(GPT, " in res.summary  # the tiny config from the env: 2 layers, dim 64, vocab 64
    assert "no network namespace" in res.isolation or "socket guard" in res.isolation


def test_cuda_only_call_at_import_is_reported_exactly(tmp_path):
    res = smoke_test(_folder(tmp_path, "\ntorch.cuda.set_device(0)\n"), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "import"
    assert "import FAILED" in res.summary and "train_gpt.py:" in res.where and "torch.cuda.set_device(0)" in res.where


def test_cuda_tensor_in_forward_is_reported_as_forward_failure(tmp_path):
    script = TINY_GPT.replace("x = self.emb(input_ids)", "x = self.emb(input_ids.cuda())") % ""
    res = smoke_test(make_record(tmp_path, script=script, logs=False), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "forward" and res.summary.startswith("import OK")
    assert "CPU forward FAILED" in res.summary


def test_network_is_blocked(tmp_path):
    extra = '\nimport socket\nsocket.create_connection(("example.com", 80), timeout=3)\n'
    res = smoke_test(_folder(tmp_path, extra), "train_gpt.py", timeout_s=120)
    assert not res.ok and res.stage == "import"
    assert any(w in res.error for w in ("blocked", "unreachable", "Name or service", "resolution"))


def test_path_bug_and_bom_are_named(tmp_path):
    folder = _folder(tmp_path, '\nopen("/nonexistent/records/tokenizer.model").read()\n')
    raw = (folder / "train_gpt.py").read_bytes()
    (folder / "train_gpt.py").write_bytes(b"\xef\xbb\xbf" + raw)
    res = smoke_test(folder, "train_gpt.py", timeout_s=120)
    assert not res.ok and "FileNotFoundError" in res.error
    assert any("BOM" in n for n in res.notes)


def test_memory_limit_stops_a_runaway_import(tmp_path):
    res = smoke_test(
        _folder(tmp_path, "\nhog = bytearray(3 * 1024**3)\n"), "train_gpt.py", timeout_s=120, memory_mb=1024
    )
    assert not res.ok and res.stage == "import" and "MemoryError" in res.error


def test_smoke_cli_exit_codes(tmp_path, capsys):
    ok = _folder(tmp_path / "a")
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(ok), "--smoke", "--format", "json", "-q"])
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and rep["mode"] == "smoke" and rep["smoke"]["ok"] is True
    bad = _folder(tmp_path / "b", "\nimport flash_attn_interface\n")
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(bad), "--smoke", "--format", "markdown", "-q"])
    md = capsys.readouterr().out
    assert exc.value.code == 1 and "No module named 'flash_attn_interface'" in md


def test_smoke_builds_a_model_that_takes_the_hyperparameters_object():
    from tests.support import EXAMPLES
    from verify.smoke import smoke_test

    res = smoke_test(EXAMPLES / "clean_baseline", "train_gpt.py")
    assert res.ok, res.summary
    assert "CPU forward OK" in res.summary
