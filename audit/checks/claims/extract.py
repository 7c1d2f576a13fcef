"""Claims as written: submission.json (every layout seen on `main`) and the README headline and tables."""

from __future__ import annotations

import json
import math
import re

from ...load.folder import Folder
from .model import ClaimedValue, Claims

SCORE_KEYS = ("val_bpb", "mean_val_bpb", "val_bpb_mean", "mean_bpb", "score")
TOTAL_BYTE_KEYS = ("bytes_total", "artifact_bytes", "artifact_size_bytes", "artifact_bytes_max", "total_bytes")
CODE_BYTE_KEYS = ("bytes_code", "code_bytes")
SEED_BPB_KEYS = ("val_bpb", "bpb", "post_ttt_val_bpb", "final_val_bpb", "score", "sliding_bpb", "ttt_bpb")
SEED_BYTE_KEYS = ("artifact_bytes", "bytes_total", "total_bytes", "artifact_size_bytes")

_NUM_IN_CELL = re.compile(r"(?<![\d.])(\d\.\d{3,})(?![\d.])")
_README_HEADLINE = re.compile(r"(?i)\bval_bpb\b[^0-9\n]{0,12}(\d\.\d{3,})")
SEED_IN_NAME = re.compile(r"(?i)seed[_-]?(\d+)|(?:^|[_-])s(\d{1,5})(?=[._-])")
_NOT_SCORE_HEADER = re.compile(r"(?i)delta|Δ|std|gap|diff|gain|base|before|vs\b|improv|change|rank")


def _line_of(text: str, needle: str, start: int = 0) -> tuple[int, str]:
    pos = text.find(needle, start)
    if pos < 0:
        return 0, ""
    line = text.count("\n", 0, pos) + 1
    end = text.find("\n", pos)
    begin = text.rfind("\n", 0, pos) + 1
    return line, text[begin : end if end >= 0 else len(text)].strip()


def _json_claim(path: str, text: str, key: str, value, near: str = "") -> ClaimedValue | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    if not math.isfinite(v):
        return None
    raw = json.dumps(value) if not isinstance(value, str) else value
    start = text.find(f'"{near}"') if near else 0
    line, snippet = _line_of(text, f'"{key}"', max(start, 0))
    return ClaimedValue(v, raw.strip('"'), path, line, snippet, key)


WRITES_VAL_SHARDS = re.compile(r"""["'][^"'\n]*fineweb_val_[^"'\n]*\.bin""")
VAL_DOC_COUNT = re.compile(r"val[-_]docs\W[^\n]{0,40}?\b(\d[\d_]{2,})\b", re.I)
VAL_DOCS = 50_000  # the validation split: the first 50,000 documents
_NOT_SCORE_KEY = re.compile(r"byte|size|time|loss|step|ms\b|sec", re.I)


def _seed_dicts(obj, depth: int = 0):
    """Yield {seed: result} dicts wherever a layout keeps them (`seed_results`, `seeds`, nested re-runs)."""
    if depth > 3 or not isinstance(obj, dict):
        return
    for k, v in obj.items():
        low = k.lower()
        if (
            isinstance(v, dict)
            and v
            and all(str(s).strip().isdigit() for s in v)
            and ("seed" in low or low.startswith("runs"))
        ):
            yield k, v
        elif isinstance(v, dict):
            yield from _seed_dicts(v, depth + 1)


def claims_from_json(path: str, text: str, data: dict) -> Claims:
    c = Claims()
    for k in SCORE_KEYS:
        if k in data:
            c.headline_bpb = _json_claim(path, text, k, data[k])
            if c.headline_bpb:
                break
    for keys, attr in ((TOTAL_BYTE_KEYS, "total_bytes"), (CODE_BYTE_KEYS, "code_bytes")):
        for k in keys:
            if k in data:
                setattr(c, attr, _json_claim(path, text, k, data[k]))
                if getattr(c, attr):
                    break
    seeds = data.get("seeds")
    if isinstance(seeds, list):
        c.seeds = [int(s) for s in seeds if isinstance(s, (int, str)) and str(s).isdigit()]
        scores = data.get("seed_scores")
        if isinstance(scores, list) and len(scores) == len(c.seeds):
            for s, v in zip(c.seeds, scores):
                cv = _json_claim(path, text, "seed_scores", v)
                if cv:
                    line, snip = _line_of(text, json.dumps(v))
                    c.per_seed_bpb.setdefault(s, []).append(
                        ClaimedValue(cv.value, cv.text, path, line, snip, "seed_scores")
                    )
    elif isinstance(data.get("seed"), (int, str)) and str(data["seed"]).isdigit():
        c.seeds = [int(data["seed"])]
        if c.headline_bpb:
            c.per_seed_bpb.setdefault(c.seeds[0], []).append(c.headline_bpb)
    for key, table in _seed_dicts(data):
        # `val_bpb_per_seed: {"42": 1.0152}` holds scores; `artifact_bytes_per_seed` / `train_time_per_seed` do not
        scores = not _NOT_SCORE_KEY.search(key)
        for s_raw, res in table.items():
            s = int(str(s_raw).strip())
            if s not in c.seeds:
                c.seeds.append(s)
            if isinstance(res, (int, float)) and not isinstance(res, bool):
                cv = _json_claim(path, text, str(s_raw), res) if scores and 0.0 < res < 10.0 else None
                if cv:
                    c.per_seed_bpb.setdefault(s, []).append(cv)
            elif isinstance(res, dict):
                for k in SEED_BPB_KEYS:
                    if k in res:
                        cv = _json_claim(path, text, k, res[k], near=str(s_raw))
                        if cv and 0.0 < cv.value < 10.0:
                            c.per_seed_bpb.setdefault(s, []).append(cv)
                            break
                for k in SEED_BYTE_KEYS:
                    if k in res:
                        cv = _json_claim(path, text, k, res[k], near=str(s_raw))
                        if cv:
                            c.per_seed_bytes[s] = cv
                            break
    return c


def _table_rows(text: str):
    """Markdown tables as (header cells, [(line number, cells)])."""
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1]):
            header = [c.strip().strip("*").strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, [c.strip() for c in lines[j].strip().strip("|").split("|")]))
                j += 1
            yield header, rows
            i = j
        else:
            i += 1


def claims_from_readme(path: str, text: str, c: Claims) -> None:
    m = _README_HEADLINE.search(text)
    if m:
        line, snippet = _line_of(text, m.group(0))
        c.readme_bpb = ClaimedValue(float(m.group(1)), m.group(1), path, line, snippet, "README headline")
    for header, rows in _table_rows(text):
        seed_col = next((k for k, h in enumerate(header) if re.search(r"(?i)\bseed\b", h)), None)
        if seed_col is None:
            continue
        bpb_cols = [k for k, h in enumerate(header) if re.search(r"(?i)bpb", h) and not _NOT_SCORE_HEADER.search(h)]
        for lineno, cells in rows:
            if seed_col >= len(cells):
                continue
            sm = re.fullmatch(r"\**\s*(\d+)\s*\**", cells[seed_col])
            if not sm:
                continue
            seed = int(sm.group(1))
            if seed not in c.seeds:
                c.seeds.append(seed)
            for k in bpb_cols:
                if k < len(cells):
                    nm = _NUM_IN_CELL.search(cells[k])
                    approx = "~" in cells[k] or "≈" in cells[k]
                    known = {v.text for v in c.per_seed_bpb.get(seed, [])}
                    if nm and not approx and nm.group(1) not in known:
                        snippet = "| " + " | ".join(cells) + " |"
                        c.per_seed_bpb.setdefault(seed, []).append(
                            ClaimedValue(float(nm.group(1)), nm.group(1), path, lineno, snippet, f"README {header[k]}")
                        )


def extract_claims(sub: Folder) -> Claims:
    jp = sub.submission_json_path
    data = sub.submission_json
    c = claims_from_json(jp, sub.text(jp), data) if jp and data is not None else Claims()
    rp = sub.find("README.md")
    if rp:
        json_seeds = list(c.seeds)
        claims_from_readme(rp, sub.text(rp), c)
        if json_seeds:
            # submission.json names the record's seeds; other README seed rows (ablations, earlier runs) are
            # still checked against a log of that seed, but are not claimed seeds that must have one
            c.seeds = json_seeds
    return c
