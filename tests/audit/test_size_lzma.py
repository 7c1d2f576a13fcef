"""The compression bound of the size check: a dictionary cut to the input gives the preset's own size."""

from __future__ import annotations

import lzma
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checks.size import _lzma_bytes

ROOT = Path(__file__).resolve().parents[2]


def _preset9(code: bytes) -> int:
    return len(lzma.compress(code, preset=9 | lzma.PRESET_EXTREME))


def test_the_size_of_real_scripts_is_the_preset_size():
    scripts = sorted(ROOT.glob("examples/**/*.py")) + sorted(ROOT.glob("reference_trainer/*.py"))
    assert scripts
    for path in scripts:
        code = path.read_bytes()
        assert _lzma_bytes(code) == _preset9(code), path
    joined = b"".join(p.read_bytes() for p in scripts)  # the shipped code is the files concatenated
    assert _lzma_bytes(joined) == _preset9(joined)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000) | st.text(alphabet="abc def\n()=:_0123456789", max_size=70000).map(str.encode))
def test_the_size_of_any_input_is_the_preset_size(code):
    assert _lzma_bytes(code) == _preset9(code)
