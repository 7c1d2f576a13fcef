#!/usr/bin/env python3
"""Side-by-side benchmark: the challenge's baseline `train_gpt.py` vs pgolf's reference trainer at the same
configuration, reporting ms/step, tokens/s and val_bpb after the same number of steps.

The baseline script is read from a local copy (`--baseline PATH`, or `--mirror GITDIR` to extract
`main:train_gpt.py` from a bare mirror into the work directory); it is never committed to pgolf.

    # GPU (1 GPU: grad_accum 8 as in the baseline; --nproc 8 on a full node), synthetic data generated offline
    python benchmarks/trainer_vs_baseline.py --mirror /path/to/parameter-golf.git --steps 200 --out /tmp/bench
    # real data
    python benchmarks/trainer_vs_baseline.py --baseline ./train_gpt.py --data-path ./data/datasets/fineweb10B_sp1024 \\
        --tokenizer-path ./data/tokenizers/fineweb_1024_bpe.model --vocab-size 1024 --steps 500
    # CPU dry mode: tiny config, our trainer only (the baseline requires CUDA), checks the harness end to end
    python benchmarks/trainer_vs_baseline.py --cpu --steps 8 --out /tmp/bench_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.errors import InputError  # noqa: E402
from audit.load.git import git  # noqa: E402
from reference_trainer.synthetic import TINY_TRAIN_ENV, export_synthetic_dataset  # noqa: E402

OURS = ROOT / "reference_trainer" / "train_gpt.py"
NUM = r"[-+]?\d+(?:\.\d+)?"
TRAIN_LINE = re.compile(rf"^step:(\d+)/(\d+) train_loss:({NUM}) train_time:({NUM})ms step_avg:({NUM})ms", re.M)
VAL_LINE = re.compile(rf"^step:(\d+)/(\d+) val_loss:({NUM}) val_bpb:({NUM})", re.M)
FINAL_LINE = re.compile(rf"^final_int8_zlib_roundtrip_exact val_loss:({NUM}) val_bpb:({NUM})", re.M)
# The tiny CPU configuration (seconds per run): the trainer's own tiny shape, with the run length set per
# benchmark run (run_env); the GPU default is the baseline's own shape.
_RUN_LENGTH = {"ITERATIONS", "WARMDOWN_ITERS", "VAL_LOSS_EVERY", "TRAIN_LOG_EVERY", "MAX_WALLCLOCK_SECONDS"}
CPU_ENV = {**{k: v for k, v in TINY_TRAIN_ENV.items() if k not in _RUN_LENGTH}, "OMP_NUM_THREADS": "1"}


class BenchError(Exception):
    """Bad arguments or environment: one line on stderr, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--baseline", type=Path, help="local copy of the challenge's train_gpt.py")
    src.add_argument("--mirror", type=Path, help="bare git mirror of openai/parameter-golf (reads main:train_gpt.py)")
    p.add_argument("--ours", type=Path, default=OURS, help="our train_gpt.py (default: the reference trainer)")
    p.add_argument("--steps", type=int, default=200, help="training steps for both runs (ITERATIONS)")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun when > 1)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--data-path", type=Path, help="shard folder (default: synthetic data generated in --out)")
    p.add_argument("--tokenizer-path", type=Path)
    p.add_argument("--vocab-size", type=int)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra env var for both runs (repeatable), e.g. TRAIN_BATCH_TOKENS=262144",
    )
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="work directory (logs, artifacts, data)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--cpu", action="store_true", help="CPU dry mode: tiny config, our trainer only")
    p.add_argument("--dry-run", action="store_true", help="print the commands and env, run nothing")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    args = p.parse_args(argv)
    if args.steps < 1:
        raise BenchError("--steps must be >= 1")
    if args.nproc < 1 or 8 % args.nproc:
        raise BenchError("--nproc must divide 8 (the baseline derives grad_accum_steps = 8 // WORLD_SIZE)")
    if bool(args.data_path) != bool(args.tokenizer_path) or (args.data_path and not args.vocab_size):
        raise BenchError("--data-path, --tokenizer-path and --vocab-size go together")
    for item in args.env:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", item):
            raise BenchError(f"--env expects KEY=VALUE, got {item!r}")
    if not args.cpu and not args.dry_run and not (args.baseline or args.mirror):
        raise BenchError("give --baseline PATH or --mirror GITDIR (or --cpu for the dry mode)")
    if args.baseline and not args.baseline.is_file():
        raise BenchError(f"--baseline: no such file {args.baseline}")
    if not args.ours.is_file():
        raise BenchError(f"--ours: no such file {args.ours}")
    return args


def baseline_script(args: argparse.Namespace) -> Path | None:
    if args.baseline:
        return args.baseline.resolve()
    if not args.mirror:
        return None
    dest = args.out / "baseline" / "train_gpt.py"
    if args.dry_run:
        return dest
    try:  # through the auditor's git(), which neutralises the repository's own config
        blob = git(str(args.mirror), "show", revs=("main:train_gpt.py",))
    except InputError:
        raise BenchError(f"--mirror: cannot read main:train_gpt.py from {args.mirror}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(blob)
    return dest


def dataset_env(args: argparse.Namespace) -> dict[str, str]:
    if args.data_path:
        return {
            "DATA_PATH": str(args.data_path.resolve()),
            "TOKENIZER_PATH": str(args.tokenizer_path.resolve()),
            "VOCAB_SIZE": str(args.vocab_size),
        }
    if args.dry_run:
        return {"DATA_PATH": str(args.out / "data" / "datasets" / "<synthetic>")}
    ds = export_synthetic_dataset(
        args.out / "data",
        n_docs=3000 if not args.cpu else 400,
        val_docs=200 if not args.cpu else 40,
        shard_tokens=1_000_000 if not args.cpu else 16_384,
    )
    return {k: str(v) for k, v in ds.env().items()}


def run_env(args: argparse.Namespace, data: dict[str, str], name: str) -> dict[str, str]:
    env = {
        **(CPU_ENV if args.cpu else {}),
        **data,
        "ITERATIONS": str(args.steps),
        "MAX_WALLCLOCK_SECONDS": "0",
        "VAL_LOSS_EVERY": "0",
        "TRAIN_LOG_EVERY": str(max(1, args.steps // 10)),
        "SEED": str(args.seed),
        "RUN_ID": f"bench_{name}",
    }
    env.update(item.split("=", 1) for item in args.env)
    return env


def command(script: Path, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]


def parse_result(text: str, batch_tokens: int, steps: int) -> dict:
    """ms/step and tokens/s from the last training line; val_bpb at `steps` (pre-quant) and round-tripped."""
    train = TRAIN_LINE.findall(text)
    if not train:
        raise ValueError("no training step lines in the log")
    step, _, _, train_ms, _ = train[-1]
    step, train_ms = int(step), float(train_ms)
    val = {int(s): float(bpb) for s, _, _, bpb in VAL_LINE.findall(text)}
    final = FINAL_LINE.findall(text)
    return {
        "steps": step,
        "ms_per_step": train_ms / step,
        "tokens_per_s": batch_tokens * step / (train_ms / 1000.0) if train_ms > 0 else None,
        "val_bpb_at_steps": val.get(steps),
        "roundtrip_val_bpb": float(final[0][1]) if final else None,
    }


def run_one(name: str, script: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    workdir = args.out / name
    workdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        command(script, args.nproc),
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    (workdir / "console.log").write_text(r.stdout + r.stderr, encoding="utf-8")
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"name": name, "error": f"exit {r.returncode}: {tail[0]}"}
    batch = int(env.get("TRAIN_BATCH_TOKENS", 524_288))
    return {"name": name, **parse_result(r.stdout, batch, args.steps)}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    out = [
        "| trainer | steps | ms/step | tokens/s | val_bpb @ steps (pre-quant) | val_bpb round-trip |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r or "skipped" in r:
            out.append(f"| {r['name']} | {r.get('error') or r.get('skipped')} | | | | |")
            continue
        out.append(
            f"| {r['name']} | {r['steps']} | {r['ms_per_step']:.2f} | {_fmt(r['tokens_per_s'], ',.0f')} | "
            f"{_fmt(r['val_bpb_at_steps'], '.4f')} | {_fmt(r['roundtrip_val_bpb'], '.8f')} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        args.out = args.out.resolve()
        if not args.cpu and not args.dry_run:
            import torch

            if not torch.cuda.is_available():
                raise BenchError("no CUDA device here: the baseline needs one (use --cpu for the dry mode)")
        base = baseline_script(args)
        data = dataset_env(args)
    except BenchError as e:
        print(f"trainer_vs_baseline: error: {e}", file=sys.stderr)
        return 2
    plan = [("ours", args.ours.resolve())]
    if base is not None and not args.cpu:
        plan.insert(0, ("baseline", base))
    if args.dry_run:
        for name, script in plan:
            env = run_env(args, data, name)
            print(" ".join(f"{k}={v}" for k, v in sorted(env.items())), " ".join(command(script, args.nproc)))
        return 0
    rows = [run_one(name, script, args, run_env(args, data, name)) for name, script in plan]
    if args.cpu:
        rows.insert(0, {"name": "baseline", "skipped": "skipped: the baseline requires CUDA"})
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"steps": args.steps, "nproc": args.nproc, "cpu": args.cpu, "rows": rows}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
