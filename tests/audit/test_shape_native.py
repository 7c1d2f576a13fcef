"""Native code on the evaluation path (PG112): the C reader, the two shapes, sibling files, cffi, and libraries
that cannot be read. Every snippet is synthetic."""

from __future__ import annotations

import textwrap

from audit.analysis.native import calls, defs, mixes, native_shapes, parse_native, tokenize
from audit.challenge import UNANALYSED
from audit.engine import audit_submission
from audit.findings import Severity
from tests.support import make_submission


def _pg112(files: dict[str, str]):
    rep = audit_submission(make_submission(files, dedent=True), select={"PG112"})
    return [f for f in rep.findings if f.rule.startswith("PG112")], rep


def _shapes(c: str):
    return native_shapes(parse_native(textwrap.dedent(c)))


# --- the C reader -------------------------------------------------------------------------------------------
def test_tokens_drop_comments_and_preprocessor_lines_but_keep_line_numbers():
    toks = tokenize('#include <math.h>\n#define N \\\n  4\n/* a\n b */ int x = 1; // y = 2\n"s;"\n')
    assert [t.text for t in toks] == ["int", "x", "=", "1", ";", '"s;"']
    assert toks[0].line == 5 and toks[-1].line == 6


def test_functions_methods_and_exports():
    unit = parse_native(
        """
        static int helper(int a) { return a + 1; }
        struct Table { uint8_t* flags; void add(int k) { flags[k] = 1; } };
        extern "C" { static int kept(int a) { return a; } }
        int api(const double* p, double& out, int n) { out = p[0]; return n; }
        """
    )
    assert {"helper", "add", "kept", "api"} <= set(unit.functions)
    assert unit.bound_names == {"kept", "api"}  # static outside extern "C" and methods are not callable from Python
    params = {p.name: p for p in unit.functions["api"].params}
    assert not params["p"].out and params["out"].out
    assert "uint8_t" in unit.types["flags"]


def test_statements_carry_their_guards_loops_and_early_exits():
    unit = parse_native(
        """
        void f(const int* a, int* out, int n) {
            for (int i = 0; i < n; i++) {
                if (a[i] < 0) continue;
                if (a[i] > 9) out[i] = 1; else { out[i] = 2; }
                out[i] += 3;
            }
        }
        """
    )
    fn = unit.functions["f"]
    assert [lp.var for lp in fn.loops] == ["i"]
    writes = [(s, d) for s in fn.stmts for d in defs(s.toks) if d.root == "out"]
    assert len(writes) == 3
    assert all(s.loops == (0,) for s, _ in writes)
    last = writes[-1][0]
    assert any("0" in [t.text for t in c] for c in last.conds)  # runs only when `a[i] < 0` was false


def test_defs_and_calls_of_a_statement():
    toks = tokenize("double a = x + 1, b = f(a, g(y)); st->k += a; buf[i] = b; ++n;")
    stmts = [toks[i:j] for i, j in [(0, 17)]]
    got = [(d.root, d.kind) for d in defs(stmts[0])]
    assert got == [("a", "var"), ("b", "var")]
    assert [c.name for c in calls(stmts[0])] == ["f", "g"]
    assert [(d.root, d.kind) for d in defs(tokenize("st->k += a"))] == [("st", "member")]
    assert [(d.root, d.kind, [t.text for t in d.index]) for d in defs(tokenize("buf[i] = b"))] == [
        ("buf", "index", ["i"])
    ]


def test_mixture_expressions():
    assert mixes(tokenize("m + log(exp(a - m) + exp(c - m))"))
    assert mixes(tokenize("w * p + (1.0f - w) * q"))
    assert mixes(tokenize("q * (1 - lam[i]) + lam[i] * p"))
    assert not mixes(tokenize("x[(n - 1 - i) * k]"))  # index arithmetic, not a weight's complement
    assert not mixes(tokenize("log(exp(a))"))


# --- the byte-spread mixture (C2) -------------------------------------------------------------------------------
def test_spread_by_pow_and_a_linear_mixture_in_the_same_function():
    shapes = _shapes(
        """
        #include <math.h>
        double run(const int* tgt, const float* prob, const int* blen, const float* byte_p, int n, float w) {
            double bits = 0;
            for (int k = 0; k < n; k++) {
                int tok = tgt[k];
                float per = powf(prob[k], 1.0f / blen[tok]);
                for (int j = 0; j < blen[tok]; j++) {
                    float p = w * per + (1.0f - w) * byte_p[j];
                    bits -= log2f(p);
                }
            }
            return bits;
        }
        """
    )
    assert [(s.kind, s.category, s.line, s.evidence_line) for s in shapes] == [
        ("byte-spread mixture", "ngram_unnormalized", 7, 9)
    ]


def test_split_wide_bits_per_byte_is_not_a_spread():
    assert not _shapes(
        """
        double bpb(const int* tgt, const double* nll, const int* blen, int n) {
            double loss = 0, bytes = 0;
            for (int k = 0; k < n; k++) { int tok = tgt[k]; loss += nll[k]; bytes += blen[tok]; }
            double mixed = 0.5 * loss + (1.0 - 0.5) * loss;
            return loss / bytes;
        }
        """
    )


def test_normalised_byte_mixture_without_a_spread_is_legal():
    assert not _shapes(
        """
        #include <math.h>
        double run(const unsigned char* bytes, const double* nn_byte_p, const double* ppm_p, int n, double w) {
            double bits = 0;
            for (int i = 0; i < n; i++) {
                int b = bytes[i];
                bits -= log2(w * nn_byte_p[i * 256 + b] + (1.0 - w) * ppm_p[i * 256 + b]);
            }
            return bits;
        }
        """
    )


# --- the target-conditioned gate (C1) ---------------------------------------------------------------------------
_HINTS = """
void hints(const int* toks, int n, const unsigned char* boundary, const int* best, int* out, int* hist) {
    int run = 0;
    for (int t = 0; t < n; t++) {
        int y = toks[t];
        GATE
        run = boundary[y] ? 0 : run + 1;
        hist[run] = y;
    }
}
"""


def test_gate_on_the_flag_of_the_predicted_symbol():
    shapes = _shapes(_HINTS.replace("GATE", "if (!boundary[y] && run > 0) out[t] = best[run]; else out[t] = -1;"))
    assert [(s.kind, s.category, s.line, s.evidence_line) for s in shapes] == [
        ("target-conditioned gate", "ngram_target_key", 6, 7)
    ]


def test_gate_on_the_next_symbol_when_the_output_predicts_it():
    src = _HINTS.replace("for (int t = 0; t < n; t++)", "for (int t = 0; t + 1 < n; t++)")
    src = src.replace("int y = toks[t];", "int y = toks[t + 1];")
    shapes = _shapes(src.replace("GATE", "if (!boundary[y]) out[t] = best[run];"))
    assert [s.kind for s in shapes] == ["target-conditioned gate"]


def test_native_function_nested_too_deep_on_the_eval_path_needs_a_human():
    deep = "void score(int* out) {" + "{" * 300 + "}" * 300 + "}"
    found, rep = _pg112(
        {
            "train_gpt.py": f"""
            from torch.utils.cpp_extension import load_inline
            SRC = '#include <cstdint>\\n{deep}\\nvoid api(int* o) {{ o[0] = 1; }}'
            ext = load_inline(name="x", cpp_sources=SRC, functions=["api"])
            def eval_val(model, x):
                ext.api(x)
                return model(x)
            print(eval_val(None, None))
            """
        }
    )
    assert [(f.severity, f.category) for f in found if f.severity is not Severity.INFO] == [
        (Severity.WARNING, UNANALYSED)
    ]
    assert "nested too deeply" in found[0].message and rep.verdict == "needs-human"


def test_gate_on_the_previous_symbol_is_context():
    src = _HINTS.replace("int y = toks[t];", "int y = toks[t]; int x = t ? toks[t - 1] : 0;")
    assert not _shapes(src.replace("GATE", "if (!boundary[x] && run > 0) out[t] = best[run]; else out[t] = -1;"))


def test_symbol_folded_into_the_state_before_the_write_is_context():
    src = _HINTS.replace("GATE", "run = boundary[y] ? 0 : run + 1; if (!boundary[y]) out[t] = best[run];")
    assert not _shapes(src)


def test_scoring_at_the_observed_symbol_with_counts_is_not_a_gate():
    """A PPM/count model evaluated at the realised symbol branches on a count, not on a flag table."""
    assert not _shapes(
        """
        void score(const int* toks, int n, unsigned int* counts, unsigned int* totals, double* out_p) {
            int ctx = 0;
            for (int t = 0; t < n; t++) {
                int y = toks[t];
                unsigned int c = counts[ctx * 1024 + y];
                if (c > 0) out_p[t] = c / (double)(totals[ctx] + 1); else out_p[t] = 1.0 / (totals[ctx] + 1);
                counts[ctx * 1024 + y] += 1; totals[ctx] += 1; ctx = y;
            }
        }
        """
    )


def test_gate_through_an_out_parameter_of_a_helper():
    shapes = _shapes(
        """
        #include <cstdint>
        struct Mixer {
            const uint8_t* word_start_ = nullptr;
            int last_ = 0;
            void pick(bool fresh, int& h) { if (fresh) { h = -1; } else { h = last_; } }
            void batch(const int64_t* toks, int n, int32_t* out) {
                for (int i = 0; i < n; i++) {
                    auto tok = toks[i];
                    bool fresh = word_start_[tok];
                    int h;
                    pick(fresh, h);
                    out[i] = h;
                    last_ = tok;
                }
            }
        };
        """
    )
    assert [s.kind for s in shapes] == ["target-conditioned gate"]


# --- Python side: sibling files, cffi, libraries ---------------------------------------------------------------
_SIBLING_C = """
#include <stdint.h>
void step(const uint16_t* toks, int64_t n, const uint8_t* new_word, uint16_t* guess, uint16_t* last) {
    for (int64_t i = 0; i < n; ++i) {
        const uint16_t tok = toks[i];
        if (!new_word[tok]) {
            guess[i] = last[0];
        } else {
            guess[i] = 0;
        }
        last[0] = tok;
    }
}
"""

_SIBLING_PY = """
import ctypes, subprocess
from pathlib import Path
HERE = Path(__file__).parent
def load():
    subprocess.run(["gcc", "-O3", "-shared", "-fPIC", str(HERE / "hint_state.c"), "-o", str(HERE / "h.so")])
    return ctypes.CDLL(str(HERE / "h.so"))
"""


def test_sibling_c_file_compiled_and_called_during_evaluation():
    found, rep = _pg112(
        {
            "hint_state.py": _SIBLING_PY,
            "train_gpt.py": """
            from hint_state import load
            def eval_val(model, toks, lut, guess, last):
                lib = load()
                lib.step(toks, len(toks), lut, guess, last)
                return model(toks, guess)
            print(eval_val(None, [], None, None, None))
            """,
            "hint_state.c": _SIBLING_C,
        }
    )
    errors = [f for f in found if f.severity is Severity.ERROR]
    assert [(f.category, f.location.path, f.location.start_line) for f in errors] == [
        ("ngram_target_key", "hint_state.c", 6)
    ]
    assert "C1" in errors[0].message
    assert rep.verdict == "flag"


def test_shape_in_a_native_function_python_never_reaches_needs_a_human():
    c = _SIBLING_C + "int version(void) { return 2; }\n"
    found, _ = _pg112(
        {
            "hint_state.py": _SIBLING_PY,
            "train_gpt.py": """
            from hint_state import load
            def eval_val(model, toks):
                lib = load()
                print(lib.version())
                return model(toks)
            print(eval_val(None, []))
            """,
            "hint_state.c": c,
        }
    )
    assert [(f.severity, f.category) for f in found] == [(Severity.WARNING, "ngram_target_key")]
    assert "reaches `step()`" in found[0].message


def test_sibling_c_file_that_no_python_source_builds_needs_a_human():
    found, rep = _pg112(
        {
            "train_gpt.py": "def eval_val(model, x):\n    return model(x)\nprint(eval_val(None, None))\n",
            "k.c": _SIBLING_C,
        }
    )
    assert [(f.severity, f.category, f.location.path) for f in found] == [(Severity.WARNING, "ngram_target_key", "k.c")]
    assert rep.verdict == "needs-human"


def test_sibling_kernel_without_a_shape_is_nothing():
    found, _ = _pg112(
        {
            "train_gpt.py": "def eval_val(model, x):\n    return model(x)\nprint(eval_val(None, None))\n",
            "adam.cu": "__global__ void adam(float* p, const float* g, float lr, int n) {\n"
            "  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) p[i] -= lr * g[i];\n}\n",
        }
    )
    assert found == []


def test_training_kernel_called_only_before_training_is_not_on_the_eval_path():
    found, _ = _pg112(
        {
            "train_gpt.py": '''
            from torch.utils.cpp_extension import load_inline
            SRC = r"""
            #include <torch/extension.h>
            void fused_step(torch::Tensor p, torch::Tensor g, double lr) { p.add_(g, -lr); }
            """
            ext = load_inline(name="opt", cpp_sources=SRC, functions=["fused_step"])
            def train(model, opt, loader, params):
                for step in range(10):
                    loss = model(loader.next()); loss.backward()
                    ext.fused_step(params, params, 0.1)
            train(None, None, None, None)
            '''
        }
    )
    assert all(f.severity is Severity.INFO for f in found)
    assert not any("on the evaluation path read" in f.message for f in found)


def test_cffi_set_source_with_a_byte_spread():
    found, _ = _pg112(
        {
            "train_gpt.py": '''
            import cffi
            C = r"""
            #include <math.h>
            double mixbits(const int* tgt, const double* lp, const int* nb, const double* ppm, int n) {
                double s = 0;
                for (int i = 0; i < n; i++) {
                    int y = tgt[i];
                    double e = exp(lp[i] / nb[y]);
                    s -= log(0.5 * e + (1.0 - 0.5) * ppm[i]);
                }
                return s;
            }
            """
            def build():
                ffi = cffi.FFI()
                ffi.cdef("double mixbits(const int*, const double*, const int*, const double*, int);")
                ffi.set_source("_mix", C)
                ffi.compile()
            def eval_val(model, val_tokens):
                build()
                from _mix import lib
                return lib.mixbits(val_tokens)
            print(eval_val(None, None))
            '''
        }
    )
    errors = [f for f in found if f.severity is Severity.ERROR]
    assert [(f.category, f.location.start_line) for f in errors] == [("ngram_unnormalized", 9)]


def test_prebuilt_library_loaded_during_evaluation_cannot_be_read():
    found, rep = _pg112(
        {
            "train_gpt.py": """
            import ctypes
            def eval_val(model, x):
                lib = ctypes.CDLL("./libmix.so")
                return lib.mix(x)
            print(eval_val(None, None))
            """,
            "libmix.so": "\x7fELF",
        }
    )
    assert [(f.severity, f.category) for f in found] == [(Severity.WARNING, UNANALYSED)]
    assert "libmix.so" in found[0].message
    assert rep.verdict == "needs-human"


def test_compile_calls_of_other_objects_are_not_cffi_builds():
    found, _ = _pg112(
        {
            "train_gpt.py": """
            import cffi, re, torch
            ffi = cffi.FFI()
            pat = re.compile("x")
            def eval_val(model, x):
                return torch.compile(model)(x)
            print(eval_val(None, None))
            """
        }
    )
    assert found == []


def test_system_library_through_ctypes_is_not_native_submission_code():
    found, _ = _pg112(
        {
            "train_gpt.py": """
            import ctypes
            def eval_val(model, x):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                return model(x)
            print(eval_val(None, None))
            """
        }
    )
    assert found == []
