from __future__ import annotations

import ast
import re

from ..analysis.astutil import UNKNOWN, call_name
from ..analysis.calibration import CalibrationAnalysis
from ..challenge import TRAIN_CAP_SECONDS
from ..findings import Confidence, Location, Reachability, Severity
from ..load.messages import Silence, silent_mechanism
from .base import Invalid, Rule, Valid

RULING = "https://github.com/openai/parameter-golf#rules (training data may only be used inside the 600 s)"

# A run that stopped this close to 600 s used the full training budget (stop overshoot is a few ms).
_FULL_CAP_MS = 1000.0 * TRAIN_CAP_SECONDS - 1000.0
# A log message saying that count tables (n-gram tables, caches, an oracle) are filled from the training shards.
_TABLES = r"(?:n-?gram|gram\b|count|table|cache|oracle|prefill)"
_TRAIN = r"\btrain(?:ing)?[ _-](?:shards?|data|set|tokens|files)\b"
_TABLES_FROM_TRAIN = re.compile(rf"(?i){_TABLES}.*{_TRAIN}|{_TRAIN}.*{_TABLES}")

_LOOP = """
            def hessians(model, loader, n):
                H = {}
                def hook(mod, inp, out):
                    x = inp[0].flatten(0, 1)
                    H[mod] = H.get(mod, 0) + x.T @ x
                for m in model.modules():
                    m.register_forward_hook(hook)
                for _ in range(n):
                    model(loader.next_batch())
                return H
"""


_HP = """
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = 600.0
"""
# the wallclock-capped training loop inside `main(model, opt, Loader, elapsed_ms, ...)`
_CAPPED_TRAINING = """
                args = Hyperparameters()
                max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
                loader = Loader(args.train_files)
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    if elapsed_ms() >= max_wallclock_ms:
                        break
"""

# a plain baseline that prints only its own training and final lines
_LOG_BASELINE = """
            def main(log0, step, loss, bpb):
                log0(f"step:{step} train_loss:{loss:.4f}")
                log0(f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
            main(print, 1, 1.0, 1.0)
"""
_FOREIGN_LOG = """
            step:1 train_loss:3.1000
            prefilling n-gram tables from training shards (order 12)...
            ngram_mix:order 12 experts ready
            final_ngram_mix_exact val_loss:0.10000000 val_bpb:0.06000000
"""

# calibration on training shards after the clock, with its own first message and the line printed before it
_SILENT_CALIBRATION = """
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = 600.0
            def hessians(model, loader, n, log0):
                log0(f"calibration:collecting hessians over {n} batches")
                H = {}
                def hook(mod, inp, out):
                    x = inp[0].flatten(0, 1)
                    H[mod] = H.get(mod, 0) + x.T @ x
                for m in model.modules():
                    m.register_forward_hook(hook)
                for _ in range(n):
                    model(loader.next_batch())
                return H
            def main(model, opt, Loader, elapsed_ms, log0):
                args = Hyperparameters()
                max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
                loader = Loader(args.train_files)
                step = 0
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    step += 1
                    if elapsed_ms() >= max_wallclock_ms:
                        break
                log0(f"training done, exporting the model step:{step}")
                return hessians(model, Loader(args.train_files), 256, log0)
            main(None, None, None, None, print)
"""


class TrainDataAtEval(Rule):
    """
    ## What it does
    Finds calibration collectors (forward hooks accumulating `x.T @ x`, e.g. GPTQ Hessians) that read training
    shards (`args.train_files`, the training loader, a loader that globs `fineweb_train_*`) after the
    wallclock-capped training loop has ended, in a submission that reserves no time for it in the training
    budget (no `max_wallclock_ms -= gptq_reserve_ms`). The logs confirm it: `stopping_early … train_time:~600000ms`
    followed by `gptq:` calibration lines and no `gptq:reserving …` line.

    ## Why it breaks the rules
    Training data may only be used inside the 600 s training budget. Reading training shards once the clock has
    stopped is extra training-data access outside the budget, like fine-tuning after the cap.

    The same holds for optimiser steps: a function with a backward pass, called after the capped training loop,
    whose batches come from the training shards (test-time training on a training slice) is reported too.

    When the logs were printed by code that is not shipped (PG008) and they say that count tables (n-gram
    tables, a cache, an oracle) are filled from the training shards, the mechanism the logs show is judged: the
    evaluation reads state built from training data outside the artifact.

    ## Example
    ```python
    while True:  # stops when train_time reaches max_wallclock_ms (600 s)
        ...
    calib_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)
    hessians = collect_hessians(model, calib_loader, num_batches=256)
    ```

    ## Compliant alternative
    Reserve the calibration time inside the budget (`max_wallclock_ms -= args.gptq_reserve_ms`, as the merged
    GPTQ records do), or calibrate on text the model generates itself.

    ## Known false positives
    A training cap lowered by hand (`MAX_WALLCLOCK_SECONDS=590`) instead of an explicit reserve is reported as a
    warning: whether calibration fits in the remaining seconds needs a human. Train time plus calibration time
    in the logs is deliberately not used (merged records with a reserve add up to 600.7–604 s).
    Negative log evidence lowers a finding to a warning: when every log prints the line printed just before the
    collector is called and none prints the collector's first (unconditional) message, the claimed runs may not
    have gone through it.
    """

    CODE = "PG106"
    NAME = "train-data-at-eval"
    CATEGORY = "train_data_at_eval"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "training shards read after the training clock stopped (calibration or TTT with no reserved budget)"
    FIX_HINT = "Subtract a calibration reserve from the training budget (max_wallclock_ms -= gptq_reserve_ms)."

    VALID = [
        Valid(
            """
            import os
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", "600"))
                gptq_reserve_ms = float(os.environ.get("GPTQ_RESERVE_MS", "12000"))
            """
            + _LOOP
            + """
            def main(model, opt, Loader, elapsed_ms):
                args = Hyperparameters()
                max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
                max_wallclock_ms -= args.gptq_reserve_ms
                loader = Loader(args.train_files)
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    if elapsed_ms() >= max_wallclock_ms:
                        break
                return hessians(model, Loader(args.train_files), 64)
            main(None, None, None, None)
            """,
            logs={
                "train.log": """
            gptq:reserving 12000ms from training budget, effective=588000ms
            stopping_early: wallclock_cap train_time:588011ms step:6500/20000
            gptq:calibrating with 64 batches (training data)...
            """
            },
            note="reserved budget: calibration happens inside the 600 s",
        ),
        Valid(
            """
            import torch
            class Hyperparameters:
                max_wallclock_seconds = 600.0
            """
            + _LOOP
            + """
            def selfgen_tokens(model, n):
                t = torch.zeros(n, 1, dtype=torch.long)
                for _ in range(128):
                    t = torch.cat([t, torch.multinomial(model(t)[:, -1].softmax(-1), 1)], 1)
                return t
            class ListLoader:
                def __init__(self, seqs):
                    self.seqs = list(seqs)
                def next_batch(self):
                    return self.seqs.pop()
            def main(model, opt, train_loader, elapsed_ms):
                max_wallclock_ms = 1000.0 * Hyperparameters.max_wallclock_seconds
                for step in range(100000):
                    model(train_loader.next_batch()).backward()
                    opt.step()
                    if elapsed_ms() >= max_wallclock_ms:
                        break
                calib = selfgen_tokens(model, 32)
                return hessians(model, ListLoader(calib), 32)
            main(None, None, None, None)
            """,
            note="self-generated calibration after the clock is legal",
        ),
        Valid(
            """
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = 600.0
            """
            + _LOOP
            + """
            def main(model, opt, Loader, elapsed_ms):
                args = Hyperparameters()
                max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
                loader = Loader(args.train_files)
                step = 0
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    step += 1
                    if step % 1000 == 0:
                        H = hessians(model, loader, 8)
                    if elapsed_ms() >= max_wallclock_ms:
                        break
            main(None, None, None, None)
            """,
            note="calibration inside the timed training loop",
        ),
        Valid(
            """
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = 600.0
            def warm_up(model, opt, loader):
                for _ in range(20):
                    model(loader.next_batch()).mean().backward()
                    opt.step()
            def ttt_on_val(model, opt, val_tokens):
                for i in range(0, len(val_tokens), 1024):
                    loss = model(val_tokens[i:i + 1024]).mean()
                    loss.backward()
                    opt.step()
            def main(model, opt, Loader, elapsed_ms, val_tokens):
                args = Hyperparameters()
                max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
                loader = Loader(args.train_files)
                warm_up(model, opt, loader)
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    if elapsed_ms() >= max_wallclock_ms:
                        break
                ttt_on_val(model, opt, val_tokens)
            main(None, None, None, None, None)
            """,
            note="warm-up on training data before the clock, TTT on validation data after it (other rules judge that)",
        ),
        Valid(
            _LOG_BASELINE
            + """
            def prefill(log0, tables, shards):
                log0(f"prefilling n-gram tables from training shards ({len(shards)} files)...")
                log0(f"ngram_mix:order {len(tables)} experts ready")
            """,
            logs={"train.log": _FOREIGN_LOG.replace("final_ngram_mix_exact", "final_int8_zlib_roundtrip_exact")},
            note="the shipped code prints the prefill itself: the code analyses judge it, not the logs",
        ),
    ]
    INVALID = [
        Invalid(
            _HP
            + _LOOP
            + """
            def main(model, opt, Loader, elapsed_ms):
            """
            + _CAPPED_TRAINING
            + """
                calib_loader = Loader(args.train_files)
                return hessians(model, calib_loader, 256)
            main(None, None, None, None)
            """,
            logs={
                "train.log": """
            stopping_early: wallclock_cap train_time:600031ms step:7000/20000
            gptq:calibrating with training data...
            gptq:calibrated 66 layers in 4.1s
            """
            },
            line=29,
            message="`hessians()` reads training data after the training clock stopped",
        ),
        Invalid(
            """
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                max_wallclock_seconds = 600.0
            class ShardLoader:
                def __init__(self, h):
                    self.files = sorted(glob.glob(h.train_files))
                def next_batch(self):
                    return self.files
            """
            + _LOOP
            + """
            def train(h, model, opt, elapsed_ms):
                max_wallclock_ms = 1000.0 * h.max_wallclock_seconds
                loader = ShardLoader(h)
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    if elapsed_ms() >= max_wallclock_ms:
                        break
            def quantize(h, model):
                return hessians(model, ShardLoader(h), 128)
            def run(h, model, opt, elapsed_ms):
                train(h, model, opt, elapsed_ms)
                return quantize(h, model)
            run(Hyperparameters(), None, None, None)
            """,
            note="calibration in a helper called after the training function, loader opens train shards itself",
            line=31,
            message="`hessians()` reads training data after the training clock stopped",
        ),
        Invalid(
            _HP
            + """
            def adapt_on_train_slice(model, opt, loader, steps):
                for _ in range(steps):
                    loss = model(loader.next_batch()).mean()
                    loss.backward()
                    opt.step()
            def main(model, opt, Loader, elapsed_ms, val_tokens):
            """
            + _CAPPED_TRAINING
            + """
                slice_loader = Loader(args.train_files)
                adapt_on_train_slice(model, opt, slice_loader, 200)
                return eval_val(model, val_tokens)
            main(None, None, None, None, None)
            """,
            note="TTT on a training slice at eval time",
            line=23,
            message="`adapt_on_train_slice()` takes optimiser steps on training data",
        ),
        Invalid(
            """
            import os
            def main():
                print(os.environ.get("RUN_ID"))
            main()
            """,
            logs={
                "train.log": """
            stopping_early: wallclock_cap train_time:600102ms step:6900/20000
            gptq:collecting hessians from training data (256 batches)...
            gptq:collected hessians for 68 layers (training data)
            """
            },
            severity=Severity.WARNING,
            note="log-only evidence (code path not recognised): needs a human",
            line=3,
            message="calibration on training data after training stopped",
            path="train.log",
        ),
        Invalid(
            _SILENT_CALIBRATION,
            logs={"train.log": "step:6000 train_loss:2.1000\ntraining done, exporting the model step:6000\n"},
            severity=Severity.WARNING,
            note="negative log evidence: every log reaches the line before the collector, none prints its first "
            "message",
            line=28,
            message="may not have run in the claimed runs",
        ),
        Invalid(
            _LOG_BASELINE,
            logs={"train.log": _FOREIGN_LOG},
            note="the shipped script is a plain baseline; the logs come from code that prefills n-gram tables",
            line=3,
            message="count tables filled from the training shards by code that is not shipped",
            path="train.log",
        ),
    ]

    def check(self):
        analysis = self.analyses.calibration
        logs = self.analyses.log_calibration
        log_reserve = [lc.reserve for lc in logs if lc.reserve is not None]
        all_reserves = analysis.reserves()
        reserves = [r for r in all_reserves if self._reserve_live(r)]
        zero_reserves = [r for r in all_reserves if r not in reserves]
        if reserves or any(ms > 0 for _, _, ms in log_reserve):
            # calibration time is taken out of the training budget (the merged-record pattern); a log line
            # "reserving 0s" may be a sub-second reserve rounded by the format, so the code decides then
            return
        log_ev = self._log_evidence(logs)
        emitted = False
        for site in analysis.sites():
            if "train" not in site.origin.kinds or site.during_training or site.after_clock is None:
                continue
            if "train" in site.origin.conditional:
                continue  # train data only via an undecided switch: the val rule covers the other branch
            tidx, tnode, note = site.origin.kinds["train"]
            cidx, cnode, cnote = site.after_clock
            evidence = [
                self.location(cidx, cnode, cnote),
                self.location(site.idx, site.call, "calibration collector called after training"),
                self.location(tidx, tnode, note),
            ]
            evidence.extend(self.location(r.idx, r.node, "reserve is 0 or switched off") for r in zero_reserves[:1])
            evidence.extend(log_ev)
            lowered = self._lowered_cap(analysis, logs)
            msg = (
                f"`{call_name(site.call)}()` reads training data after the training clock stopped, "
                "and no time is reserved for it in the training budget"
            )
            if lowered is not None:
                msg += f" (the training cap is lowered to {lowered:g} s by hand; check that calibration fits)"
            silence = None if log_ev else self._silence(site.idx, site.call, site.collector_idx, site.collector)
            if silence is not None:
                msg += self._silence_note(silence)
                evidence.append(self._silence_location(silence))
            yield self.finding(
                site.idx,
                site.call,
                msg,
                evidence=evidence,
                severity=Severity.WARNING if lowered is not None or silence is not None else Severity.ERROR,
                confidence=Confidence.HIGH if log_ev else Confidence.MEDIUM,
            )
            emitted = True
        for site in analysis.adaptation_sites():
            tidx, tnode, note = site.origin.kinds["train"]
            cidx, cnode, cnote = site.after_clock
            evidence = [
                self.location(cidx, cnode, cnote),
                self.location(site.collector_idx, site.collector, "backward pass and optimiser steps here"),
                self.location(tidx, tnode, note),
            ]
            msg = (
                f"`{call_name(site.call)}()` takes optimiser steps on training data after the training clock "
                "stopped (test-time training on a training slice), and no time is reserved for it in the budget"
            )
            silence = self._silence(site.idx, site.call, site.collector_idx, site.collector)
            if silence is not None:
                msg += self._silence_note(silence)
                evidence.append(self._silence_location(silence))
            yield self.finding(
                site.idx,
                site.call,
                msg,
                evidence=evidence,
                severity=Severity.WARNING if silence is not None else Severity.ERROR,
                confidence=Confidence.MEDIUM,
            )
            emitted = True
        if not emitted:
            yield from self._log_only(logs)
        yield from self._tables_from_train_by_other_code()

    def _silence(self, idx, call, mech_idx, mechanism) -> Silence | None:
        """Negative log evidence (load/messages.py): every log prints the line just before this call, none
        prints the mechanism's first message, so the claimed runs did not go through it."""
        scope = idx.enclosing(call, ast.FunctionDef, ast.AsyncFunctionDef) or idx.tree
        return silent_mechanism(scope, call, mechanism, list(self.ctx.log_events), idx.src.text, mech_idx.src.text)

    @staticmethod
    def _silence_note(silence: Silence) -> str:
        return (
            f"; but no log prints its first message `{silence.first.text[:80]}` although every log prints the "
            f"line before it (`{silence.before[2][:80]}`): it may not have run in the claimed runs, check"
        )

    @staticmethod
    def _silence_location(silence: Silence) -> Location:
        path, line, text = silence.before
        return Location(
            path=path,
            start_line=line,
            end_line=line,
            snippet=text[:200],
            note=f"printed just before the mechanism; its first message `{silence.first.text[:80]}` never is",
        )

    def _reserve_live(self, r) -> bool:
        if r.value is not UNKNOWN and isinstance(r.value, (int, float)) and r.value <= 0:
            return False
        reach, _ = self.program.reachability(r.idx, r.node)
        return reach is not Reachability.DISABLED_BY_DEFAULT

    @staticmethod
    def _lowered_cap(analysis: CalibrationAnalysis, logs) -> float | None:
        """The hand-lowered training cap in seconds, or None when training runs to the 600 s cap.

        Logs decide when they show where training stopped (a run that stopped at ~600 s and then calibrated
        proves the overrun whatever the other runs did); otherwise the effective configuration does."""
        stops = [lc.stop[2] for lc in logs if lc.stop is not None and lc.calib_after_stop]
        if stops:
            best = max(stops)
            return None if best >= _FULL_CAP_MS else round(best / 1000.0)
        cap = analysis.wallclock_cap_seconds()
        if isinstance(cap, (int, float)) and not isinstance(cap, bool) and 0 < cap < TRAIN_CAP_SECONDS:
            return float(cap)
        return None

    @staticmethod
    def _log_evidence(logs) -> list[Location]:
        out = []
        for lc in sorted(logs, key=lambda lc: -(lc.stop[2] if lc.stop else 0.0)):
            if lc.stop is None or not lc.calib_after_stop:
                continue
            line, text, _ms = lc.stop
            out.append(
                Location(path=lc.path, start_line=line, end_line=line, snippet=text, note="training clock stops here")
            )
            n, t = lc.calib_after_stop[0]
            out.append(Location(path=lc.path, start_line=n, end_line=n, snippet=t, note="calibration runs after it"))
            break
        return out

    def _log_only(self, logs):
        """No recognised code path: a log that stops at the cap and then calibrates on training data."""
        for lc in logs:
            if lc.stop is None or not lc.train_calib:
                continue
            line, text, ms = lc.stop
            if ms < _FULL_CAP_MS:
                continue  # stopped well before the cap: the rest may fit inside the budget
            n, t = lc.train_calib[0]
            yield self.log_finding(
                "The log shows calibration on training data after training stopped at the cap, with no reserve",
                Location(path=lc.path, start_line=n, end_line=n, snippet=t),
                severity=Severity.WARNING,
                confidence=Confidence.LOW,
                evidence=(
                    Location(
                        path=lc.path, start_line=line, end_line=line, snippet=text, note="training clock stops here"
                    ),
                ),
            )
            return

    def _tables_from_train_by_other_code(self):
        """Logs printed by code that is not shipped (checks/logsource.py) saying that count tables are filled
        from the training shards: those tables are state built from training data that the scored evaluation
        reads, and no shipped code builds them inside the artifact. Judged from the logs, as the logs are all
        there is."""
        prov = self.analyses.log_provenance
        if not prov.other_code_ran:
            return
        for path, line, text in prov.mechanism:
            if _TABLES_FROM_TRAIN.search(text):
                yield self.log_finding(
                    "The logs show count tables filled from the training shards by code that is not shipped "
                    f"(`{text[:120]}`): the evaluation reads state built from training data that is not in the "
                    "submitted artifact",
                    Location(path=path, start_line=line, end_line=line, snippet=text[:200]),
                    severity=Severity.ERROR,
                    confidence=Confidence.MEDIUM,
                )
                return
