from __future__ import annotations

from ..analysis.astutil import call_name
from ..findings import Confidence, Location, Severity
from .base import Invalid, Rule, Valid

RULING = "https://github.com/openai/parameter-golf#rules (no access to validation data during training)"


class ValCalibration(Rule):
    """
    ## What it does
    Finds quantisation calibration collectors (functions that hook module inputs and accumulate `x.T @ x`
    statistics, e.g. GPTQ Hessians) and traces the data passed to each live call. Reports a call whose tokens
    come from validation data (`val_tokens`, `args.val_files`, a loader built from them, or a source switch
    such as `GPTQ_CALIB_SOURCE` whose effective value selects validation data), and log lines that say the run
    calibrated on validation data (`source=val`, "calibrating on validation data").

    ## Why it breaks the rules
    The artifact must be produced without seeing the validation split. Hessians or activation statistics taken
    from validation text fit the quantised weights to the very tokens that are scored.

    ## Example
    ```python
    calib_loader = DistributedTokenLoader(args.val_files, rank, world_size, device)
    hessians = collect_hessians(model, calib_loader, num_batches=64)
    ```

    ## Compliant alternative
    Calibrate on training shards inside the training budget (reserve the time:
    `max_wallclock_ms -= gptq_reserve_ms`), or on text the model generates itself.

    Every definition that can reach the call is followed (an `if`/`else` choosing validation or generated
    text, a default overwritten under a switch, a helper's guarded `return`s), each branch's guard folded
    under the effective config: a dead branch adds nothing, one the config cannot decide is a warning.

    ## Known false positives
    A source switch that cannot be folded statically (set at run time) is reported as a warning. Weight-only
    clip search ("GPTQ-lite") reads no data and is never reported. Folder or variable names such as "ValCalib"
    are ignored: only the traced data counts.
    """

    CODE = "PG105"
    NAME = "val-calibration"
    CATEGORY = "val_calibration"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "quantisation calibration statistics taken from validation data"
    FIX_HINT = "Calibrate on training data inside the training budget, or on self-generated (autoregressive) text."

    VALID = [
        Valid(
            """
            import os, torch
            class Hyperparameters:
                train_files = "data/fineweb_train_*.bin"
                val_files = "data/fineweb_val_*.bin"
                calib_reserve_ms = float(os.environ.get("CALIB_RESERVE_MS", "9000"))
            def calib_stats(model, loader, n):
                stats = {}
                def hook(mod, inp, out):
                    x = inp[0].flatten(0, 1)
                    stats[mod] = stats.get(mod, 0) + x.T @ x
                hs = [m.register_forward_hook(hook) for m in model.modules()]
                for _ in range(n):
                    model(loader.next_batch())
                return stats
            def main(model, opt, TokenLoader):
                args = Hyperparameters()
                budget_wallclock_ms = 600000.0
                budget_wallclock_ms -= args.calib_reserve_ms
                loader = TokenLoader(args.train_files)
                while True:
                    model(loader.next_batch()).backward()
                    opt.step()
                    if elapsed() > budget_wallclock_ms:
                        break
                stats = calib_stats(model, TokenLoader(args.train_files), 32)
            main(None, None, None)
            """,
            note="training-data calibration inside a reserved budget",
        ),
        Valid(
            """
            import torch
            def sample_calib_tokens(model, n, length):
                toks = torch.zeros(n, 1, dtype=torch.long)
                for _ in range(length):
                    p = model(toks)[:, -1].softmax(-1)
                    toks = torch.cat([toks, torch.multinomial(p, 1)], 1)
                return toks
            def act_stats(model, token_batches):
                acc = {}
                def hook(mod, inp, out):
                    acc[mod] = acc.get(mod, 0) + inp[0].T @ inp[0]
                for m in model.modules():
                    m.register_forward_hook(hook)
                for b in token_batches:
                    model(b)
                return acc
            def main(model, val_tokens):
                calib = sample_calib_tokens(model, 16, 256)
                stats = act_stats(model, calib)
                print(eval_val(model, val_tokens))
            main(None, None)
            """,
            note="self-generated calibration text; validation only used for the final score",
        ),
        Valid(
            """
            import torch
            def quantize_clip_search(w, bits=6):
                best, best_err = None, float("inf")
                for pct in (0.999, 0.9995, 1.0):
                    clip = torch.quantile(w.abs(), pct)
                    q = torch.round(w.clamp(-clip, clip) / clip * 31)
                    err = (q * clip / 31 - w).pow(2).mean()
                    if err < best_err:
                        best, best_err = q, err
                return best
            def main(model, val_tokens):
                for p in model.parameters():
                    quantize_clip_search(p)
                print(eval_val(model, val_tokens))
            main(None, None)
            """,
            note="weight-only clip search: no calibration data",
        ),
        Valid(
            """
            import os
            SOURCE = os.environ.get("CALIB_SOURCE", "train")
            def hessians(model, loader):
                H = {}
                def hk(m, i, o):
                    H[m] = H.get(m, 0) + i[0].T @ i[0]
                for m in model.modules():
                    m.register_forward_hook(hk)
                model(loader.next_batch())
                return H
            def main(model, args, Loader):
                loader = Loader(args.val_files if SOURCE == "val" else args.train_files)
                return hessians(model, loader)
            main(None, None, None)
            """,
            note="validation branch of a switch whose effective value selects training data",
        ),
        Valid(
            """
            import os, torch
            CALIB_VAL = bool(int(os.environ.get("CALIB_VAL", "0")))
            def sample_tokens(model, n):
                toks = torch.zeros(n, 1, dtype=torch.long)
                for _ in range(64):
                    toks = torch.cat([toks, torch.multinomial(model(toks)[:, -1].softmax(-1), 1)], 1)
                return toks
            def act_stats(model, tokens):
                acc = {}
                def hook(mod, inp, out):
                    acc[mod] = acc.get(mod, 0) + inp[0].T @ inp[0]
                for m in model.modules():
                    m.register_forward_hook(hook)
                model(tokens)
                return acc
            def main(model, val_tokens):
                if CALIB_VAL:
                    data = val_tokens[:4096]
                else:
                    data = sample_tokens(model, 16)
                return act_stats(model, data)
            main(None, None)
            """,
            note="if/else switch whose live branch (the default) calibrates on self-generated text",
        ),
    ]
    INVALID = [
        Invalid(
            """
            def collect_stats(model, loader, n):
                H = {}
                def hook(mod, inp, out):
                    x = inp[0]
                    H[mod] = H.get(mod, 0) + x.transpose(0, 1).matmul(x)
                for m in model.modules():
                    m.register_forward_hook(hook)
                for _ in range(n):
                    model(loader.next_batch())
                return H
            def main(model, args, TokenLoader):
                calib = TokenLoader(args.val_files)
                return collect_stats(model, calib, 64)
            main(None, None, None)
            """,
            line=14,
            message="`collect_stats()` collects calibration statistics",
        ),
        Invalid(
            """
            import os
            SOURCE = os.environ.get("CALIB_SOURCE", "val")
            def hessians(model, loader):
                H = {}
                def hk(m, i, o):
                    H[m] = H.get(m, 0) + i[0].T @ i[0]
                for m in model.modules():
                    m.register_forward_hook(hk)
                model(loader.next_batch())
                return H
            def main(model, args, Loader):
                loader = Loader(args.val_files if SOURCE == "val" else args.train_files)
                return hessians(model, loader)
            main(None, None, None)
            """,
            note="source switch defaulting to validation data",
            line=14,
            message="`hessians()` collects calibration statistics",
        ),
        Invalid(
            """
            import torch
            def calibrate(model, tokens):
                acc = {}
                def hook(mod, inp, out):
                    acc[mod] = acc.get(mod, 0) + inp[0].T @ inp[0]
                for m in model.modules():
                    m.register_forward_hook(hook)
                with torch.no_grad():
                    for i in range(0, 4096, 512):
                        model(tokens[i:i + 512])
                return acc
            def main(model, val_tokens):
                window = val_tokens[:4096]
                return calibrate(model, window)
            main(None, None)
            """,
            note="a slice of the validation tokens",
            line=15,
            message="`calibrate()` collects calibration statistics",
        ),
        Invalid(
            """
            import os, torch
            CALIB_VAL = bool(int(os.environ.get("CALIB_VAL", "1")))
            def sample_tokens(model, n):
                toks = torch.zeros(n, 1, dtype=torch.long)
                for _ in range(64):
                    toks = torch.cat([toks, torch.multinomial(model(toks)[:, -1].softmax(-1), 1)], 1)
                return toks
            def act_stats(model, tokens):
                acc = {}
                def hook(mod, inp, out):
                    acc[mod] = acc.get(mod, 0) + inp[0].T @ inp[0]
                for m in model.modules():
                    m.register_forward_hook(hook)
                model(tokens)
                return acc
            def main(model, val_tokens):
                data = sample_tokens(model, 16)
                if CALIB_VAL:
                    data = val_tokens[:4096]
                return act_stats(model, data)
            main(None, None)
            """,
            note="a self-generated default overwritten by validation tokens under a switch that is on",
            line=21,
            message="`act_stats()` collects calibration statistics on validation data",
        ),
        Invalid(
            """
            import os
            def quantize(model):
                return model
            def main(model):
                print(os.environ.get("RUN_ID"))
                return quantize(model)
            main(None)
            """,
            logs={
                "train.log": """
            step:1000/1000 train_loss:2.91 train_time:590000ms
            quant:calibrating activations source=val batches=32
            final_int6_roundtrip val_loss:1.95 val_bpb:1.15
            """
            },
            note="the log proves validation calibration although the code path is not recognised",
            line=3,
            message="calibration ran on validation data",
            path="train.log",
        ),
    ]

    def check(self):
        analysis = self.analyses.calibration
        logs = self.analyses.log_calibration
        log_lines = [(lc.path, n, t) for lc in logs for n, t in lc.val_calib]
        log_evidence = [
            Location(
                path=p, start_line=n, end_line=n, snippet=t, note="the log says the run calibrated on validation data"
            )
            for p, n, t in log_lines[:3]
        ]
        proven = False
        for site in analysis.sites():
            if "val" not in site.origin.kinds:
                continue
            vidx, vnode, note = site.origin.kinds["val"]
            evidence = [
                self.location(site.idx, site.call, "calibration collector called here"),
                self.location(vidx, vnode, note),
                self.location(site.collector_idx, site.collector, "hooks accumulate activation statistics"),
            ]
            evidence.extend(self.location(i, n, why) for i, n, why in site.origin.undecided[:1])
            evidence.extend(log_evidence)
            conditional = "val" in site.origin.conditional
            severity = Severity.WARNING if conditional and not log_lines else Severity.ERROR
            msg = f"`{call_name(site.call)}()` collects calibration statistics on validation data"
            if conditional:
                msg += " when a source switch that cannot be decided statically selects it"
            f = self.finding(
                site.idx,
                site.call,
                msg,
                evidence=evidence,
                severity=severity,
                confidence=Confidence.HIGH if not conditional else Confidence.MEDIUM,
            )
            proven |= f.severity is Severity.ERROR
            yield f
        if log_lines and not proven:
            path, line, text = log_lines[0]
            yield self.log_finding(
                "The log says quantisation calibration ran on validation data",
                Location(path=path, start_line=line, end_line=line, snippet=text),
                severity=Severity.ERROR,
                confidence=Confidence.MEDIUM,
                evidence=log_evidence,
            )
