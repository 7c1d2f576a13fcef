"""The regex catalogue of spec/logs.md §2, compiled once.

Every pattern is anchored at the start of a (prefix-stripped) line and requires literal numbers, so template
lines in echoed source (`log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} …")`) never match.
"""

from __future__ import annotations

import re

from .dispatch import dispatch_table

NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"

# Lines are matched on their first MAX_LINE_CHARS characters (a longer line is truncated, not dropped): every
# pattern below runs in time linear in what it is given, and this bounds what it is given.
MAX_LINE_CHARS = 4096


def may_contain(text: str, words: tuple[str, ...]) -> bool:
    """False only when an ASCII `text` holds none of `words` (given in lowercase) in any case, so a `(?i)` pattern
    that needs one of them cannot match it: scans of every log line skip most lines at C speed. Non-ASCII text is
    always True: `(?i)` also matches `İ`/`ı` for `i` and the Kelvin sign for `k`."""
    if not text.isascii():
        return True
    low = text.lower()
    return any(w in low for w in words)


# Prefixes added by launchers: torchrun `--tee` ranks, epoch timestamps, `[hh:mm:ss]` clocks. May repeat.
PREFIX_RE = re.compile(r"^(?:\[default\d+\]:|\[rank\d+\]:\s*|\d{10}\.\d{1,6}\s|\[\d{2}:\d{2}:\d{2}\]\s+)+")
PREFIX_START = frozenset("[0123456789")


def unprefixed(lines: list[str]) -> list[str]:
    """The lines with a launcher's prefixes removed (tested by first character: most lines have none)."""
    return [PREFIX_RE.sub("", ln, count=1) if ln[:1] in PREFIX_START else ln for ln in lines]


# A line of '=' (the baseline prints 100 after the echoed source and after nvidia-smi).
RULE_RE = re.compile(r"^={20,}\s*$")

# What counts as a "data line" for coverage (spec/logs.md §3).
DATA_RE = re.compile(
    r"val_bpb|val_loss|bytes|train_time|eval_time|peak memory|stopping_early|seed[:=]|elapsed|wallclock|MiB|artifact|size"
)
DIGIT_RE = re.compile(r"\d")

# nvidia-smi table rows and torch launcher noise: never data.
NVSMI_RE = re.compile(r"^(?:\||\+-|\s*\|)")


def _c(p: str) -> re.Pattern[str]:
    return re.compile(p.replace("{NUM}", NUM))


# name -> compiled regex. Order matters only inside `ORDERED` below (first match wins).
P: dict[str, re.Pattern[str]] = {
    "step_val": _c(
        r"^(?:step:\s*)?(?P<step>\d+)/(?P<total>\d+)\s+val_loss:\s*(?P<loss>{NUM})\s+val_bpb:\s*(?P<bpb>{NUM})"
        r"(?P<rest>.*)$"
    ),
    "step_train": _c(
        r"^(?:step:\s*)?(?P<step>\d+)/(?P<total>\d+)(?:\s+\[(?P<phase>[^\]]*)\])?\s+(?:train_loss|loss):\s*(?P<loss>{NUM})(?P<rest>.*)$"
    ),
    "stop_early": _c(
        r"^stopping_early:\s*(?P<reason>\w+)\s+train_time:\s*(?P<train_ms>{NUM})ms(?:\s+step:\s*(?P<step>\d+)/(?P<total>\d+))?"
    ),
    "serialized": _c(r"^Serialized model(?:\s+(?P<fmt>[^:]+?))?:\s*(?P<bytes>\d+)\s*bytes"),
    "code_size": _c(r"^Code size(?:\s*\((?P<kind>[^)]*)\))?:\s*(?P<bytes>\d+)\s*bytes"),
    "total_size": _c(r"^Total submission size(?:\s+(?P<fmt>[^:]+?))?:\s*(?P<bytes>\d+)\s*bytes"),
    "packed_code": _c(r"^Packed code:\s*(?P<bytes>\d+)\s*bytes(?:\s*\(raw=(?P<raw>\d+)\s*bytes\))?"),
    "model_blob": _c(r"^Model blob\s*:\s*(?P<bytes>\d+)\s*bytes"),
    "submission_size": _c(r"^Submission size:\s*(?P<bytes>\d+)\s*bytes"),
    "model_and_total": _c(
        r"^(?P<fmt>\S+) model:\s*(?P<model>\d+)\s*bytes\s*\|\s*Total submission:\s*(?P<bytes>\d+)\s*bytes"
    ),
    "raw_model_total": _c(
        r"^Raw model:\s*(?P<model>\d+)\s*bytes\s*\|\s*Code:\s*(?P<code>\d+)\s*bytes\s*\|\s*Total:\s*(?P<bytes>\d+)"
    ),
    "artifact_mb": _c(r"^artifact:\s*(?P<mb>{NUM})MB\b(?P<rest>.*?)\bcode:(?P<code>\d+)"),
    "mb_budget_line": _c(
        r"^\s*(?P<fmt>\S+):\s*(?P<model>{NUM})MB model \+ (?P<code>{NUM})MB code = (?P<total>{NUM})/(?P<budget>{NUM})MB\s*(?P<verdict>\w+)?"
    ),
    "est_raw_line": _c(r"^est_raw:(?P<mb>{NUM})MB\b.*budget:(?P<budget>{NUM})MB"),
    "budget_line": _c(r"^budget:(?P<bytes>\d+)/(?P<cap>\d+)\s*\(.*?\)\s*(?P<verdict>FITS|OVER)"),
    "summary_artifact_bytes": _c(r"^artifact_bytes:\s+(?P<bytes>\d+)\s*$"),
    "summary_val_bpb": _c(r"^(?:Submission:\s+)?val_bpb(?::\s*|\s*=\s*)(?P<bpb>{NUM})\s*$"),
    "ttt_sliding_done": _c(
        r"^(?P<tag>[a-z_]+:done)\s+val_loss=(?P<loss>{NUM})\s+val_bpb=(?P<bpb>{NUM})(?:\s+elapsed=(?P<elapsed_s>{NUM})s)?"
    ),
    # Linear-time forms (tests/audit/test_hostile_regex.py): a run of whitespace is taken whole (`\s++`; what
    # follows it is never whitespace, so giving some back cannot help), and the lazy tag never ends just after a
    # space (`(?<!\s)`: ending one space earlier reaches the same place). Same matches, same groups as
    # `^(?P<tag>…*?)(?P<quals>(?:\s+[a-z_]+:[^\s:]+)*?)\s+(?P<qual>sliding\s+)?val_loss[:=]\s*…`, which was
    # quadratic in a run of spaces.
    "metric": _c(
        r"^(?P<tag>[A-Za-z][A-Za-z0-9_\-+. ]*?)(?<!\s)(?P<quals>(?:\s++[a-z_]++:[^\s:]++)*?)\s++(?P<qual>sliding\s++)?"
        r"val_loss[:=]\s*+(?P<loss>{NUM})\s++(?:sliding\s++)?val_bpb[:=]\s*+(?P<bpb>{NUM})(?P<rest>.*)$"
    ),
    "eval_only_banner": _c(r"^TTT_EVAL_ONLY=1\b"),
    "metric_bpb_only": _c(
        r"^(?P<tag>\[?[A-Za-z][A-Za-z0-9_\-+. \]]*?)(?<!\s)\s++val_bpb[: ]\s*+(?P<bpb>{NUM})(?P<rest>(?:\s.*)?)$"
    ),
    "bracket_metric": _c(
        r"^\[(?P<stage>EVAL|ROUNDTRIP)\]\s+(?P<key>val_loss|val_bpb)\s*\((?P<kind>[^)]*)\):\s*(?P<v>{NUM})"
    ),
    "bracket_size": _c(r"^\[(?P<stage>QUANT|POST)\]\s+(?P<what>[^:]+?):\s*(?P<bytes>[\d,]+)\s*bytes"),
    "total_eval_time": _c(r"^total_eval_time:\s*(?P<s>{NUM})s"),
    "post_gptq_wallclock": _c(r"^wallclock:post_gptq\s+total_elapsed:(?P<s>{NUM})s\s+train_budget:(?P<budget>{NUM})s"),
    "artifact_production_wallclock": _c(r"^artifact_production_wallclock:\s*(?P<s>{NUM})s"),
    "serialize_wallclock": _c(r"^serialize_wallclock:\s*(?P<s>{NUM})s"),
    "gptq_time": _c(r"^gptq:quantization complete in\s*(?P<s>{NUM})s"),
    "total_eval_wallclock": _c(r"^total_eval_wallclock:\s*(?P<s>{NUM})s"),
    "inner_ttt_eval_time": _c(r"^inner_ttt_eval_time:\s*(?P<s>{NUM})s"),
    "stage_elapsed": _c(
        r"^(?P<stage>[a-z_]+(?::[a-z_]+)?)(?::done)?\s+elapsed=(?P<s>{NUM})s\s*$|^(?P<stage2>[a-z_]+):elapsed=(?P<s2>{NUM})s\s*$"
    ),
    "ngram_precompute_done": _c(r"^ngram_tilt:(?P<what>precompute\w*done)\s+elapsed=(?P<s>{NUM})s"),
    "artifact_bytes_kv": _c(r"^artifact_bytes\s+total:(?P<bytes>\d+)\s+model:(?P<model>\d+)(?:\s+cap:(?P<cap>\d+))?"),
    "smoke_pack_bytes": _c(r"^smoke_pack_bytes:\s*code=(?P<code>\d+)\s+model=(?P<model>\d+)\s+total=(?P<bytes>\d+)"),
    "pergroup_frame": _c(r"^pergroup:total frame\s+(?P<bytes>\d+)\s*bytes"),
    "brotli_size": _c(r"^quant:brotli_size=(?P<bytes>\d+)\s*bytes"),
    "export_candidate": _c(
        r"^export_candidate:(?P<name>\S+)\s+model_bytes:(?P<model>\d+)\s+total_bytes:(?P<bytes>\d+)"
    ),
    "artifact_budget": _c(r"^artifact_budget:\s*limit=(?P<limit>\d+)\s+code=(?P<code>\d+)\s+target=(?P<target>\d+)"),
    "selective_prune": _c(r"^selective_prune:"),
    "artifact_headroom": _c(r"^artifact_headroom:\s*(?P<bytes>\d+)\s*bytes"),
    "step_pipe": _c(
        r"^step\s+(?P<step>\d+)/(?P<total>\d+)\s*\|\s*loss\s+(?P<loss>{NUM}).*?elapsed\s+(?P<min>\d+)m(?P<sec>{NUM})s"
    ),
    "peak_mem": _c(r"^peak memory allocated:\s*(?P<alloc>\d+)\s*MiB\s+reserved:\s*(?P<reserved>\d+)\s*MiB"),
    "peak_mem_short": _c(r"^(?i:peak memory):\s*(?P<alloc>\d+)\s*MiB"),
    "train_cfg": _c(
        r"^train_batch_tokens:(?P<batch>\d+)\s+train_seq_len:(?P<seq>\d+)(?:\s+eval_seq_len:\d+)?\s+iterations:(?P<iters>\d+)"
        r"\s+warmup_steps:(?P<warmup>\d+)\s+max_wallclock_seconds:(?P<wall>{NUM})"
    ),
    "world_size": _c(r"^world_size:\s*(?P<ws>\d+)\s+grad_accum_steps:\s*(?P<ga>\d+)"),
    "model_params": _c(r"^model_params:\s*(?P<n>\d+)"),
    "val_tokens": _c(r"^val_loader:.*?tokens:\s*(?P<n>\d+)|^val_tokens:\s*(?P<n2>\d+)"),
    "seed": _c(
        r"^(?:seed[:=]\s*(?P<seed>\d+)\s*$|\s+seed:\s*(?P<seed2>\d+)\s*$|.*?(?:\bRUN|\bDONE|===(?:\s+\[[^\]]*\])?)\s+seed=(?P<seed3>\d+)"
        r"|lr:.*\bseed:(?P<seed4>\d+)\s*$)"
    ),
    "hparam_kv_line": _c(r"^(?:[a-z_0-9]+=\S+\s+){5,}"),
    "temp_scaling": _c(r"^temp_scaling\s+optimal_T:(?P<T>{NUM})\s+(?:eval_)?time:\s*(?P<ms>{NUM})ms"),
    "train_loader": _c(r"^train_loader:dataset:(?P<ds>\S+)\s+train_shards:(?P<n>\d+)"),
    "swa_started": _c(r"^swa_started:\s*step:(?P<step>\d+)\s+train_time:(?P<train_ms>{NUM})ms"),
    "bpb_banner": _c(r"^val_bpb:(?P<what>enabled|byte_sidecar:enabled)\b(?P<rest>.*)$"),
    "launcher_script_size": _c(r"^(?:Uploading \S+ \((?P<b1>\d+) bytes\)|\[modal\] Script size:\s*(?P<b2>\d+) bytes)"),
    "ngram_precompute": _c(r"^ngram_tilt:precompute\b.*?elapsed=(?P<s>{NUM})s"),
    "legendre_sizes": _c(r"^\s+(?P<what>raw quantized size|zlib compressed):\s*(?P<bytes>\d+)\s*bytes"),
    # Was `^\s*"(?P<key>…)":\s*(?P<val>[^,]+?),?\s*$`: the lazy value re-tested `\s*$` after every character.
    # The value is now its words with the spaces between them (and before a trailing comma), or, when nothing
    # but a comma follows the colon, the last space before it, exactly as the lazy form chose.
    "json_kv": _c(
        r"^\s*+\"(?P<key>[A-Za-z_0-9]++)\":(?:\s*+(?=[^\s,])|(?:\s(?=\s))*+(?=\s,?\s*$))"
        r"(?P<val>[^\s,]++(?:\s*+[^\s,]++)*+(?:\s++(?=,))?|\s),?\s*$"
    ),
    "hparam_kv": _c(r"^\s+(?P<key>[a-z_][a-z0-9_]*):\s+(?P<val>\S.*)$"),
    # --- shapes seen in the labelled PRs (corpus/dev_labels.tsv), not in the study's catalogue ---------------
    "run_banner": _c(r"^=+\s*RUN\s+\d+\s*\(seed=(?P<seed>\d+)\)"),
    "pretty_seed": _c(r"^(?:Seed:\s*(?P<seed>\d+)\b|FINAL RESULTS\b.*?\bseed=(?P<seed2>\d+))"),
    "pretty_bpb": _c(r"^\s*(?P<tag>[A-Za-z][A-Za-z0-9_ -]*?) BPB(?:\s*\((?P<q>[^)]*)\))?:\s*(?P<bpb>{NUM})\s*$"),
    "pretty_world_size": _c(r"^World size:\s*(?P<ws>\d+)"),
    "pretty_stop": _c(r"^Stopping early at step (?P<step>\d+) \((?P<reason>[^)]*)\)"),
    "pretty_train_done": _c(r"^Training complete in (?P<s>{NUM})s \((?P<steps>\d+) steps\)"),
    "pretty_val_tokens": _c(r"^Validation tokens:\s*(?P<n>[\d,]+)"),
    "pretty_artifact": _c(r"^\s*Artifact(?: size)?:\s*(?P<bytes>[\d,]+) bytes"),
    "model_total_pair": _c(r"^(?P<fmt>[\w+\-]+):\s*(?P<model>\d+) bytes, total:\s*(?P<bytes>\d+) bytes"),
    "model_size_line": _c(
        r"^model_size (?P<fmt>\S+?):(?P<model>\d+) bytes\s+code:(?P<code>\d+) bytes\s+total:(?P<bytes>\d+) bytes"
    ),
    "total_submission_short": _c(r"^Total submission:\s*(?P<bytes>\d+) bytes"),
    "model_bytes_misc": _c(r"^(?:Quantized model(?: \((?P<fmt>[^)]*)\))?|Compressed model):\s*(?P<bytes>\d+) bytes"),
    "raw_model": _c(r"^Raw model:\s*(?P<bytes>\d+) bytes(?:, code:\s*(?P<code>\d+) bytes)?"),
    "size_candidate": _c(
        r"^(?:quant_try\b.*?:\s*\d+ bytes|gptq:pre_prune artifact=\d+|saved raw checkpoint:.*bytes\)|Wrote \S+ code to \S+ \(\d+ bytes\))"
    ),
    "train_time_total": _c(r"^final_train_time_ms:\s*(?P<ms>{NUM})"),
    "eval_time_total": _c(r"^final_eval_time_ms:\s*(?P<ms>{NUM})"),
    "ttt_done": _c(r"^(?P<stage>[a-z_]+):done\b.*?\belapsed=(?P<s>{NUM})s"),
    "kv_metric": _c(r"^(?P<tag>[a-z_]+)\s+(?:\w+=\S+\s+)*?(?P<key>[a-z_]*bpb)=(?P<bpb>{NUM})(?P<rest>.*)$"),
    "scored_bytes": _c(r"^caseops_sanity\b.*?\bscored_tokens:(?P<tokens>\d+)\s+scored_bytes:(?P<bytes>\d+)"),
    "qat_event": _c(r"^(?:ste_)?qat:\w+"),
    "noise": _c(r"^(?:\S+:\d+:\d+ \[\d+\] NCCL INFO|Receiving objects:|Resolving deltas:)"),
}

# Lines that only report progress inside an eval/TTT loop: matched cheaply with str.startswith.
PROGRESS_PREFIXES = (
    "ttt_progress:",
    "sliding_progress:",
    "[ppm_mix]",
    "ttt:chunk=",
    "ppm_mix_progress",
    "ttt_chunk [",
    "  ttt_chunk [",
    "  sliding_eval [",
    "tttg:",
    "ttp:",
    "ttpp:",
    "ttpr:",
)

# Try order: frequent shapes first, generic shapes (`metric`, `hparam_kv`) last.
ORDERED: tuple[str, ...] = (
    "step_train",
    "step_val",
    "stop_early",
    "ttt_sliding_done",
    "serialized",
    "code_size",
    "total_size",
    "packed_code",
    "model_blob",
    "submission_size",
    "model_and_total",
    "raw_model_total",
    "artifact_mb",
    "mb_budget_line",
    "est_raw_line",
    "budget_line",
    "summary_artifact_bytes",
    "summary_val_bpb",
    "bracket_metric",
    "bracket_size",
    "total_eval_time",
    "post_gptq_wallclock",
    "artifact_production_wallclock",
    "serialize_wallclock",
    "gptq_time",
    "total_eval_wallclock",
    "inner_ttt_eval_time",
    "ngram_precompute_done",
    "ngram_precompute",
    "artifact_bytes_kv",
    "smoke_pack_bytes",
    "pergroup_frame",
    "brotli_size",
    "export_candidate",
    "artifact_budget",
    "selective_prune",
    "artifact_headroom",
    "step_pipe",
    "peak_mem",
    "peak_mem_short",
    "train_cfg",
    "world_size",
    "model_params",
    "val_tokens",
    "seed",
    "temp_scaling",
    "train_loader",
    "swa_started",
    "bpb_banner",
    "launcher_script_size",
    "eval_only_banner",
    "run_banner",
    "pretty_seed",
    "pretty_bpb",
    "pretty_world_size",
    "pretty_stop",
    "pretty_train_done",
    "pretty_val_tokens",
    "pretty_artifact",
    "model_total_pair",
    "model_size_line",
    "total_submission_short",
    "model_bytes_misc",
    "raw_model",
    "size_candidate",
    "train_time_total",
    "eval_time_total",
    "ttt_done",
    "scored_bytes",
    "qat_event",
    "noise",
    "stage_elapsed",
    "legendre_sizes",
    "hparam_kv_line",
    "metric",
    "metric_bpb_only",
    "kv_metric",
    "json_kv",
    "hparam_kv",
)
COMPILED_ORDER: tuple[tuple[str, re.Pattern[str]], ...] = tuple((n, P[n]) for n in ORDERED)
# The patterns a line can match, by its first character: a line is tried only against the patterns that can start
# with that character, in ORDERED order, so the first match is the one the full scan finds (dispatch.py).
BY_FIRST_CHAR, OTHER_FIRST_CHAR = dispatch_table(COMPILED_ORDER)

# Python-source markers used to find the echoed script (see echo.py).
PY_START_RE = re.compile(r'^(?:"""|\'\'\'|"[A-Z]|#!|# |from __future__|import \w|from [\w.]+ import )')
PY_STRONG_RE = re.compile(r"^\s*(?:def \w+\(|class \w+[(:]|import \w|from [\w.]+ import |return\b|if __name__)")
