from __future__ import annotations

import dataclasses

from ..analysis.native import NativeSource, NativeUse, OpaqueLoad, PySite, Shape
from ..challenge import UNANALYSED
from ..findings import Confidence, Finding, Location, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/1017 (C1 causality, C2 normalisation); native code on the "
    "evaluation path is part of the scored evaluation and is judged like Python"
)

# A byte-spread mixture in C held in a Python string, built with gcc and called from the evaluation function.
_SPREAD = '''
import ctypes, os, subprocess, tempfile
SRC = r"""
#include <math.h>
#include <stdint.h>
static double blend(double a, double b, double w) {
    return log(w * exp(a) + (1.0 - w) * exp(b));
}
double score(const int64_t *tgt, const double *nll, const int32_t *nbytes, const double *byte_lp, int64_t n) {
    double total = 0.0;
    for (int64_t t = 0; t < n; t++) {
        int y = (int)tgt[t];
        int len = nbytes[y];
        double share = -nll[t] / (double)len;
        for (int j = 0; j < len; j++) total -= blend(share, byte_lp[j], 0.7);
    }
    return total;
}
"""
def build():
    c_path = os.path.join(tempfile.gettempdir(), "mix.c")
    with open(c_path, "w") as f:
        f.write(SRC)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", c_path, "-o", c_path + ".so", "-lm"], check=True)
    return ctypes.CDLL(c_path + ".so")
def eval_val(model, val_tokens):
    lib = build()
    return lib.score(val_tokens)
print(eval_val(None, None))
'''

# A hint kernel whose gate reads a flag of the symbol it predicts (compiled with load_inline).
_GATE = '''
from torch.utils.cpp_extension import load_inline
KERNEL = r"""
#include <cstdint>
static void remember(int64_t* state, int64_t y) { state[0] = y; }
void make_hints(const int64_t* toks, int64_t n, const uint8_t* word_start, const int32_t* guess,
                int32_t* hint, int64_t* state) {
    for (int64_t t = 0; t < n; t++) {
        const int64_t y = toks[t];
        if (!word_start[y]) {
            hint[t] = guess[state[0]];
        } else {
            hint[t] = -1;
        }
        remember(state, y);
    }
}
"""
ext = load_inline(name="hints", cpp_sources=KERNEL, functions=["make_hints"])
def eval_val(model, val_tokens, hint, state):
    ext.make_hints(val_tokens, len(val_tokens), None, None, hint, state)
    return model(val_tokens, hint)
print(eval_val(None, None, None, None))
'''


class NativeEval(Rule):
    """
    ## What it does
    Reads the native code a submission builds or loads — C/C++/CUDA held in a Python string or shipped next to
    the script, compiled with `torch.utils.cpp_extension.load_inline`/`load`, `cffi` or `subprocess` + `gcc`,
    and libraries loaded with `ctypes` — ties it to the Python calls of its functions, and looks inside its loops
    over the scored positions for two shapes:

    - a per-position model score divided by a count that depends on the token at the position (its byte length)
      and then mixed with another model (`log(exp(a) + exp(b))`, `w*p + (1-w)*q`): a byte-spread mixture (C2);
    - the output for position i written under a condition (or from a value) that reads a per-symbol flag table
      (`uint8_t`/`bool`) at the symbol of position i, while the state absorbs that symbol only afterwards: a
      gate on the token being predicted (C1).

    Native code on the evaluation path that cannot be read (a prebuilt library loaded by `ctypes`, a library
    whose source is not shipped) needs a human.

    ## Why it breaks the rules
    Native code on the evaluation path is part of the evaluation: spreading a token's probability over its
    bytes and mixing per byte gives a mixture that is not a distribution over the vocabulary (issue #1017, C2),
    and a gate that reads the answer leaks it into the prediction (C1). Moving the computation into C does not
    change what it does to the scored positions.

    ## Example
    ```c
    for (int64_t t = 0; t < n; t++) {
        int y = (int)tgt[t];
        double share = -nll[t] / (double)nbytes[y];           /* the token's NLL over its bytes */
        for (int j = 0; j < nbytes[y]; j++) total -= log(w * exp(share) + (1 - w) * exp(ppm[j]));
    }
    ```

    ## Compliant alternative
    Mix normalised distributions (a 256-way byte distribution marginalised from the full softmax, or a
    token-level mixture over the whole vocabulary), and gate only on the context: read flags of the previous
    token (`toks[t - 1]`), and add the symbol at t to the state after its output is written.

    ## Known false positives
    Kernels that compute a full-vocabulary softmax or cross-entropy, fused optimisers and attention builds carry
    neither shape and are at most `info` ("read, nothing found"). Per-byte reporting of a token's NLL without a
    mixture is not reported. A shape in native code whose Python caller is off under the effective
    configuration is `info`; one that no analysed Python source builds or calls is a `warning` for a human.
    """

    CODE = "PG112"
    NAME = "native-eval"
    CATEGORY = "ngram_unnormalized"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "native (C/C++/CUDA) code on the evaluation path: byte-spread mixture, gate on the target, or unread"
    FIX_HINT = (
        "Mix normalised distributions and gate only on context; ship the source of every native library the "
        "evaluation loads."
    )

    VALID = [
        Valid(
            _SPREAD.replace("total -= blend(share, byte_lp[j], 0.7);", "total += share;"),
            note="the token's NLL reported per byte, no mixture: read, nothing found",
        ),
        Valid(
            _GATE.replace(
                "const int64_t y = toks[t];",
                "const int64_t y = toks[t];\n        const int64_t x = t ? toks[t - 1] : 0;",
            ).replace("if (!word_start[y])", "if (!word_start[x])"),
            note="the gate reads the previous token (context), the symbol is absorbed after the write",
        ),
        Valid(
            _GATE.replace("        remember(state, y);\n", "").replace(
                "const int64_t y = toks[t];\n", "const int64_t y = toks[t];\n        remember(state, y);\n"
            ),
            note="the symbol is absorbed into the state before the output is written: it is context",
        ),
        Valid(
            _SPREAD.replace(
                "print(eval_val(None, None))",
                "if int(os.environ.get('NATIVE_MIX', '0')):\n    print(eval_val(None, None))",
            ),
            note="the mixture's only caller is behind a switch that is off: info",
        ),
        Valid(
            '''
            from torch.utils.cpp_extension import load_inline
            SRC = r"""
            #include <torch/extension.h>
            __global__ void row_ce(const float* logits, const long* tgt, float* out, int V) {
                int r = blockIdx.x; float mx = -1e30f, se = 0.f;
                for (int v = 0; v < V; v++) mx = fmaxf(mx, logits[r * V + v]);
                for (int v = 0; v < V; v++) se += expf(logits[r * V + v] - mx);
                out[r] = logf(se) + mx - logits[r * V + tgt[r]];
            }
            torch::Tensor ce(torch::Tensor l, torch::Tensor t) { return l; }
            """
            ext = load_inline(name="ce", cpp_sources="torch::Tensor ce(torch::Tensor, torch::Tensor);",
                              cuda_sources=SRC, functions=["ce"])
            def eval_val(model, x, y):
                return ext.ce(model(x), y).mean()
            print(eval_val(None, None, None))
            ''',
            note="a full-vocabulary cross-entropy kernel on the evaluation path: read, nothing found",
        ),
    ]
    INVALID = [
        Invalid(
            _SPREAD,
            line=14,
            message="spreading the token's probability over its bytes",
            note="a byte-spread mixture in C compiled with gcc and called from the evaluation function",
        ),
        Invalid(
            _GATE,
            line=10,
            message="the gate reads the token being predicted",
            note="a hint gated on a flag of the symbol it predicts, in a load_inline extension",
        ),
    ]

    def check(self):
        native = self.analyses.native
        for use in native.uses:
            yield from self._use(use)
        for load in native.opaque:
            yield self._opaque(load)

    # --- one native source ---------------------------------------------------------------------------------
    def _use(self, use: NativeUse):
        src = use.source
        if src.unit is None:
            if use.eval_at is not None:
                site, why = use.eval_at
                yield self.finding(
                    site.idx,
                    site.node,
                    f"Native code on the evaluation path could not be read ({src.label} is too large to parse); "
                    f"it {why}",
                    severity=Severity.WARNING,
                    category=UNANALYSED,
                    confidence=Confidence.MEDIUM,
                )
            return
        if src.unit.unread and use.eval_at is not None:
            site, why = use.eval_at
            yield self.finding(
                site.idx,
                site.node,
                f"Native code on the evaluation path could not be read in full ({src.label}: "
                f"{', '.join(src.unit.unread[:3])} nested too deeply to parse); it {why}",
                severity=Severity.WARNING,
                category=UNANALYSED,
                confidence=Confidence.MEDIUM,
            )
        seen: set[str] = set()
        for shape in src.shapes:
            if shape.kind in seen:
                continue
            seen.add(shape.kind)
            yield self._shape(use, shape)
        if not src.shapes and use.eval_at is not None:
            site, why = use.eval_at
            yield self.finding(
                site.idx,
                site.node,
                f"Native code on the evaluation path read ({src.label}, {len(src.unit.functions)} functions; it "
                f"{why}): no byte-spread mixture and no gate on the target found",
                severity=Severity.INFO,
                category=None,
                confidence=Confidence.MEDIUM,
            )

    def _shape(self, use: NativeUse, shape: Shape) -> Finding:
        src = use.source
        where = self._native_loc(src, shape.line, f"{shape.kind} ({shape.condition})")
        evidence = [self._native_loc(src, shape.evidence_line, "the other half of the shape")]
        head = f"Native {shape.kind} ({shape.condition}) in {src.label}: {shape.detail}"
        runs = use.runs(shape.function)
        if use.eval_at is not None and runs:
            site, why = use.eval_at
            evidence.append(self.location(site.idx, site.node, f"the native code runs here: it {why}"))
            f = self.finding(site.idx, site.node, head, evidence=evidence, category=shape.category)
            return dataclasses.replace(f, location=where)
        tied: list[PySite] = use.calls or use.loaders
        if tied:
            site = tied[0]
            evidence.append(self.location(site.idx, site.node, "built or called here"))
            how = (
                "which is not recognised as the evaluation path"
                if runs
                else f"but none of the native functions called from Python reaches `{shape.function}()`"
            )
            f = self.finding(
                site.idx,
                site.node,
                f"{head} — built or called at {site.idx.path}:{site.node.lineno}, {how}; a human must decide "
                "whether it runs during scoring",
                evidence=evidence,
                severity=Severity.WARNING,
                confidence=Confidence.MEDIUM,
                category=shape.category,
            )
            return dataclasses.replace(f, location=where)
        return self.CODE_INFO.finding(
            f"{head} — no analysed Python source builds or calls it; a human must decide whether it runs during "
            "scoring",
            where,
            severity=Severity.WARNING,
            confidence=Confidence.MEDIUM,
            category=shape.category,
            evidence=evidence,
            fix_hint=self.FIX_HINT,
        )

    @staticmethod
    def _native_loc(src: NativeSource, native_line: int, note: str) -> Location:
        lines = src.text.splitlines()
        snippet = lines[native_line - 1].strip()[:200] if 0 < native_line <= len(lines) else ""
        line = src.line(native_line)
        return Location(path=src.path, start_line=line, end_line=line, snippet=snippet, note=note)

    # --- native code that cannot be read -------------------------------------------------------------------
    def _opaque(self, load: OpaqueLoad) -> Finding:
        site = load.site
        when = f"it {load.eval_at[1]}" if load.eval_at else "where its functions run could not be traced"
        return self.finding(
            site.idx,
            site.node,
            f"Native code loaded with `{site.what}` cannot be read: {load.why}; {when}",
            severity=Severity.WARNING,
            category=UNANALYSED,
            confidence=Confidence.MEDIUM,
        )
