#!/usr/bin/env bash
# The reference trainer's GPU check: one GPU, under 8 minutes, one table at the end.
#
#   1. compare  the trainer at its default config (ATTN_BACKEND=sdpa; again with fa3 when flash_attn_interface
#               imports on a Hopper GPU) against the challenge's baseline train_gpt.py, read from a local copy that
#               is never committed, at the same config and seed, STEPS (200) steps each: ms/step, the ratio to
#               the baseline, val_bpb at the last step (benchmarks/trainer_vs_baseline.py runs both);
#   2. eval     one short run with EVAL_STRIDE=64 and TTT on, started from the packed wrapper: the eval path's
#               timings (plain round trip, sliding window, TTT, total);
#   3. verify   that run packaged as a 1-GPU record (pgolf-train package --pack) and re-run by pgolf-verify.
#
# Usage:
#   benchmarks/gpu_check.sh --baseline PATH [--out DIR] [--steps N] [--budget SECONDS]
#                           [--data-path DIR --tokenizer-path FILE --vocab-size N] [--python PY] [--dry-run]
#   BASELINE_TRAIN_GPT=PATH benchmarks/gpu_check.sh
#
# --data-path/--tokenizer-path/--vocab-size give real data to the comparison (default: synthetic data generated
# in DIR); the eval and verify steps always use the synthetic data, whose small validation split keeps them short.
# Every step runs under what is left of --budget (470 s by default): a step that does not fit is skipped, and
# the table says so. --dry-run prints the commands and runs nothing (no GPU needed). Exit status: 0 when every
# step that ran passed, 1 otherwise, 2 for a usage error or a machine that cannot run the check (no GPU).
set -uo pipefail

ROOT=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
BASELINE=${BASELINE_TRAIN_GPT:-}
OUT=${GPU_CHECK_OUT:-gpu_check_out}
STEPS=200
BUDGET=470
PY=${PYTHON:-python3}
DRY=0
DATA_PATH="" TOKENIZER_PATH="" VOCAB_SIZE=""
SEED=1337

die() { echo "gpu_check: error: $*" >&2; exit 2; }

while (($#)); do
  case $1 in
    --baseline) BASELINE=${2-}; shift 2 || die "--baseline needs a path" ;;
    --out) OUT=${2-}; shift 2 || die "--out needs a folder" ;;
    --steps) STEPS=${2-}; shift 2 || die "--steps needs a number" ;;
    --budget) BUDGET=${2-}; shift 2 || die "--budget needs seconds" ;;
    --python) PY=${2-}; shift 2 || die "--python needs an interpreter" ;;
    --data-path) DATA_PATH=${2-}; shift 2 || die "--data-path needs a folder" ;;
    --tokenizer-path) TOKENIZER_PATH=${2-}; shift 2 || die "--tokenizer-path needs a file" ;;
    --vocab-size) VOCAB_SIZE=${2-}; shift 2 || die "--vocab-size needs a number" ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (--help for usage)" ;;
  esac
done
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive integer, got '$STEPS'"
[[ $BUDGET =~ ^[1-9][0-9]*$ ]] || die "--budget must be a positive number of seconds, got '$BUDGET'"
if [[ -n $DATA_PATH || -n $TOKENIZER_PATH || -n $VOCAB_SIZE ]]; then
  [[ -n $DATA_PATH && -n $TOKENIZER_PATH && -n $VOCAB_SIZE ]] || die "--data-path, --tokenizer-path and --vocab-size go together"
fi

# A machine without a GPU stops here, before anything else is looked at.
if ((!DRY)); then
  command -v nvidia-smi >/dev/null 2>&1 || die "no GPU here: nvidia-smi not found (this check needs one NVIDIA GPU; --dry-run prints its commands)"
  GPU_LIST=$(nvidia-smi -L 2>&1) && [[ $GPU_LIST == *GPU* ]] || die "nvidia-smi lists no GPU: ${GPU_LIST%%$'\n'*}"
  GPU_NAME=${GPU_LIST%%$'\n'*}
fi
[[ -n $BASELINE ]] || die "give the baseline train_gpt.py: --baseline PATH or BASELINE_TRAIN_GPT=PATH (a local copy, never committed)"
[[ -f $BASELINE || $DRY == 1 ]] || die "--baseline: no such file $BASELINE"
if ((!DRY)); then
  BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")
  missing=$("$PY" - <<'PY' 2>&1
import importlib.util
need = ("torch", "numpy", "sentencepiece", "click", "rich", "scipy")
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PY
) || die "$PY does not run: $missing"
  [[ -z $missing ]] || die "$PY lacks $missing (pip install -e '$ROOT[train]')"
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
    || die "$PY's torch has no CUDA ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1))"
  FA3=$("$PY" -c 'import torch, flash_attn_interface; print(int(torch.cuda.get_device_capability()[0] >= 9))' 2>/dev/null || echo 0)
else
  FA3="1 (if flash_attn_interface imports on a Hopper GPU)"
fi
if ((DRY)); then
  [[ $OUT == /* ]] || OUT=$PWD/$OUT
else
  mkdir -p "$OUT" 2>/dev/null || die "cannot create --out $OUT"
  OUT=$(cd "$OUT" && pwd)
fi
DEADLINE=$((SECONDS + BUDGET))
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
declare -A RESULT=()  # step -> ok | failed (exit N) | timed out | skipped: …

# [RUN_CWD=DIR] run STEP MIN_SECONDS CMD…: the command in ROOT (or DIR), its output in OUT/STEP.log, killed at the
# deadline; in dry-run mode only printed. A step with less than MIN_SECONDS left is skipped.
run() {
  local step=$1 need=$2 cwd=${RUN_CWD:-$ROOT}; shift 2
  if ((DRY)); then
    printf '[%s]' "$step"; [[ $cwd == "$ROOT" ]] || printf ' cd %q &&' "$cwd"; printf ' %q' "$@"; printf '\n'
    RESULT[$step]="dry-run"
    return 0
  fi
  local left=$((DEADLINE - SECONDS))
  if ((left < need)); then
    RESULT[$step]="skipped: ${left}s of the budget left, needs ~${need}s"
    echo "gpu_check: $step skipped (${left}s left)" >&2
    return 1
  fi
  echo "gpu_check: $step (${left}s left) …" >&2
  local t0=$SECONDS
  (cd "$cwd" && timeout -k 15 "$left" "$@") >"$OUT/$step.log" 2>&1
  local rc=$? took=$((SECONDS - t0)) last
  last=$(tail -n 1 "$OUT/$step.log" 2>/dev/null | tr -d '|' | cut -c1-160)
  case $rc in
    0) RESULT[$step]="ok (${took}s)" ;;
    124|137) RESULT[$step]="timed out at the budget (${took}s)" ;;
    *) RESULT[$step]="failed (exit $rc, ${took}s): ${last:-no output} [$OUT/$step.log]" ;;
  esac
  return "$rc"
}

# --- data ---------------------------------------------------------------------------------------------------
# Synthetic shards and tokenizer, generated offline (the same sizes trainer_vs_baseline.py generates).
SYN=$OUT/data
run data 20 "$PY" -m reference_trainer.cli synth-data "$SYN" --docs 3000 --val-docs 200 --shard-tokens 1000000 \
  || { echo "gpu_check: error: the synthetic data failed, nothing else can run (see $OUT/data.log)" >&2; exit 1; }
if ((DRY)); then
  SYN_ENV=(DATA_PATH="$SYN/datasets/fineweb10B_sp<V>" TOKENIZER_PATH="$SYN/tokenizers/fineweb_<V>_bpe.model" VOCAB_SIZE="<V>")
else
  mapfile -t SYN_ENV < <(sed -n 's/^export //p' "$OUT/data.log")
fi
syn() { local kv; for kv in "${SYN_ENV[@]}"; do [[ $kv == "$1="* ]] && echo "${kv#*=}"; done; }
if [[ -n $DATA_PATH ]]; then
  COMPARE_DATA=(--data-path "$DATA_PATH" --tokenizer-path "$TOKENIZER_PATH" --vocab-size "$VOCAB_SIZE")
else
  COMPARE_DATA=(--data-path "$(syn DATA_PATH)" --tokenizer-path "$(syn TOKENIZER_PATH)" --vocab-size "$(syn VOCAB_SIZE)")
fi

# --- 1. compare: default config, same seed, STEPS steps -------------------------------------------------------
run compare_sdpa 150 "$PY" benchmarks/trainer_vs_baseline.py --baseline "$BASELINE" --steps "$STEPS" --seed "$SEED" \
  --env ATTN_BACKEND=sdpa "${COMPARE_DATA[@]}" --out "$OUT/compare" --json "$OUT/compare_sdpa.json" \
  --timeout "$BUDGET"
# FA3: our trainer only (the baseline row above is the same config and seed), through the same harness.
OURS_ONLY='import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tvb", "benchmarks/trainer_vs_baseline.py")
tvb = importlib.util.module_from_spec(spec); spec.loader.exec_module(tvb)
args = tvb.parse_args(sys.argv[2:]); args.out = args.out.resolve(); name = sys.argv[1]
row = tvb.run_one(name, args.ours.resolve(), args, tvb.run_env(args, tvb.dataset_env(args), name))
args.json.write_text(json.dumps({"rows": [row]}, indent=2)); print(tvb.table([row])); sys.exit(1 if "error" in row else 0)'
if [[ $FA3 == 0 ]]; then
  RESULT[compare_fa3]="skipped: flash_attn_interface does not import (or not a Hopper GPU)"
else
  run compare_fa3 120 "$PY" -c "$OURS_ONLY" ours_fa3 --baseline "$BASELINE" --steps "$STEPS" --seed "$SEED" \
    --env ATTN_BACKEND=fa3 "${COMPARE_DATA[@]}" --out "$OUT/compare" --json "$OUT/compare_fa3.json" --timeout "$BUDGET"
fi

# --- 2. eval path: a short run from the packed wrapper, sliding window stride 64 + legal TTT ------------------
EVAL=$OUT/eval
EVAL_ENV=("${SYN_ENV[@]}" SEED="$SEED" RUN_ID=eval_path ARTIFACT_DIR="$EVAL/artifact" ITERATIONS=20 WARMUP_STEPS=0
  VAL_LOSS_EVERY=0 MAX_WALLCLOCK_SECONDS=0 EVAL_STRIDE=64 TTT_ENABLED=1 TTT_CHUNK_TOKENS=4096)
run pack 10 "$PY" -m reference_trainer.cli pack --out "$EVAL/train_gpt.py"
((DRY)) || mkdir -p "$EVAL"
RUN_CWD=$EVAL run eval 75 env "${EVAL_ENV[@]}" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train_gpt.py

# --- 3. verify: the eval run as a packed 1-GPU record, re-run by pgolf-verify ---------------------------------
REC=$OUT/record
rm -rf "$REC" "$OUT/verify" 2>/dev/null
run package 10 "$PY" -m reference_trainer.cli package "$REC" --pack --script "$EVAL/train_gpt.py" \
  --logs "$EVAL/logs/eval_path.txt" --name "gpu_check eval path"
# Synthetic validation data is, by design, a subset of the challenge's split (PG230): the audit gate is told so.
GATE=(--force)
if ((!DRY)) && "$PY" -m verify.cli --help 2>/dev/null | grep -q -- '--ignore'; then GATE=(--ignore PG230); fi
# The re-run is eager (COMPILE=0) to fit the budget; the logged run compiled, so the tolerance allows for that.
run verify 60 "$PY" -m verify.cli "$REC" --nproc 1 --seeds "$SEED," --min-seeds 1 --tolerance 0.02 --pause 0 \
  --env COMPILE=0 --data-path "$(syn DATA_PATH)" --tokenizer-path "$(syn TOKENIZER_PATH)" --timeout-min 6 "${GATE[@]}" \
  --out "$OUT/verify" --format json --output "$OUT/verify.json" --quiet

# --- the table --------------------------------------------------------------------------------------------------
if ((DRY)); then
  echo "[table] one table: baseline / ours sdpa / ours fa3 (ms/step, ratio, val_bpb@$STEPS), eval-path timings, pgolf-verify verdict"
  exit 0
fi
for step in data compare_sdpa compare_fa3 pack eval package verify; do echo "$step=${RESULT[$step]:-not run}"; done >"$OUT/steps.txt"
"$PY" - "$OUT" "$STEPS" "${GPU_NAME:-GPU}" <<'PY'
import json, re, sys
from pathlib import Path

out, steps, gpu = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
status = dict(line.split("=", 1) for line in (out / "steps.txt").read_text().splitlines())
rows = []

def load(name):
    p = out / name
    return json.loads(p.read_text()).get("rows", []) if p.is_file() else []

def fmt(x, spec):
    return "-" if x is None else format(x, spec)

base = None
for step, name in (("compare_sdpa", "compare_sdpa.json"), ("compare_fa3", "compare_fa3.json")):
    got = load(name)
    if not got:
        rows.append((step, status[step], "", "", "", ""))
        continue
    for r in got:
        label = {"baseline": "baseline train_gpt.py", "ours": "ours, ATTN_BACKEND=sdpa", "ours_fa3": "ours, ATTN_BACKEND=fa3"}.get(r["name"], r["name"])
        if "error" in r:
            rows.append((label, r["error"], "", "", "", ""))
            continue
        if r["name"] == "baseline":
            base = r["ms_per_step"]
        ratio = f"{r['ms_per_step'] / base:.3f}" if base else "-"
        rows.append((label, status[step], f"{r['ms_per_step']:.1f}", ratio, fmt(r["val_bpb_at_steps"], ".4f"), fmt(r["roundtrip_val_bpb"], ".4f")))

log = out / "eval" / "logs" / "eval_path.txt"
text = log.read_text() if log.is_file() else ""
VAL = r" val_loss:\S+ val_bpb:\S+"


def last(pattern):
    found = re.findall(pattern, text, re.M)
    return found[-1] if found else "-"


timing = "roundtrip {} ms, sliding {} ms, TTT {} ms, total {} s".format(
    last(r"_roundtrip" + VAL + r" eval_time:(\d+)ms"),
    last(r"_sliding_window" + VAL + r" stride:64 eval_time:(\d+)ms"),
    last(r"_legal_ttt" + VAL + r" eval_time:(\d+)ms"),
    last(r"^total_eval_time:(\S+)s"),
)
scored = last(r"_legal_ttt_exact val_loss:\S+ val_bpb:(\S+)")
rows.append(("eval path: stride 64 + TTT", status["eval"], "", "", "", f"{scored} ({timing})" if text else ""))
verdict = status["verify"]
vj = out / "verify.json"
if vj.is_file():
    rep = json.loads(vj.read_text())
    verdict = f"{rep.get('verdict', '?')}: {rep.get('reason', '')}".strip(": ")
rows.append(("pgolf-verify, packed 1-GPU record", status["verify"] if status["package"].startswith("ok") else status["package"], "", "", "", verdict))

print(f"\ngpu_check on {gpu}: {steps} steps at the default config, seed 1337\n")
print(f"| check | status | ms/step | ratio to baseline | val_bpb @ step {steps} | round-trip val_bpb / result |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(c) for c in r) + " |")
PY
table_rc=$?
for step in "${!RESULT[@]}"; do [[ ${RESULT[$step]} == ok* || ${RESULT[$step]} == skipped:* ]] || exit 1; done
exit $((table_rc ? 1 : 0))
