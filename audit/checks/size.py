"""The artifact size rule, one function for pgolf-audit and pgolf-verify.

The artifact is the code bytes as shipped (a compressed wrapper counts as its own bytes) plus the model bytes
(the file a re-run wrote, else the size the log printed). When that is over the cap, a run's logged total is
evidence if it is consistent with the files: its parts add up (model + code = total), the model it counted is
the model there is, and the code it counted is a compressed form of the code the folder ships — the log names
the uncompressed size it compressed (within `CODE_DRIFT_MAX` of the shipped bytes) and the compressed size is
no smaller than `COMPRESSED_FLOOR` of what lzma makes of the shipped code. Bytes the shipped code has grown
since the run are added uncompressed. A logged total over the cap is the run's own artifact: over, whatever
the folder ships now.

Outcomes: `pass`; `over` (a cap break: the log's own total, the files with no consistent log, or a consistent
log once the code's growth is added); `doubt` (the files are over, the log's total fits but does not explain
them: a question for a reviewer); `unknown` (no size anywhere).
"""

from __future__ import annotations

import lzma
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ..challenge import ARTIFACT_CAP_BYTES
from ..logs import RunLog

CODE_DRIFT_MAX = 0.05  # the log measured this code when its uncompressed size is within 5 % of the shipped bytes
COMPRESSED_FLOOR = 0.5  # a counted compressed code under half of lzma's size is not a compression of this code
PASS, OVER, DOUBT, UNKNOWN = "pass", "over", "doubt", "unknown"


@dataclass(frozen=True)
class SizeVerdict:
    status: str  # pass | over | doubt | unknown
    total: int | None  # the bytes that count (None: unknown)
    basis: str  # "files" (shipped code + model) | "log" (the logged total) | ""
    message: str
    files_total: int | None = None  # shipped code + model
    logged_total: int | None = None
    approx: bool = False  # the logged total has MB precision
    stale: bool = False  # the logged total is over, but the code shipped now is smaller than the code it counted
    consistency: str = ""  # why the logged total does or does not explain the files

    @property
    def cap(self) -> int:
        return ARTIFACT_CAP_BYTES


@lru_cache(maxsize=32)
def _lzma_bytes(code: bytes) -> int:
    """The size `lzma.compress(code, preset=9 | PRESET_EXTREME)` gives. The preset's 64 MiB dictionary is cut
    to the smallest power of two that holds the input: every match stays in reach, and the compressor no longer
    sets up tables for 64 MiB (4-5x faster on a 60 KB script). The sizes are equal on all 453 scripts of a
    296-folder sample of the queue (tests/audit/test_size_lzma.py checks a spread of inputs)."""
    dict_size = min(_PRESET9_DICT, max(_MIN_DICT, 1 << max(0, len(code) - 1).bit_length()))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]
    return len(lzma.compress(code, filters=filters))


_PRESET9_DICT = 64 << 20
_MIN_DICT = 1 << 16


def shipped_code(files: dict[str, bytes], code_files: Iterable[str]) -> bytes:
    """The code files' bytes as shipped, concatenated (for the compression bound)."""
    return b"".join(files.get(p, b"") for p in code_files)


def logged_code_raw(run: RunLog) -> int | None:
    """The uncompressed code size a run printed next to its compressed one (its last such line)."""
    raw = [s.nbytes for s in run.sizes if s.kind == "code_raw"]
    return raw[-1] if raw else None


def log_explains(
    run: RunLog, code_bytes: int, *, code: bytes | None = None, model_on_disk: int | None = None
) -> tuple[int | None, str]:
    """(the logged total adjusted to the shipped code, "") when the logged total is consistent with the files,
    else (None, why not)."""
    total, model, counted = run.artifact_bytes, run.model_bytes, run.code_bytes
    if total is None:
        return None, "the log prints no total"
    if run.artifact_approx:
        return None, "the logged total has MB precision"
    if model is None or counted is None:
        return None, "the log does not say which model and code bytes its total counts"
    if model + counted != total:
        return None, f"its parts do not add up (model {model:,} + code {counted:,} ≠ total {total:,})"
    if model_on_disk is not None and model_on_disk != model:
        return None, f"it counted a {model:,}-byte model, the artifact on disk is {model_on_disk:,} bytes"
    if counted >= code_bytes:
        return total, f"it counted {counted:,} code bytes, at least the {code_bytes:,} shipped"
    raw = logged_code_raw(run)
    drift = 0
    how = f"the log counts {counted:,} bytes of compressed code"
    if raw is not None:
        drift = code_bytes - raw
        if abs(drift) > CODE_DRIFT_MAX * code_bytes:
            return None, (
                f"the log compressed {raw:,} bytes of code, the folder ships {code_bytes:,}: not the code it measured"
            )
        how += f" ({raw:,} uncompressed" + (f", {drift:+,} since the run)" if drift else ", the bytes shipped)")
    elif code is None:
        return None, f"{how} and names no uncompressed size to tie it to the {code_bytes:,} bytes shipped"
    if code is not None:
        lz = _lzma_bytes(code)
        if counted < COMPRESSED_FLOOR * lz:
            return None, (
                f"{how}, under half of the {lz:,} bytes lzma makes of the shipped code: not a compression of it"
            )
        how += f"; lzma makes {lz:,} bytes of the shipped code"
    return total + max(0, drift), how


def artifact_size(
    code_bytes: int,
    run: RunLog | None,
    *,
    code: bytes | None = None,
    model_on_disk: int | None = None,
) -> SizeVerdict:
    """The size verdict for one run: `code_bytes` as shipped (`code`, their bytes, bound the compressed code a
    log may count), the model from disk when a re-run wrote it, else from the log."""
    cap = ARTIFACT_CAP_BYTES
    logged = run.artifact_bytes if run is not None else None
    model = model_on_disk if model_on_disk is not None else (run.model_bytes if run is not None else None)
    files = code_bytes + model if model is not None and code_bytes else None
    model_what = (
        f"artifact on disk {model:,} bytes" if model_on_disk is not None else f"logged model {model or 0:,} bytes"
    )
    files_msg = f"shipped code {code_bytes:,} bytes + {model_what} = {files or 0:,} bytes"
    common = dict(files_total=files, logged_total=logged, approx=bool(run and run.artifact_approx))

    if logged is not None and logged > cap and model_on_disk is not None and files is not None and files > cap:
        return SizeVerdict(
            OVER, files, "files", f"over the cap: {files_msg} > {cap:,} (the log says {logged:,})", **common
        )
    if logged is not None and logged > cap:
        approx = " (MB precision)" if run.artifact_approx else ""
        stale = bool(
            code_bytes
            and run.model_bytes
            and run.code_bytes
            and code_bytes < run.code_bytes
            and code_bytes + run.model_bytes <= cap
        )
        msg = f"the log's artifact size is {logged:,} bytes{approx}, over the {cap:,}-byte cap"
        if stale:
            msg += (
                f"; the shipped code is smaller than the logged code ({code_bytes:,} < {run.code_bytes:,} bytes): "
                f"shipped code + logged model = {code_bytes + run.model_bytes:,} bytes would fit, but the scored run's "
                "own artifact was over the cap"
            )
        return SizeVerdict(OVER, logged, "log", msg, stale=stale, **common)
    if files is None:
        if logged is not None:
            return SizeVerdict(PASS, logged, "log", f"logged total {logged:,} bytes", **common)
        return SizeVerdict(UNKNOWN, None, "", "no artifact size in the log", **common)
    if files <= cap:
        note = f" (log says {logged:,} bytes)" if logged is not None and logged != files else ""
        return SizeVerdict(PASS, files, "files", files_msg + note, **common)
    if logged is None:
        return SizeVerdict(OVER, files, "files", f"over the cap: {files_msg} > {cap:,}, and no logged total", **common)
    adjusted, why = log_explains(run, code_bytes, code=code, model_on_disk=model_on_disk)
    if adjusted is None:
        return SizeVerdict(
            DOUBT,
            files,
            "files",
            f"{files_msg}, over the {cap:,}-byte cap; the log's own total {logged:,} bytes fits but does not explain "
            f"the files: {why}",
            consistency=why,
            **common,
        )
    if adjusted > cap:
        return SizeVerdict(
            OVER,
            adjusted,
            "log",
            f"over the cap: the logged total {logged:,} bytes with the shipped code's growth is {adjusted:,} bytes ({why})",
            consistency=why,
            **common,
        )
    grown = f" + {adjusted - logged:,} bytes of code added since = {adjusted:,} bytes" if adjusted != logged else ""
    return SizeVerdict(
        PASS,
        adjusted,
        "log",
        f"logged total {logged:,} bytes{grown}, consistent with the files: {why} (as raw code: {files_msg})",
        consistency=why,
        **common,
    )
