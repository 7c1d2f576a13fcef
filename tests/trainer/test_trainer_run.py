"""End-to-end runs of train_gpt.main() on the tiny CPU config: baseline log lines, the round-tripped artifact
is what gets scored, warm-up restores the initial state, wallclock stop, late QAT, 2-process gloo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference_trainer import train_gpt as T
from reference_trainer.synthetic import export_synthetic_dataset, tiny_env

NUM = r"[-+]?\d+(?:\.\d+)?"
BASELINE_LINES = {
    "val_banner": r"^val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=\S+$",
    "train_loader": r"^train_loader:dataset:\S+ train_shards:\d+$",
    "val_loader": r"^val_loader:shards pattern=\S+ tokens:\d+$",
    "model_params": r"^model_params:\d+$",
    "world": r"^world_size:\d+ grad_accum_steps:\d+$",
    "train_cfg": rf"^train_batch_tokens:\d+ train_seq_len:\d+ iterations:\d+ warmup_steps:\d+ max_wallclock_seconds:{NUM}$",
    "seed": r"^seed:\d+$",
    "step_train": rf"^step:\d+/\d+ train_loss:{NUM} train_time:\d+ms step_avg:{NUM}ms$",
    "step_val": rf"^step:\d+/\d+ val_loss:\d+\.\d{{4}} val_bpb:\d+\.\d{{4}} train_time:\d+ms step_avg:{NUM}ms$",
    "raw_size": r"^Serialized model: \d+ bytes$",
    "code_size": r"^Code size: \d+ bytes$",
    "quant_size": rf"^Serialized model int8\+zlib: \d+ bytes \(payload:\d+ raw_torch:\d+ payload_ratio:{NUM}x\)$",
    "total_size": r"^Total submission size int8\+zlib: \d+ bytes$",
    "roundtrip": r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$",
    "exact": r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return export_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_docs=300, val_docs=30)


def run_main(monkeypatch, workdir: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(workdir)
    torch.set_num_threads(1)
    rc = T.main()
    text = (workdir / "logs" / f"{env['RUN_ID']}.txt").read_text(encoding="utf-8")
    body = text.split("=" * 100)[-1]  # the log starts with the script's own source, then versions
    return rc, [ln for ln in body.splitlines() if ln]


def exact(lines: list[str], tag: str) -> tuple[float, float]:
    m = [re.match(rf"^{tag} val_loss:({NUM}) val_bpb:({NUM})", ln) for ln in lines]
    found = [x for x in m if x]
    assert found, tag
    return float(found[-1].group(1)), float(found[-1].group(2))


def test_baseline_log_lines_and_round_trip_score(monkeypatch, tmp_path, dataset):
    env = tiny_env(dataset, RUN_ID="e2e", VAL_LOSS_EVERY=6, ARTIFACT_DIR=str(tmp_path / "art"))
    rc, lines = run_main(monkeypatch, tmp_path, env)
    assert rc == 0
    for name, pattern in BASELINE_LINES.items():
        assert any(re.match(pattern, ln) for ln in lines), name
    assert (tmp_path / "logs" / "e2e.txt").read_text().startswith('"""\npgolf reference trainer')
    # The scored number is the artifact on disk, loaded into a fresh model, evaluated again here.
    h = T.Hyperparameters()
    fresh = T.GPT(h, "sdpa")
    fresh.load_state_dict(T.load_artifact(str(tmp_path / "art" / "final_model.int8.ptz")), strict=True)
    sp = T.spm.SentencePieceProcessor(model_file=str(dataset.tokenizer_path))
    luts = T.build_sentencepiece_luts(sp, h.vocab_size, torch.device("cpu"))
    val = T.load_validation_tokens(h.val_files, h.eval_seq_len)
    import contextlib

    again = T.eval_val(h, fresh, 0, 1, torch.device("cpu"), 1, val, luts, contextlib.nullcontext)
    assert exact(lines, "final_int8_zlib_roundtrip_exact") == pytest.approx(again, abs=1e-8)
    sizes = {
        k: int(re.search(r"(\d+) bytes", ln).group(1))
        for ln in lines
        for k in ("Code size", "Serialized model int8+zlib", "Total submission size int8+zlib")
        if ln.startswith(k + ":")
    }
    assert sizes["Code size"] == len(Path(T.__file__).read_bytes())
    assert sizes["Serialized model int8+zlib"] == (tmp_path / "art" / "final_model.int8.ptz").stat().st_size
    assert sizes["Total submission size int8+zlib"] == sizes["Code size"] + sizes["Serialized model int8+zlib"]


def test_warmup_restores_the_initial_state(monkeypatch, tmp_path, dataset):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    _, cold = run_main(monkeypatch, a, tiny_env(dataset, RUN_ID="cold", ITERATIONS=4, ARTIFACT_DIR=str(a)))
    _, warm = run_main(
        monkeypatch, b, tiny_env(dataset, RUN_ID="warm", ITERATIONS=4, WARMUP_STEPS=3, ARTIFACT_DIR=str(b))
    )
    assert any(ln == "warmup_step:3/3" for ln in warm)
    assert exact(warm, "final_int8_zlib_roundtrip_exact") == exact(cold, "final_int8_zlib_roundtrip_exact")


def test_wallclock_cap_stops_training(monkeypatch, tmp_path, dataset):
    clock = iter(range(10**6))
    monkeypatch.setattr(T, "_now", lambda: float(next(clock)))  # every reading advances one second
    _, lines = run_main(
        monkeypatch,
        tmp_path,
        tiny_env(dataset, RUN_ID="cap", ITERATIONS=1000, MAX_WALLCLOCK_SECONDS=5, ARTIFACT_DIR=str(tmp_path)),
    )
    stop = [re.match(r"^stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)/1000$", ln) for ln in lines]
    stop = [m for m in stop if m]
    assert len(stop) == 1
    assert int(stop[0].group(1)) >= 5000 and 1 <= int(stop[0].group(2)) < 10


def test_late_qat_switches_on_and_changes_training(monkeypatch, tmp_path, dataset):
    runs = {}
    for name, extra in (("plain", {}), ("qat", {"LATE_QAT_THRESHOLD": 0.5})):
        d = tmp_path / name
        d.mkdir()
        _, lines = run_main(
            monkeypatch,
            d,
            tiny_env(
                dataset,
                RUN_ID=name,
                ITERATIONS=10,
                WARMDOWN_ITERS=10,
                TRAIN_LOG_EVERY=1,
                QUANT_BITS=6,
                ARTIFACT_DIR=str(d),
                **extra,
            ),
        )
        runs[name] = lines
    assert "late_qat:enabled step:6 scale:0.4000" in runs["qat"]
    losses = {k: [ln.split()[1] for ln in v if " train_loss:" in ln] for k, v in runs.items()}
    assert losses["plain"][:7] == losses["qat"][:7]  # identical until the switch...
    assert losses["plain"][7:] != losses["qat"][7:]  # ...then the fake-quantised forward takes over


def test_modern_stack_run_with_sliding_and_ttt(monkeypatch, tmp_path, dataset):
    env = tiny_env(
        dataset,
        RUN_ID="modern",
        QUANT_BITS=6,
        EMA_ENABLED=1,
        EMA_DECAY=0.5,
        SMEAR_GATE=1,
        XSA_LAST_N=2,
        BIGRAM_VOCAB_SIZE=64,
        MLP_ACT="leaky_relu2",
        EVAL_STRIDE=16,
        TTT_ENABLED=1,
        TTT_CHUNK_TOKENS=2048,
        TTT_EPOCHS=1,
        PRUNE_FRAC=0.1,
        ARTIFACT_DIR=str(tmp_path),
    )
    rc, lines = run_main(monkeypatch, tmp_path, env)
    assert rc == 0 and "ema:applying EMA weights" in lines
    assert any(ln.startswith("Serialized model int6+") for ln in lines)
    codec = T.resolve_codec("auto", 6)
    # TTT is the score, printed once under a tag naming the artifact's real format; the earlier stages are
    # diagnostics, and nothing is printed under the baseline's int8+zlib tag.
    ttt = exact(lines, f"final_int6_{codec}_legal_ttt_exact")
    sliding = exact(lines, f"DIAGNOSTIC final_int6_{codec}_sliding_window")
    plain = exact(lines, f"DIAGNOSTIC final_int6_{codec}_roundtrip")
    assert len({ttt, sliding, plain}) == 3
    assert not any("final_int8_zlib" in ln for ln in lines)
    assert [ln for ln in lines if ln.endswith(f"val_bpb:{ttt[1]:.8f}") and not ln.startswith("DIAGNOSTIC")] == [
        f"final_int6_{codec}_legal_ttt_exact val_loss:{ttt[0]:.8f} val_bpb:{ttt[1]:.8f}"
    ]


def test_bad_configuration_is_refused(monkeypatch, tmp_path, dataset):
    with pytest.raises(ValueError, match="exclusive"):
        run_main(monkeypatch, tmp_path, tiny_env(dataset, RUN_ID="bad", EMA_ENABLED=1, SWA_ENABLED=1))
    monkeypatch.delenv("SWA_ENABLED")
    with pytest.raises(ValueError, match="VOCAB_SIZE"):
        run_main(monkeypatch, tmp_path, tiny_env(dataset, RUN_ID="bad2", VOCAB_SIZE=dataset.vocab_size + 1))


def _failure_excerpt(stderr: str) -> str:
    """The lines that say why a rank died (a C++ `terminate`/`what()`, a Python error), then the tail: the
    launcher's own summary alone never names the cause."""
    causes = [ln for ln in stderr.splitlines() if re.search(r"terminate|what\(\)|Error|enforce|Exception", ln)]
    return "\n".join(causes[:20]) + "\n---\n" + stderr[-1500:]


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(tmp_path, dataset):
    script = str(Path(T.__file__))
    base = {**os.environ, **tiny_env(dataset, ITERATIONS=4), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    single = subprocess.run(
        [sys.executable, script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "RUN_ID": "one", "GRAD_ACCUM_STEPS": "2", "ARTIFACT_DIR": "one"},
    )
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "RUN_ID": "two", "GRAD_ACCUM_STEPS": "1", "ARTIFACT_DIR": "two"},
    )
    assert double.returncode == 0, _failure_excerpt(double.stderr)
    assert "world_size:2 grad_accum_steps:1" in double.stdout
    one = exact(single.stdout.splitlines(), "final_int8_zlib_roundtrip_exact")
    two = exact(double.stdout.splitlines(), "final_int8_zlib_roundtrip_exact")
    assert two == pytest.approx(one, rel=1e-4)
