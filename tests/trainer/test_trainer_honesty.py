"""The trainer's log says what ran: the scored line names the real quantisation and compressor and is printed
once, the SDP flags it logs are the ones it set, and DEVICE=auto under torchrun without CUDA stops the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audit.logs import parse_log
from reference_trainer import train_gpt as T
from reference_trainer.synthetic import export_synthetic_dataset, tiny_env

MAGIC = {"zlib": b"\x78", "zstd": b"\x28\xb5\x2f\xfd", "lzma": b"\xfd7zXZ\x00"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return export_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_docs=200, val_docs=20)


def run_main(monkeypatch, workdir: Path, env: dict[str, str]) -> str:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(workdir)
    torch.set_num_threads(1)
    assert T.main() == 0
    return (workdir / "logs" / f"{env['RUN_ID']}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "bits,compressor,stride",
    [(8, "auto", 0), (8, "zstd", 0), (6, "auto", 16), (5, "lzma", 0), (6, "zlib", 16)],
)
def test_scored_line_names_the_real_format_and_is_printed_once(
    monkeypatch, tmp_path, dataset, bits, compressor, stride
):
    env = tiny_env(dataset, RUN_ID="fmt", ITERATIONS=4, QUANT_BITS=bits, COMPRESSOR=compressor, EVAL_STRIDE=stride)
    text = run_main(monkeypatch, tmp_path, {**env, "ARTIFACT_DIR": str(tmp_path)})
    codec = T.resolve_codec(compressor, bits)
    stage = "sliding_window" if stride else "roundtrip"
    tag = f"final_int{bits}_{codec}_{stage}_exact"
    body = [ln for ln in text.split("=" * 100)[-1].splitlines() if ln and not ln.startswith(":::PGOLF")]

    # The artifact on disk is in the format the tag names.
    assert (tmp_path / f"final_model.int{bits}.ptz").read_bytes().startswith(MAGIC[codec])
    # One scored line, under that tag; the baseline's tag only when int8 + zlib is what ran.
    scored = [ln for ln in body if re.match(r"^\S+_exact val_loss:", ln)]
    assert [ln.split()[0] for ln in scored] == [tag]
    assert any(ln.startswith("final_int8_zlib") for ln in body) == (bits == 8 and codec == "zlib")
    value = scored[0].split("val_bpb:")[1]
    assert sum(value in ln for ln in body) == 1  # the scored number is printed once
    if stride:  # the plain round trip still runs, as a diagnostic
        assert any(ln.startswith(f"DIAGNOSTIC final_int{bits}_{codec}_roundtrip val_loss:") for ln in body)
    assert f"final_eval_mode:{stage} scored_line:{tag}" in text
    assert re.search(rf'^:::PGOLF {{"key": "scored_line", "value": "{tag}"', text, re.M)
    # pgolf's own log parser reads the same score and the size lines.
    run = parse_log(text, "fmt.log").last
    assert run.scored.tag == tag and f"{run.scored.val_bpb:.8f}" == value and not run.scored.diagnostic
    model = (tmp_path / f"final_model.int{bits}.ptz").stat().st_size
    assert run.model_bytes == model and run.code_bytes == len(Path(T.__file__).read_bytes())
    assert run.artifact_bytes == model + run.code_bytes
    assert f"Serialized model int{bits}+{codec}: {model} bytes" in text
    assert not any(ln.startswith("sdp_backends:") for ln in body)  # no CUDA: no SDPA flags are set, so none are claimed


def test_sdp_backends_line_reads_back_the_flags_it_sets():
    cuda = torch.backends.cuda
    flags = (cuda.cudnn_sdp_enabled, cuda.flash_sdp_enabled, cuda.mem_efficient_sdp_enabled, cuda.math_sdp_enabled)
    setters = (cuda.enable_cudnn_sdp, cuda.enable_flash_sdp, cuda.enable_mem_efficient_sdp, cuda.enable_math_sdp)
    saved = [f() for f in flags]
    try:
        for set_flag, value in zip(setters, (True, False, True, True)):
            set_flag(value)
        assert T.set_sdp_backends(torch.device("cpu"), "sdpa") is None
        assert T.set_sdp_backends(torch.device("cuda", 0), "fa3") is None
        assert [f() for f in flags] == [True, False, True, True]  # untouched when SDPA's CUDA flags play no part
        line = T.set_sdp_backends(torch.device("cuda", 0), "sdpa")
        assert [f() for f in flags] == [False, True, False, False]  # the baseline's flash-only setting...
        assert line == "sdp_backends:cudnn=False flash=True mem_efficient=False math=False"  # ...as logged
    finally:
        for set_flag, value in zip(setters, saved):
            set_flag(value)


def test_device_auto_under_torchrun_without_cuda_stops_with_one_line(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "DEVICE": "auto", "RUN_ID": "nocuda"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA, even on a GPU machine
    r = subprocess.run([sys.executable, T.__file__], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "train_gpt.py: error: DEVICE=auto under torchrun (WORLD_SIZE=2) but CUDA is not available; "
        "set DEVICE=cpu to run the processes on CPU"
    ]
    assert not (tmp_path / "logs").exists()  # it stopped before opening a log


def test_device_choice(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, distributed in (("cpu", True), ("cpu", False), ("auto", False)):
        monkeypatch.setenv("DEVICE", device)
        assert T.pick_device(T.Hyperparameters(), 0, distributed) == torch.device("cpu")
    assert "DEVICE=auto found no CUDA, running on CPU" in capsys.readouterr().err  # a fallback, said out loud
    for device, message in (("auto", "under torchrun"), ("cuda", "DEVICE=cuda but CUDA")):
        monkeypatch.setenv("DEVICE", device)
        with pytest.raises(T.LaunchError, match=message):
            T.pick_device(T.Hyperparameters(), 0, True)
