"""A synthetic record folder for the verifier tests.

Its `train_gpt.py` needs no torch and no data: under torchrun it prints the baseline's log lines for the
seed it was given and writes an artifact, and env vars make chosen seeds crash, hang, write an oversize
artifact or train past the cap. It runs through the real launch path (copy, torchrun, timeout, collect).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from verify.checks import log_facts

FAKE_TRAIN = r"""
import os, sys, time

rank = int(os.environ.get("RANK", "0"))
seed = int(os.environ.get("SEED", "1337"))
run_id = os.environ.get("RUN_ID", "run")
world = int(os.environ.get("WORLD_SIZE", "1"))

def seeds(name):
    return {int(s) for s in os.environ.get(name, "").split(",") if s.strip()}

def log(line):
    if rank == 0:
        print(line, flush=True)
        os.makedirs("logs", exist_ok=True)
        with open(f"logs/{run_id}.txt", "a") as fh:
            fh.write(line + "\n")

log(f"world_size:{world} grad_accum_steps:{8 // max(world, 1)}")
log(f"seed:{seed + int(os.environ.get('FAKE_SEED_OFFSET', '0'))}")
if seed in seeds("FAKE_HANG_SEEDS"):
    time.sleep(3600)  # every rank hangs: the verifier must kill the whole tree
if seed in seeds("FAKE_CRASH_SEEDS"):
    raise RuntimeError("CUDA error: out of memory (synthetic crash)")
t0 = time.time()
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
# the script's own timer: honest unless this seed is made to report a run past the 600 s cap
train_ms = 612345 if seed in seeds("FAKE_SLOW_SEEDS") else int((time.time() - t0) * 1000) + 1
log("step:1/20000 train_loss:6.9000 train_time:100ms step_avg:100.00ms")
log(f"step:13780/20000 train_loss:3.1000 train_time:{train_ms}ms step_avg:{train_ms / 13780:.2f}ms")
log(f"stopping_early: wallclock_cap train_time:{train_ms}ms step:13780/20000")
model_bytes = 15_999_000 if seed in seeds("FAKE_OVERSIZE_SEEDS") else 1_000_000
code_bytes = os.path.getsize(__file__)
if rank == 0:
    with open("final_model.pt", "wb") as fh:
        fh.truncate(3 * model_bytes)
    with open("final_model.int8.ptz", "wb") as fh:
        fh.truncate(model_bytes)
log(f"Serialized model int8+zlib: {model_bytes} bytes (payload:1 raw_torch:1 payload_ratio:1.00x)")
log(f"Code size: {code_bytes} bytes")
log(f"Total submission size int8+zlib: {model_bytes + code_bytes} bytes")
bpb = 1.2 + (seed % 10) * 0.0001 + float(os.environ.get("FAKE_BPB_SHIFT", "0"))
loss = bpb * 1.6886
log(f"final_int8_zlib_roundtrip val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:12345ms")
log(f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
"""

SEEDS = (42, 314, 1234)


def fake_bpb(seed: int) -> float:
    return 1.2 + (seed % 10) * 0.0001


def fake_log(
    seed: int,
    *,
    train_ms: int = 599876,
    model_bytes: int = 1_000_000,
    code_bytes: int = 2_000,
    bpb: float | None = None,
) -> str:
    bpb = fake_bpb(seed) if bpb is None else bpb
    loss = bpb * 1.6886
    return "\n".join(
        [
            "world_size:8 grad_accum_steps:1",
            f"seed:{seed}",
            "step:1/20000 train_loss:6.9000 train_time:100ms step_avg:100.00ms",
            f"step:13780/20000 train_loss:3.1000 train_time:{train_ms}ms step_avg:{train_ms / 13780:.2f}ms",
            f"stopping_early: wallclock_cap train_time:{train_ms}ms step:13780/20000",
            f"Serialized model int8+zlib: {model_bytes} bytes (payload:1 raw_torch:1 payload_ratio:1.00x)",
            f"Code size: {code_bytes} bytes",
            f"Total submission size int8+zlib: {model_bytes + code_bytes} bytes",
            f"final_int8_zlib_roundtrip val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:12345ms",
            f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}",
            "",
        ]
    )


def make_record(
    root: Path, *, env: str = "", claimed: dict[int, float] | None = None, logs: bool = True, script: str = FAKE_TRAIN
) -> Path:
    """A record folder: train_gpt.py, README with a run command, submission.json, one log per seed."""
    folder = root / "2026-01-01_Synthetic"
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text(script)
    (folder / "README.md").write_text(
        "# Synthetic record\n\nRun:\n\n```bash\n"
        f"{env + ' ' if env else ''}torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    )
    claimed = claimed if claimed is not None else {s: fake_bpb(s) for s in SEEDS}
    meta = {
        "author": "synthetic",
        "github_id": "synthetic",
        "name": "Synthetic",
        "date": "2026-01-01T00:00:00Z",
        "val_bpb": sum(claimed.values()) / len(claimed) if claimed else None,
        "seed_results": {str(s): {"val_bpb": v} for s, v in claimed.items()},
    }
    (folder / "submission.json").write_text(json.dumps(meta, indent=2))
    if logs:
        for s in SEEDS:
            (folder / f"train_seed{s}.log").write_text(fake_log(s))
    return folder


def fast_env(monkeypatch) -> None:
    """Keep torchrun's rendezvous and the env probe quick on a 2-core CI box."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# --- the fixture checks itself ---------------------------------------------------------------------
def test_fake_log_reads_back():
    f = log_facts(fake_log(314, train_ms=612345, model_bytes=5))
    assert (f.seed, f.train_time_ms, f.model_bytes) == (314, 612345, 5)
    assert f.val_bpb == round(fake_bpb(314), 8)
    assert f.eval_time_ms == 12345


def test_make_record_layout(tmp_path):
    folder = make_record(tmp_path, env="FAKE_SLEEP=0")
    names = sorted(os.listdir(folder))
    assert names == [
        "README.md",
        "submission.json",
        "train_gpt.py",
        "train_seed1234.log",
        "train_seed314.log",
        "train_seed42.log",
    ]
