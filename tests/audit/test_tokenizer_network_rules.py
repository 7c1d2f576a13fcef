"""PG107 (byte look-up tables, tokenizer, validation subsets) and PG108 (network at evaluation): the parts the
generated VALID/INVALID cases do not reach — shipped `.model` files, the shared analysis, alias resolution."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import pytest

from audit.analysis import bytetables as bytelut
from audit.analysis.config import Config
from audit.analysis.context import Analyses
from audit.analysis.network import network_calls
from audit.analysis.program import Program
from audit.api import audit_git
from audit.engine import audit_submission
from audit.findings import Severity
from audit.load.folder import Folder
from audit.load.resolve import resolve
from audit.load.runcmd import effective_env
from audit.rules.base import RuleContext
from audit.rules.pg107_tokenizer_bpb_bug import TokenizerBpbBug
from audit.rules.pg108_network_at_eval import NetworkAtEval
from tests.support import CORPUS, make_submission

SPACE = "\u2581"


# --- helpers ---------------------------------------------------------------------------------------
def _submission(code: str, **extra: bytes | str) -> Folder:
    files: dict[str, str | bytes] = {"train_gpt.py": code}
    for name, body in extra.items():
        files[name.replace("__", ".")] = body
    return make_submission(files, dedent=True)


def _program(sub: Folder) -> Program:
    env, _ = effective_env(sub.readme_text)
    return Program.build(list(resolve(sub).sources), Config(env=env))


def _run_rule(rule_cls, sub: Folder, with_files: bool = False):
    ctx = RuleContext(analyses=Analyses(_program(sub)), readme=sub.readme_text)
    if with_files:
        ctx.files = sub.files  # what the engine would pass once RuleContext carries the folder's files
    return list(rule_cls(ctx).check())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _model_bytes(pieces: list[tuple[str, int]]) -> bytes:
    """A synthetic SentencePiece ModelProto: repeated field 1 = {1: piece, 2: score, 3: type}."""
    out = bytearray()
    for text, typ in pieces:
        raw = text.encode()
        msg = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + b"\x00\x00\x80\xbf" + b"\x18" + _varint(typ)
        out += b"\x0a" + _varint(len(msg)) + msg
    out += b"\x12\x02\x08\x01"  # a trainer_spec stub the reader must skip
    return bytes(out)


BASE_PIECES = [("<unk>", 2), ("<s>", 3), ("</s>", 3)] + [(f"<0x{i:02X}>", 6) for i in range(4)]

CUSTOM_TOKENIZER_CODE = """
    import os
    import sentencepiece as spm
    class Hyperparameters:
        tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    def build_luts(sp, n):
        base = [0] * n
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue
            if sp.is_byte(i):
                base[i] = 1
                continue
            base[i] = len(sp.id_to_piece(i).replace("\\u2581", "").encode())
        return base
    sp = spm.SentencePieceProcessor(model_file=Hyperparameters.tokenizer_path)
    print(build_luts(sp, 1024))
"""
CUSTOM_README = """
    ```bash
    TOKENIZER_PATH=./data/tokenizers/my_tok.model torchrun --standalone --nproc_per_node=8 train_gpt.py
    ```
"""


# --- the .model reader -----------------------------------------------------------------------------
def test_model_reader_on_synthetic_proto():
    summary = bytelut.read_sentencepiece_model(_model_bytes(BASE_PIECES + [(SPACE, 1), ("\ue000", 4), ("ab", 1)]))
    assert summary is not None
    assert summary.has_space_piece
    assert summary.byte_pieces == 4
    assert summary.user_defined == ["\ue000"]
    assert bytelut.read_sentencepiece_model(b"not a model at all \xff\xff") is None
    assert bytelut.read_sentencepiece_model(b"") is None


def test_model_reader_agrees_with_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp_path / "m"),
        vocab_size=300,
        byte_fallback=True,
        user_defined_symbols=["\ue001"],
        minloglevel=2,
    )
    data = (tmp_path / "m.model").read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=data)
    summary = bytelut.read_sentencepiece_model(data)
    assert summary is not None and len(summary.pieces) == sp.vocab_size()
    assert summary.byte_pieces == sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256
    assert [p for p, _ in summary.pieces] == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert summary.user_defined == ["\ue001"]
    assert summary.has_space_piece == (sp.piece_to_id(SPACE) != sp.unk_id())


# --- PG107 with shipped model files ----------------------------------------------------------------
def test_shipped_model_without_space_piece_is_flagged():
    sub = _submission(
        CUSTOM_TOKENIZER_CODE, README__md=CUSTOM_README, my_tok__model=_model_bytes(BASE_PIECES + [("ab", 1)])
    )
    found = _run_rule(TokenizerBpbBug, sub, with_files=True)
    assert any(f.severity is Severity.ERROR and "no standalone" in f.message for f in found), found


def test_shipped_model_with_space_piece_is_clean():
    sub = _submission(
        CUSTOM_TOKENIZER_CODE,
        README__md=CUSTOM_README,
        my_tok__model=_model_bytes(BASE_PIECES + [(SPACE, 1), ("ab", 1)]),
    )
    found = _run_rule(TokenizerBpbBug, sub, with_files=True)
    assert not [f for f in found if f.severity is not Severity.INFO], [f.message for f in found]


def test_user_defined_symbols_need_a_sidecar():
    pieces = BASE_PIECES + [(SPACE, 1), ("\ue000", 4)]
    sub = _submission(CUSTOM_TOKENIZER_CODE, README__md=CUSTOM_README, my_tok__model=_model_bytes(pieces))
    found = _run_rule(TokenizerBpbBug, sub, with_files=True)
    assert any("user-defined" in f.message and f.severity is Severity.ERROR for f in found)
    with_sidecar = CUSTOM_TOKENIZER_CODE + "\n    def load_validation_byte_sidecar(path):\n        return path\n"
    sub = _submission(with_sidecar, README__md=CUSTOM_README, my_tok__model=_model_bytes(pieces))
    assert not any("user-defined" in f.message for f in _run_rule(TokenizerBpbBug, sub, with_files=True))


def test_custom_tokenizer_without_files_is_judged_from_code():
    sub = _submission(CUSTOM_TOKENIZER_CODE, README__md=CUSTOM_README)
    found = _run_rule(TokenizerBpbBug, sub)
    assert [f.confidence.value for f in found if f.severity is Severity.ERROR] == ["medium"]
    # the canonical tokenizer needs no assertion
    assert not _run_rule(TokenizerBpbBug, _submission(CUSTOM_TOKENIZER_CODE))


# --- the shared analysis ---------------------------------------------------------------------------
def test_table_shapes_are_recognised_without_names():
    code = """
        _C, _B, _I = False, True, "utf-8"
        def xyz(sp, n, base, sp_flag, bnd):
        \tfor t in range(n):
        \t\tif sp.is_control(t)or sp.is_unknown(t)or sp.is_unused(t):continue
        \t\tbnd[t]=_C
        \t\tif sp.is_byte(t):base[t]=1;continue
        \t\tp=sp.id_to_piece(t)
        \t\tif p.startswith('\u2581'):sp_flag[t]=_B;p=p[1:]
        \t\tbase[t]=len(p.encode(_I))
    """
    prog = _program(_submission(code))
    (table,) = bytelut.byte_tables(prog)
    assert table.name == "xyz" and table.byte_check is not None and table.boundary_guards_count
    assert table.space_in_count is None and table.marker_counted is None
    assert sorted(table.boundary) == ["control", "unknown", "unused"]


def test_scorer_space_forms():
    code = """
        def a(base, space, bnd, prev, tgt):
            n = base[tgt]
            n += (space[tgt] & ~bnd[prev]).to(int)
            return n
        def b(base, space, bnd, p, t):
            include = space[t] and not bnd[p]
            return len(base[t]) + (1 if include else 0)
        def c(mask, x, y):
            return mask[x] & ~mask[y]
    """
    sites = bytelut.scorer_space_sites(_program(_submission(code)))
    assert sorted({s.idx.enclosing(s.node, ast.FunctionDef).name for s in sites}) == ["a", "b"]


def test_subset_guard_uses_parameter_defaults():
    code = """
        import os
        def load_val(pattern, max_tok=int(os.environ.get("VAL_MAX_TOKENS", 300000))):
            tok = read(pattern)
            if max_tok > 0:
                tok = tok[:max_tok + 1]
            return tok
        print(load_val("fineweb_val_*.bin"))
    """
    assert [s.tokens for s in bytelut.subset_slices(_program(_submission(code)))] == [300001]
    off = _submission(code, README__md="```bash\nVAL_MAX_TOKENS=0 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    assert bytelut.subset_slices(_program(off)) == []


def test_subset_cleared_when_logs_show_the_full_split():
    code = """
        import os
        N = int(os.environ.get("VAL_MAX_TOKENS", "1000000"))
        def eval_val(model, val_tokens):
            return model(val_tokens[:N])
        print(eval_val(None, None))
    """
    sub = _submission(code, train__log="val_tokens: 62021632\nfinal val_loss:2.0 val_bpb:1.1\n")
    rep = audit_submission(sub, select={"PG107"})
    assert not [f for f in rep.findings if f.rule.startswith("PG107")]


# --- PG108 -----------------------------------------------------------------------------------------
def test_network_aliases_and_shell_commands():
    code = """
        import os, subprocess
        import requests as rq
        from urllib import request
        from datasets import load_dataset
        rq.get("https://x")
        request.urlopen("https://x")
        load_dataset("x")
        os.system("curl -sO https://x/file.bin")
        subprocess.run(["git", "clone", "https://x/repo"])
        subprocess.run(["ls", "-l"])
        print("pip install brotli")
    """
    calls = network_calls(_program(_submission(code)))
    assert [c.what for c in calls] == [
        "requests.get",
        "urllib.request.urlopen",
        "datasets.load_dataset",
        "curl -sO https://x/file.bin",
        "git clone https://x/repo",
    ]


def test_network_in_a_helper_of_the_scorer_is_an_error():
    code = """
        import requests
        def fetch_prior():
            return requests.get("https://example.org/prior").json()
        def blend(logits):
            return logits + fetch_prior()["bias"]
        def eval_val_sliding(model, val_tokens):
            return blend(model(val_tokens))
        print(eval_val_sliding(None, None))
    """
    found = _run_rule(NetworkAtEval, _submission(code))
    assert [f.severity for f in found] == [Severity.ERROR]
    assert "eval_val_sliding" in found[0].message


def test_comprehension_enumerate_and_decode_tables():
    code = """
        def enumerated(sp, V, base):
            pieces = [sp.id_to_piece(i) for i in range(V)]
            for tid, piece in enumerate(pieces):
                base[tid] = len(piece.encode())
            return base
        def comprehension(sp, V):
            return [0 if sp.is_control(i) or sp.is_byte(i) else len(sp.id_to_piece(i).lstrip("\\u2581").encode())
                    for i in range(V)]
        def decoded(tok, V, out):
            for i in range(V):
                out[i] = len(tok.decode([i]).encode("utf-8"))
        print(enumerated(None, 8, []), comprehension(None, 8), decoded(None, 8, []))
    """
    tables = {t.name: t for t in bytelut.byte_tables(_program(_submission(code)))}
    assert set(tables) == {"enumerated", "comprehension", "decoded"}
    assert tables["enumerated"].marker_counted is not None and tables["enumerated"].byte_check is None
    good = tables["comprehension"]
    assert good.byte_check is not None and good.marker_counted is None and good.boundary_guards_count
    assert tables["decoded"].from_decode and tables["decoded"].marker_counted is None
    found = {f.message.split("`")[1]: f for f in _run_rule(TokenizerBpbBug, _submission(code))}
    assert set(found) == {"enumerated()", "decoded()"}
    assert "U+FFFD" in found["decoded()"].message and "3 UTF-8 bytes" in found["enumerated()"].message


def test_table_behind_a_getattr_guard_follows_the_config():
    code = """
        import os
        class Hyperparameters:
            tokenizer_kind = os.environ.get("TOKENIZER_KIND", "sp")
        def other_vocab_lut(vocab, n):
            out = [b""] * n
            for tid in range(n):
                out[tid] = vocab.decode([tid]).encode("utf-8")
            return out
        def setup(h, vocab):
            if getattr(h, "tokenizer_kind", "sp") == "other":
                return other_vocab_lut(vocab, 1254)
            return None
        print(setup(Hyperparameters(), None))
    """
    found = _run_rule(TokenizerBpbBug, _submission(code))
    assert [f.severity for f in found] == [Severity.INFO] and "not reached" in found[0].message
    on = _submission(code, README__md="```bash\nTOKENIZER_KIND=other torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    assert [f.severity for f in _run_rule(TokenizerBpbBug, on)] == [Severity.ERROR]


# --- the real corpus (skipped without PGOLF_MIRROR) -------------------------------------------------


def _corpus_rows(*prs: str) -> list[dict]:
    rows = []
    for name in ("dev_labels.tsv", "merged.tsv"):
        path = Path(CORPUS) / name
        if path.exists():
            rows += [r for r in csv.DictReader(path.open(), delimiter="\t") if r["pr"] in prs]
    if not rows:
        pytest.skip("labelled corpus not available")
    return rows


def _codes(mirror: str, row: dict, select: str) -> list[tuple[str, str | None]]:
    rep = audit_git(mirror, row["ref_sha"], row["folder"], select={select})
    return [(f.severity.value, f.category) for f in rep.findings if f.rule.startswith(select)]


def test_corpus_lut_bugs_are_flagged(mirror):
    for row in _corpus_rows("1545", "1698"):
        assert ("error", "tokenizer_bpb_bug") in _codes(mirror, row, "PG107"), row["pr"]


def test_corpus_baseline_luts_stay_clean(mirror):
    # renamed tables (build_luts), module-constant aliases, wrapped sources with the ▁ assertion, CaseOps
    for row in _corpus_rows("1204", "1388", "1493", "1736"):
        assert not [s for s, _ in _codes(mirror, row, "PG107") if s == "error"], row["pr"]


def test_corpus_startup_download_is_not_an_eval_error(mirror):
    for row in _corpus_rows("1972"):
        sevs = [s for s, _ in _codes(mirror, row, "PG108")]
        assert "warning" in sevs and "error" not in sevs


def test_flags_derived_from_piece_text_are_not_byte_tables():
    code = """
        def word_starts(sp, n, starts):
            for i in range(n):
                piece = sp.id_to_piece(i)
                starts[i] = len(piece) > 0 and piece[0] == "\\u2581"
            return starts
        print(word_starts(None, 8, []))
    """
    assert bytelut.byte_tables(_program(_submission(code))) == []


def test_corpus_constant_denominator_and_overcount_are_byte_bugs(mirror):
    # a hardcoded bytes/token over a constant number of batches; a byte-fallback overcount seen in the logs only
    for row in _corpus_rows("875", "1184"):
        rep = audit_git(mirror, row["ref_sha"], row["folder"])
        assert rep.verdict == "flag" and "tokenizer_bpb_bug" in rep.categories, (row["pr"], rep.categories)
        assert "other" not in rep.categories, row["pr"]


def test_every_network_api_holds_a_prefilter_word():
    """The network analysis skips the API check in a source whose text holds none of `_API_WORDS`: every API
    it knows must hold one, or a call of it would be missed."""
    from audit.analysis.network import _API_WORDS, NETWORK_APIS

    for api in NETWORK_APIS:
        assert any(w in api.lower() for w in _API_WORDS), api
