"""Safe source resolution: wrappers, siblings, empty entry scripts and every malformed input."""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
import os
import re
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.engine import audit_submission
from audit.load.folder import Folder, load_folder
from audit.load.resolve import _PY_LITERAL, MAX_DECODED_BYTES, choose_entry, decode_once, resolve
from tests.support import make_submission

PROGRAM = "import os\nVALUE = int(os.environ.get('X', '3'))\ndef main():\n    return VALUE\nmain()\n"


def sub_of(files: dict[str, bytes], readme: str = "") -> Folder:
    if readme:
        files = {**files, "README.md": readme.encode()}
    return make_submission(files, name="t")


COMPRESS = {
    "lzma": (lzma.compress, "import lzma\n", "lzma.decompress({})"),
    "zlib": (zlib.compress, "import zlib\n", "zlib.decompress({})"),
    "gzip": (gzip.compress, "import gzip\n", "gzip.decompress({})"),
    "bz2": (bz2.compress, "import bz2\n", "bz2.decompress({})"),
}
ENCODE = {
    "base85": (base64.b85encode, "base64.b85decode({!r})"),
    "base64": (base64.b64encode, "base64.b64decode({!r})"),
    "raw": (lambda b: b, "{!r}"),
}


def wrap(code: str, comp: str, enc: str) -> str:
    c, imp, call = COMPRESS[comp]
    e, lit = ENCODE[enc]
    payload = e(c(code.encode()))
    literal = lit.format(payload if enc == "raw" else payload.decode())
    return f"{imp}import base64\nexec({call.format(literal)}.decode())\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(COMPRESS)), st.sampled_from(sorted(ENCODE))), min_size=1, max_size=4))
def test_random_wrapper_nestings_decode_to_the_program(layers):
    code = PROGRAM
    for comp, enc in layers:
        code = wrap(code, comp, enc)
    sub = resolve(sub_of({"train_gpt.py": code.encode()}))
    assert sub.sources[0].text == PROGRAM
    assert sub.sources[0].chain.count("exec") == len(layers)
    assert sub.code_bytes == len(code.encode())  # wrapper as shipped


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_loader(data):
    rep = audit_submission(sub_of({"train_gpt.py": data, "train.log": data, "submission.json": data}))
    assert rep.verdict in ("flag", "legal_ttt", "clean", "needs-human")


def test_aliases_and_names_bound_to_payloads():
    payload = base64.b85encode(lzma.compress(PROGRAM.encode())).decode()
    code = f"from lzma import decompress as D\nfrom base64 import b85decode as B\n_c = '{payload}'\nexec(D(B(_c)))\n"
    text, chain = decode_once(code, {})
    assert text == PROGRAM and chain == ["base85", "lzma", "exec"]


def test_exec_and_eval_are_found_under_any_name_the_builtins_give_them():
    payload = repr(PROGRAM)
    for call in (
        "exec",
        "import builtins\nbuiltins.exec",
        "import builtins as b\nb.exec",
        "from builtins import exec as run\nrun",
        "from builtins import eval as ev\nev",
    ):
        code = f"{call}({payload})\n"
        assert decode_once(code, {}) == (PROGRAM, ["exec"]), call
    assert decode_once(f"import x\nx.run({payload})\nrun({payload})\n", {}) is None  # not exec/eval


def test_exec_open_sibling_and_code_bytes():
    files = {"train_gpt.py": b"exec(open('train_gpt_decode.py').read())\n", "train_gpt_decode.py": PROGRAM.encode()}
    sub = resolve(sub_of(files))
    assert sub.sources[0].text == PROGRAM
    assert set(sub.code_files) == {"train_gpt.py", "train_gpt_decode.py"}
    assert sub.code_bytes == sum(len(v) for v in files.values())


def test_runpy_launch_of_sibling_is_analysed():
    files = {
        "train_gpt.py": b"import runpy\nrunpy.run_path('real_train.py', run_name='__main__')\n",
        "real_train.py": PROGRAM.encode(),
    }
    sub = resolve(sub_of(files))
    assert [s.path for s in sub.sources] == ["train_gpt.py", "real_train.py"]


def test_empty_train_gpt_uses_readme_entry():
    files = {"train_gpt.py": b"", "train_gpt_v5.py": PROGRAM.encode(), "train_other.py": (PROGRAM * 3).encode()}
    readme = "```bash\nSEED=1 torchrun --standalone --nproc_per_node=8 train_gpt_v5.py\n```\n"
    assert choose_entry(sub_of(files, readme)) == "train_gpt_v5.py"
    assert choose_entry(sub_of(files)) == "train_other.py"  # no README: the largest other train*.py


def test_decompression_bomb_is_a_finding():
    bomb = base64.b85encode(lzma.compress(b"#" * (MAX_DECODED_BYTES + 10))).decode()
    code = f"import lzma, base64\nexec(lzma.decompress(base64.b85decode('{bomb}')))\n"
    rep = audit_submission(sub_of({"train_gpt.py": code.encode()}))
    assert any(f.rule == "PG002/decompression-bomb" for f in rep.findings)


def test_bom_invalid_utf8_and_python2(tmp_path):
    (tmp_path / "train_gpt.py").write_bytes(b"\xef\xbb\xbf" + PROGRAM.encode() + b"# \xff\xfe bad bytes\n")
    rep = audit_submission(load_folder(tmp_path))
    assert not any(f.rule == "PG001/cannot-parse" for f in rep.findings)
    (tmp_path / "train_gpt.py").write_bytes(b"print 'hello'\n")
    rep = audit_submission(load_folder(tmp_path))
    bad = [f for f in rep.findings if f.rule == "PG001/cannot-parse"]
    assert bad and "Python 2" in bad[0].message
    assert rep.verdict == "needs-human"  # the rest of the audit still ran (package checks below)
    assert any(f.rule == "PG010/missing-file" for f in rep.findings)


def test_symlink_leaving_folder_not_followed(tmp_path):
    outside = tmp_path / "secret.py"
    outside.write_text("SECRET = 1\n")
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "train_gpt.py").write_text(PROGRAM)
    os.symlink(outside, rec / "evil.py")
    sub = load_folder(rec)
    assert "evil.py" not in sub.files
    assert any("symlink" in why for _, why in sub.skipped)


def test_binary_and_huge_files(tmp_path):
    (tmp_path / "train_gpt.py").write_text(PROGRAM)
    (tmp_path / "final_model.ptz").write_bytes(os.urandom(4096))
    with open(tmp_path / "huge.log", "wb") as f:
        f.seek(50_000_000)
        f.write(b"\n")
    sub = load_folder(tmp_path)
    assert sub.sizes["huge.log"] == 50_000_001 and "huge.log" not in sub.files
    rep = audit_submission(sub)
    assert "final_model.ptz" not in rep.code_files
    assert rep.verdict in ("clean", "needs-human")


def test_submission_json_checks(tmp_path):
    (tmp_path / "train_gpt.py").write_text(PROGRAM)
    (tmp_path / "README.md").write_text("# x\n")
    (tmp_path / "submission.json").write_text("{not json")
    rep = audit_submission(load_folder(tmp_path))
    assert any(f.rule == "PG011/submission-json" for f in rep.findings)
    (tmp_path / "submission.json").write_text(json.dumps({"name": "x", "val_bpb": 1.2}))
    rep = audit_submission(load_folder(tmp_path))
    assert not any(f.rule == "PG011/submission-json" for f in rep.findings)


def test_inline_suppression_reported_not_obeyed():
    code = (
        "def adapt(model, opt, val_tokens):\n"
        "    for epoch in range(3):\n"
        "        loss = model(val_tokens).mean()\n"
        "        loss.backward()  # noqa: PG101\n"
        "        opt.step()\n"
        "adapt(None, None, None)\n"
    )
    rep = audit_submission(sub_of({"train_gpt.py": code.encode()}))
    assert rep.verdict == "flag"
    assert any(f.rule == "PG020/author-suppression" and f.location.start_line == 4 for f in rep.findings)


def test_python312_fstrings_parse_with_line_numbers_kept():
    code = (
        "import os\n"
        'cfg = {"a": 1}\n'
        'print(f"value {cfg["a"]:.3f} and {cfg[\'a\']}")\n'
        "def adapt(model, opt, val_tokens):\n"
        "    for epoch in range(3):\n"
        "        loss = model(val_tokens).mean()\n"
        "        loss.backward()\n"
        "        opt.step()\n"
        "adapt(None, None, None)\n"
    )
    rep = audit_submission(sub_of({"train_gpt.py": code.encode()}))
    assert not any(f.rule == "PG001/cannot-parse" for f in rep.findings)
    err = [f for f in rep.findings if f.rule == "PG101/prequant-ttt"][0]
    assert err.location.start_line == 7


def test_multiline_payload_with_replace():
    payload = base64.b85encode(lzma.compress(PROGRAM.encode())).decode()
    lines = "\n".join(payload[i : i + 60] for i in range(0, len(payload), 60))
    code = f'import lzma,base64\n_b = b"""\n{lines}\n"""\nexec(lzma.decompress(base64.b85decode(_b.replace(b"\\n", b""))).decode("utf-8"))\n'
    sub = resolve(sub_of({"train_gpt.py": code.encode()}))
    assert sub.sources[0].text == PROGRAM


def test_raw_lzma_with_filters():
    filters = [{"id": lzma.FILTER_LZMA2}]
    payload = base64.b85encode(lzma.compress(PROGRAM.encode(), format=lzma.FORMAT_RAW, filters=filters)).decode()
    code = (
        f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{payload}"), format=L.FORMAT_RAW, '
        'filters=[{"id": L.FILTER_LZMA2}]))\n'
    )
    assert decode_once(code, {})[0] == PROGRAM


def test_data_preparation_scripts_in_the_readme_are_not_the_entry():
    readme = (
        "```bash\npython3 data/cached_challenge_fineweb.py --variant sp8192\n"
        "python prepare_caseops_data.py\nSEED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    )
    files = {
        "train_gpt.py": PROGRAM.encode(),
        "cached_challenge_fineweb.py": b"print(1)\n",
        "prepare_caseops_data.py": b"print(2)\n",
    }
    assert choose_entry(sub_of(files, readme)) == "train_gpt.py"
    readme_no_torchrun = "```bash\npython prepare_caseops_data.py\npython train_gpt.py\n```\n"
    assert choose_entry(sub_of(files, readme_no_torchrun)) == "train_gpt.py"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["'", '"', "a", ".py", "b/c", "-", " ", "(", "x.pyx", "run_path("]), max_size=14))
def test_quoted_py_literals_are_every_whole_quoted_name_ending_in_py(parts):
    text = "".join(parts)
    whole = re.compile(r"""(?<=["'])[\w.\-/]+(?=["'])""")  # every whole quoted name, then the .py ones
    expected = [m.group() for m in whole.finditer(text) if len(m.group()) > 3 and m.group().endswith(".py")]
    assert [m.group(1) for m in _PY_LITERAL.finditer(text)] == expected
