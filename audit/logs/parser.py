"""Parse one log file into runs (spec/logs.md): every family, echoed source skipped, concatenated runs split."""

from __future__ import annotations

import math
import re

from .echo import echo_blocks, source_spans
from .model import LogLine, LogResult, Metric, RunLog, SizeLine, Step, Timing
from .patterns import (
    BY_FIRST_CHAR,
    MAX_LINE_CHARS,
    NUM,
    NVSMI_RE,
    OTHER_FIRST_CHAR,
    PROGRESS_PREFIXES,
    RULE_RE,
    unprefixed,
)

_EVAL_TIME_RE = re.compile(
    rf"(?:\b|_)eval(?:_time)?[:=]\s*(?P<v>{NUM})\s*(?P<u>ms|s)\b|\belapsed[:=]\s*(?P<e>{NUM})s\b"
)
_TRAIN_TIME_RE = re.compile(rf"\btrain_time:\s*(?P<v>{NUM})\s*(?P<u>ms|m|s)\b|\bt:(?P<t>{NUM})ms\b")
_STRIDE_RE = re.compile(r"\bstride[:=]\s*(\d+)")
# A line of `key:value` tokens (spaces between them optional). The regex for it,
# `^(?:[A-Za-z_][A-Za-z0-9_]*:[^\s:]+\s*){2,}$`, backtracks exponentially when the tokens can be split many ways
# (`a:bbbb:bbbb:…`), so `is_kv_colon_line` decides the same language by splitting.
_KEY_HEAD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_KEY_CHARS = _KEY_HEAD | frozenset("0123456789")
# findall tokens. A match can only start where a word run starts (a failed start inside a run fails for the
# whole run, and a match never ends inside one): `(?<!…)` skips the rest of the run instead of rescanning it,
# with the leading digits the old regex stepped over consumed instead. Same tokens as
# `([A-Za-z_][A-Za-z0-9_]*):([^\s:]+)` and `([a-z_0-9]+)=(\S+)`.
_KV_COLON_TOKEN = re.compile(r"(?<![A-Za-z0-9_])[0-9]*+([A-Za-z_][A-Za-z0-9_]*+):([^\s:]++)")
_KV_EQ_TOKEN = re.compile(r"(?<![a-z_0-9])([a-z_0-9]++)=(\S++)")
_HEADER_RE = re.compile(r"^(?:Hyperparameters:|-+ Hyperparameters -+|Running Python\b)")
# Tags that are never the score (spec/logs.md §2): diagnostics, pre-quantization, post-EMA, the TTT sliding
# progress total, and summaries/JSON fragments that repeat a number printed elsewhere.
_DIAGNOSTIC_RE = re.compile(
    r"^(?:diagnostic|pre[-_ ]?quant|summary$|json:|ttt_sliding:done$)|post[-_]ema|\bpre[-_]?quant", re.I
)
# Format-less "Total submission size" above this is the raw bf16 checkpoint + code, not the artifact.
RAW_TOTAL_LIMIT = 32_000_000
ARTIFACT_TIERS = 3


def _f(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _decimals(s: str) -> int:
    return len(s.split(".", 1)[1]) if "." in s and "e" not in s.lower() else 0


def _kv_colon_tokens(word: str) -> int:
    """How many `key:value` tokens `word` (no whitespace) splits into, 0 if it does not split: between two
    colons sits a value followed by the next key (both non-empty), so it must end in a key."""
    parts = word.split(":")
    head, last = parts[0], parts[-1]
    if len(parts) < 2 or not last or not head or head[0] not in _KEY_HEAD or not _KEY_CHARS.issuperset(head):
        return 0
    for mid in parts[1:-1]:
        j = len(mid) - 1
        while j >= 1 and mid[j] in _KEY_CHARS and mid[j] not in _KEY_HEAD:
            j -= 1  # digits may end a key but not start one
        if j < 1 or mid[j] not in _KEY_HEAD:
            return 0
    return len(parts) - 1


def is_kv_colon_line(text: str) -> bool:
    """Whether the line is two or more `key:value` tokens: the regex in the comment above, in linear time."""
    if not text or text[0] not in _KEY_HEAD:
        return False
    total = 0
    for word in text.split():
        n = _kv_colon_tokens(word)
        if not n:
            return False
        total += n
    return total >= 2


def is_diagnostic_tag(tag: str) -> bool:
    return bool(_DIAGNOSTIC_RE.search(tag.strip()))


class _Parser:
    def __init__(self, path: str) -> None:
        self.result = LogResult(path=path)
        self.run = RunLog(index=0, start_line=1)
        self.result.runs.append(self.run)
        self.last_train_step = -1

    # --- run boundaries ----------------------------------------------------------------------------------
    def new_run(self, lineno: int) -> None:
        if not self.run.has_content:
            return
        self.run.end_line = lineno - 1
        self.run = RunLog(index=len(self.result.runs), start_line=lineno)
        self.result.runs.append(self.run)
        self.last_train_step = -1

    # --- one line --------------------------------------------------------------------------------------------
    def line(self, lineno: int, text: str) -> str:
        if text.startswith(PROGRESS_PREFIXES):
            return "progress"
        for name, rx, needs in BY_FIRST_CHAR.get(text[0], OTHER_FIRST_CHAR):
            if needs is not None and needs not in text:
                continue  # a line without the pattern's literal cannot match it
            m = rx.match(text)
            if m is not None:
                handler = getattr(self, "h_" + name, None)
                if handler is not None:
                    handler(m, lineno, text)
                return name
        if is_kv_colon_line(text):
            self.h_kv_colon(text)
            return "kv_line"
        if _HEADER_RE.match(text):
            self.new_run(lineno)
            return "header"
        return "other"

    # --- handlers (named after patterns.P) -----------------------------------------------------------------
    def h_step_train(self, m: re.Match, lineno: int, text: str) -> None:
        step = int(m["step"])
        if step < self.last_train_step:
            self.new_run(lineno)  # step counter reset: a new run was appended to the file
        self.last_train_step = step
        self.run.steps.append(Step(step, int(m["total"]), "train", _f(m["loss"]), None, _train_ms(m["rest"]), lineno))

    def h_step_val(self, m: re.Match, lineno: int, text: str) -> None:
        step = int(m["step"])
        if step < self.last_train_step and step == 0:
            self.new_run(lineno)
        self.run.steps.append(
            Step(step, int(m["total"]), "val", _f(m["loss"]), _f(m["bpb"]), _train_ms(m["rest"]), lineno)
        )
        self.run.last_val_text = text

    def h_step_pipe(self, m: re.Match, lineno: int, text: str) -> None:
        step = int(m["step"])
        if step < self.last_train_step:
            self.new_run(lineno)
        self.last_train_step = step
        ms = (int(m["min"]) * 60 + float(m["sec"])) * 1000.0
        self.run.steps.append(Step(step, int(m["total"]), "train", _f(m["loss"]), None, ms, lineno))

    def h_stop_early(self, m: re.Match, lineno: int, text: str) -> None:
        self.run.stop_reason = m["reason"]
        self.run.stop_line = lineno
        self.run.train_time_ms = _f(m["train_ms"])
        self.run.train_time_line = lineno

    def _metric(self, tag: str, loss: str | None, bpb: str, rest: str, lineno: int, text: str, stride=None) -> None:
        tag = tag.strip()
        v = _f(bpb)
        if v is None:
            return
        ev = None
        if rest:
            t = _EVAL_TIME_RE.search(rest)
            if t is not None:
                if t["v"] is not None:
                    ev = _f(t["v"]) * (1.0 if t["u"] == "ms" else 1000.0)
                else:
                    ev = _f(t["e"]) * 1000.0
            if stride is None:
                s = _STRIDE_RE.search(rest)
                stride = int(s.group(1)) if s else None
        dec = _decimals(bpb)
        self.run.metrics.append(
            Metric(
                tag=tag,
                val_loss=_f(loss),
                val_bpb=v,
                eval_time_ms=ev,
                exact=tag.endswith("_exact") or dec >= 6,
                diagnostic=is_diagnostic_tag(tag),
                lineno=lineno,
                line=text,
                decimals=dec,
                stride=int(stride) if stride else None,
            )
        )
        if ev is not None and not is_diagnostic_tag(tag):
            self.run.eval_times.append(Timing(tag, ev / 1000.0, lineno, text))

    def h_metric(self, m: re.Match, lineno: int, text: str) -> None:
        tag = m["tag"] + (" sliding" if m["qual"] else "")
        s = _STRIDE_RE.search(m["quals"]) if m["quals"] else None
        self._metric(tag, m["loss"], m["bpb"], m["rest"], lineno, text, s.group(1) if s else None)

    def h_kv_metric(self, m: re.Match, lineno: int, text: str) -> None:
        self._metric(m["tag"], None, m["bpb"], m["rest"], lineno, text)

    def h_pretty_bpb(self, m: re.Match, lineno: int, text: str) -> None:
        tag = m["tag"].strip() + (f" ({m['q']})" if m["q"] else "")
        if tag.lower().startswith("ema"):
            tag = "diagnostic " + tag  # pre-quantization EMA weights
        self._metric(tag, None, m["bpb"], "", lineno, text)

    def h_metric_bpb_only(self, m: re.Match, lineno: int, text: str) -> None:
        self._metric(m["tag"], None, m["bpb"], m["rest"], lineno, text)

    def h_ttt_sliding_done(self, m: re.Match, lineno: int, text: str) -> None:
        rest = f" elapsed={m['elapsed_s']}s" if m["elapsed_s"] else ""
        self._metric(m["tag"], m["loss"], m["bpb"], rest, lineno, text)
        if m["elapsed_s"]:
            self.run.eval_times.append(Timing(m["tag"], float(m["elapsed_s"]), lineno, text))

    def h_summary_val_bpb(self, m: re.Match, lineno: int, text: str) -> None:
        self._metric("summary", None, m["bpb"], "", lineno, text)

    def h_bracket_metric(self, m: re.Match, lineno: int, text: str) -> None:
        if m["key"] == "val_bpb":
            self._metric(f"[{m['stage']}] {m['kind']}", None, m["v"], "", lineno, text)

    def h_json_kv(self, m: re.Match, lineno: int, text: str) -> None:
        key, val = m["key"], m["val"].strip().strip('"')
        if key == "seed" and val.isdigit():
            self._seed(int(val), lineno)
        elif key.endswith("val_bpb") and _f(val) is not None:
            self._metric("json:" + key, None, val, "", lineno, text)
        elif key.endswith("eval_time_ms") and _f(val) is not None:
            self.run.eval_times.append(Timing("json:" + key, float(val) / 1000.0, lineno, text))

    # sizes
    def _size(self, kind: str, nbytes: int, fmt: str, tier: int, lineno: int, text: str, approx: bool = False) -> None:
        self.run.sizes.append(SizeLine(kind, nbytes, fmt, tier, lineno, text, approx))

    def h_serialized(self, m: re.Match, lineno: int, text: str) -> None:
        fmt = (m["fmt"] or "").strip()
        self._size("model" if fmt else "model_raw", int(m["bytes"]), fmt, 1, lineno, text)

    def h_code_size(self, m: re.Match, lineno: int, text: str) -> None:
        kind = (m["kind"] or "").strip().lower()
        self._size("code_raw" if kind.startswith("uncompressed") else "code", int(m["bytes"]), kind, 1, lineno, text)

    def h_total_size(self, m: re.Match, lineno: int, text: str) -> None:
        fmt = (m["fmt"] or "").strip()
        n = int(m["bytes"])
        if fmt:
            self._size("total", n, fmt, 1, lineno, text)
        elif n <= RAW_TOTAL_LIMIT:
            self._size("total", n, "", 2, lineno, text)
        else:
            self._size("total_raw", n, "", 9, lineno, text)

    def h_packed_code(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("code", int(m["bytes"]), "packed", 1, lineno, text)

    def h_model_blob(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("model", int(m["bytes"]), "blob", 1, lineno, text)

    def h_submission_size(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("total", int(m["bytes"]), "submission", 1, lineno, text)

    def h_model_and_total(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("model", int(m["model"]), m["fmt"], 1, lineno, text)
        self._size("total", int(m["bytes"]), m["fmt"], 1, lineno, text)

    def h_raw_model_total(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("code", int(m["code"]), "raw", 2, lineno, text)
        self._size("total_raw", int(m["bytes"]), "raw", 9, lineno, text)

    def h_artifact_mb(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("model", round(float(m["mb"]) * 1e6), "MB", 3, lineno, text, approx=True)
        self._size("code", int(m["code"]), "", 2, lineno, text)

    def h_mb_budget_line(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("model", round(float(m["model"]) * 1e6), m["fmt"], 3, lineno, text, approx=True)
        self._size("code", round(float(m["code"]) * 1e6), m["fmt"], 3, lineno, text, approx=True)
        self._size("total", round(float(m["total"]) * 1e6), m["fmt"], 3, lineno, text, approx=True)

    def h_budget_line(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("total", int(m["bytes"]), "budget", 1, lineno, text)

    def h_summary_artifact_bytes(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("total", int(m["bytes"]), "summary", 2, lineno, text)

    def h_bracket_size(self, m: re.Match, lineno: int, text: str) -> None:
        what = m["what"].lower()
        n = int(m["bytes"].replace(",", ""))
        if "total" in what or "artifact" in what:
            self._size("total", n, what, 1, lineno, text)
        elif "code" in what:
            self._size("code", n, what, 1, lineno, text)
        elif "model" in what:
            self._size("model", n, what, 1, lineno, text)

    def h_artifact_bytes_kv(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("model", int(m["model"]), "kv", 1, lineno, text)
        self._size("total", int(m["bytes"]), "kv", 1, lineno, text)

    def h_smoke_pack_bytes(self, m: re.Match, lineno: int, text: str) -> None:
        self._size("code", int(m["code"]), "pack", 1, lineno, text)
        self._size("model", int(m["model"]), "pack", 1, lineno, text)
        self._size("total", int(m["bytes"]), "pack", 1, lineno, text)

    # timings
    def _wall(self, stage: str, s: str, lineno: int, text: str) -> None:
        v = _f(s)
        if v is not None:
            self.run.wallclocks.append(Timing(stage, v, lineno, text))

    def _eval(self, stage: str, s: str, lineno: int, text: str) -> None:
        v = _f(s)
        if v is not None:
            self.run.eval_times.append(Timing(stage, v, lineno, text))

    def h_total_eval_time(self, m, lineno, text):
        self._eval("total_eval_time", m["s"], lineno, text)

    def h_total_eval_wallclock(self, m, lineno, text):
        self._eval("total_eval_wallclock", m["s"], lineno, text)

    def h_inner_ttt_eval_time(self, m, lineno, text):
        self._eval("inner_ttt_eval_time", m["s"], lineno, text)

    def h_post_gptq_wallclock(self, m, lineno, text):
        self._wall("post_gptq_total_elapsed", m["s"], lineno, text)

    def h_artifact_production_wallclock(self, m, lineno, text):
        self._wall("artifact_production_wallclock", m["s"], lineno, text)

    def h_serialize_wallclock(self, m, lineno, text):
        self._wall("serialize_wallclock", m["s"], lineno, text)

    def h_gptq_time(self, m, lineno, text):
        self._wall("gptq", m["s"], lineno, text)

    def h_ngram_precompute_done(self, m, lineno, text):
        self._wall("ngram_precompute", m["s"], lineno, text)

    def h_ngram_precompute(self, m, lineno, text):
        self._wall("ngram_precompute", m["s"], lineno, text)

    def h_stage_elapsed(self, m, lineno, text):
        self._wall(m["stage"] or m["stage2"], m["s"] or m["s2"], lineno, text)

    def h_temp_scaling(self, m, lineno, text):
        self._eval("temp_scaling", str(float(m["ms"]) / 1000.0), lineno, text)

    def h_pretty_artifact(self, m, lineno, text):
        self._size("total", int(m["bytes"].replace(",", "")), "artifact", 2, lineno, text)

    def h_model_total_pair(self, m, lineno, text):
        self._size("model", int(m["model"]), m["fmt"], 1, lineno, text)
        self._size("total", int(m["bytes"]), m["fmt"], 1, lineno, text)

    def h_model_size_line(self, m, lineno, text):
        self._size("model", int(m["model"]), m["fmt"], 1, lineno, text)
        self._size("code", int(m["code"]), m["fmt"], 1, lineno, text)
        self._size("total", int(m["bytes"]), m["fmt"], 1, lineno, text)

    def h_total_submission_short(self, m, lineno, text):
        n = int(m["bytes"])
        self._size(
            "total" if n <= RAW_TOTAL_LIMIT else "total_raw", n, "", 1 if n <= RAW_TOTAL_LIMIT else 9, lineno, text
        )

    def h_model_bytes_misc(self, m, lineno, text):
        self._size("model", int(m["bytes"]), m["fmt"] or "", 1, lineno, text)

    def h_raw_model(self, m, lineno, text):
        self._size("model_raw", int(m["bytes"]), "raw", 9, lineno, text)

    def h_train_time_total(self, m, lineno, text):
        if self.run.train_time_ms is None:
            self.run.train_time_ms, self.run.train_time_line = _f(m["ms"]), lineno

    def h_pretty_train_done(self, m, lineno, text):
        if self.run.train_time_ms is None:
            self.run.train_time_ms, self.run.train_time_line = float(m["s"]) * 1000.0, lineno

    def h_eval_time_total(self, m, lineno, text):
        self._eval("total_eval_time", str(float(m["ms"]) / 1000.0), lineno, text)

    def h_ttt_done(self, m, lineno, text):
        self._eval(m["stage"] + ":done", m["s"], lineno, text)

    # run facts
    def _seed(self, seed: int, lineno: int) -> None:
        if self.run.seed is not None and seed != self.run.seed and self.run.has_content:
            self.new_run(lineno)
        self.run.seed = seed
        self.run.seed_line = lineno

    def h_seed(self, m: re.Match, lineno: int, text: str) -> None:
        s = m["seed"] or m["seed2"] or m["seed3"] or m["seed4"]
        self._seed(int(s), lineno)

    def h_run_banner(self, m, lineno, text):
        self.new_run(lineno)
        self._seed(int(m["seed"]), lineno)

    def h_pretty_seed(self, m, lineno, text):
        self._seed(int(m["seed"] or m["seed2"]), lineno)

    def h_pretty_world_size(self, m, lineno, text):
        self.run.world_size = int(m["ws"])

    def h_pretty_stop(self, m, lineno, text):
        self.run.stop_reason = "wallclock_cap" if "wallclock" in m["reason"] else m["reason"]
        self.run.stop_line = lineno

    def h_pretty_val_tokens(self, m, lineno, text):
        self.run.val_tokens = int(m["n"].replace(",", ""))
        self.run.val_tokens_line = lineno

    def h_scored_bytes(self, m, lineno, text):
        self.run.val_tokens = int(m["tokens"])
        self.run.val_tokens_line = lineno
        self.run.val_bytes = int(m["bytes"])

    def h_world_size(self, m, lineno, text):
        self.run.world_size = int(m["ws"])
        self.run.hyperparams.setdefault("grad_accum_steps", m["ga"])

    def h_val_tokens(self, m, lineno, text):
        self.run.val_tokens = int(m["n"] or m["n2"])
        self.run.val_tokens_line = lineno

    def h_peak_mem(self, m, lineno, text):
        self.run.peak_memory_mib = int(m["alloc"])

    h_peak_mem_short = h_peak_mem

    def h_model_params(self, m, lineno, text):
        self.run.model_params = int(m["n"])

    def h_train_cfg(self, m, lineno, text):
        hp = self.run.hyperparams
        hp.update(
            train_batch_tokens=m["batch"], train_seq_len=m["seq"], iterations=m["iters"], warmup_steps=m["warmup"]
        )
        hp["max_wallclock_seconds"] = m["wall"]
        self.run.max_wallclock_seconds = _f(m["wall"])

    def h_bpb_banner(self, m, lineno, text):
        self.new_run(lineno)

    def h_eval_only_banner(self, m, lineno, text):
        self.run.eval_only = True

    def h_hparam_kv_line(self, m, lineno, text):
        self.new_run(lineno)
        for k, v in _KV_EQ_TOKEN.findall(text):
            self._hparam(k, v, lineno)

    def h_hparam_kv(self, m, lineno, text):
        self._hparam(m["key"], m["val"].strip(), lineno)

    def h_kv_colon(self, text: str) -> None:
        for k, v in _KV_COLON_TOKEN.findall(text):
            self.run.hyperparams.setdefault(k, v)

    def _hparam(self, key: str, val: str, lineno: int) -> None:
        self.run.hyperparams[key] = val
        if key == "seed" and val.isdigit():
            self._seed(int(val), lineno)
        elif key == "world_size" and val.isdigit():
            self.run.world_size = int(val)
        elif key == "max_wallclock_seconds":
            self.run.max_wallclock_seconds = _f(val)


def _train_ms(rest: str | None) -> float | None:
    if not rest:
        return None
    t = _TRAIN_TIME_RE.search(rest)
    if t is None:
        return None
    if t["t"] is not None:
        return _f(t["t"])
    v = _f(t["v"])
    if v is None:
        return None
    return v * {"ms": 1.0, "s": 1000.0, "m": 60000.0}[t["u"]]


def _finish(run: RunLog, last_line: int) -> None:
    if not run.end_line:
        run.end_line = last_line
    # An `_exact` line without eval_time inherits it from the preceding rounded line of the same stage.
    fixed: list[Metric] = []
    for i, m in enumerate(run.metrics):
        if m.eval_time_ms is None and m.tag.endswith("_exact"):
            for prev in reversed(run.metrics[:i]):
                if prev.tag == m.base_tag and prev.eval_time_ms is not None:
                    m = _replace_eval(m, prev.eval_time_ms)
                    break
        fixed.append(m)
    # The last periodic validation is the pre-quantization number READMEs quote: keep it as a diagnostic stage.
    vals = [st for st in run.steps if st.kind == "val" and st.val_bpb is not None]
    if vals and vals[-1].step > 0:
        st = vals[-1]
        fixed.append(
            Metric(
                f"pre-quant val@step{st.step}", st.loss, st.val_bpb, None, False, True, st.lineno, run.last_val_text, 4
            )
        )
        fixed.sort(key=lambda m: m.lineno)
    run.metrics = fixed
    scored = [m for m in fixed if not m.diagnostic]
    run.scored = scored[-1] if scored else None
    if run.train_time_ms is None:
        timed = [s for s in run.steps if s.train_time_ms is not None]
        if timed:
            last = max(timed, key=lambda s: s.train_time_ms)
            run.train_time_ms, run.train_time_line = last.train_time_ms, last.lineno
    if run.stop_reason is None and run.steps:
        last = run.steps[-1]
        if last.total is not None and last.step >= last.total:
            run.stop_reason = "iterations"
    _pick_sizes(run)
    if run.seed is None and run.hyperparams.get("seed", "").isdigit():
        run.seed = int(run.hyperparams["seed"])
    if run.world_size is None and run.hyperparams.get("world_size", "").isdigit():
        run.world_size = int(run.hyperparams["world_size"])


def _replace_eval(m: Metric, ms: float) -> Metric:
    return Metric(m.tag, m.val_loss, m.val_bpb, ms, m.exact, m.diagnostic, m.lineno, m.line, m.decimals, m.stride)


def _pick_sizes(run: RunLog) -> None:
    """Artifact = last best-tier total; model/code = last line of their kind (spec/logs.md §2, artifact selection)."""
    for tier in range(1, ARTIFACT_TIERS + 1):
        totals = [s for s in run.sizes if s.kind == "total" and s.tier == tier]
        if totals:
            t = totals[-1]
            run.artifact_bytes, run.artifact_line, run.artifact_approx = t.nbytes, t.lineno, t.approx
            break
    for kind, attr in (("model", "model_bytes"), ("code", "code_bytes")):
        cands = sorted((s for s in run.sizes if s.kind == kind), key=lambda s: (s.tier, -s.lineno))
        if cands:
            setattr(run, attr, cands[0].nbytes)


def parse_log(text: str, path: str = "") -> LogResult:
    """Parse a whole log; `LogResult.last` is the run that counts when several were appended to one file."""
    full = text.splitlines()
    raw = [ln[:MAX_LINE_CHARS] for ln in full]  # truncated for matching, never dropped
    lines = unprefixed(raw)
    p = _Parser(path)
    res = p.result
    res.n_lines = len(lines)
    spans = source_spans(lines)
    if spans:  # the echoed lines as written, for the comparison with the shipped sources (none was cut)
        res.echo_blocks = echo_blocks(lines, spans) if max(map(len, full)) <= MAX_LINE_CHARS else None
    si = 0
    i = 0
    n = len(lines)
    events = res.events
    while i < n:
        if si < len(spans) and i == spans[si][0]:
            start, end = spans[si]
            p.new_run(start + 1)
            res.source_echo_lines += end - start
            i = end
            si += 1
            continue
        text_i = lines[i].rstrip()
        lineno = i + 1
        i += 1
        if not text_i.strip():
            continue
        if text_i[:1] in "|+ " and NVSMI_RE.match(text_i):
            events.append(LogLine(lineno, text_i, "nvidia-smi"))
            continue
        if text_i[:1] == "=" and RULE_RE.match(text_i):
            events.append(LogLine(lineno, text_i, "rule"))
            continue
        events.append(LogLine(lineno, text_i, p.line(lineno, text_i)))
    for run in res.runs:
        _finish(run, n)
    if len(res.runs) > 1 and not res.runs[-1].has_content and not res.runs[-1].sizes:
        res.runs.pop()  # trailing banner without a run
    return res
