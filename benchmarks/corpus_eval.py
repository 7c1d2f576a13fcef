"""Agreement of pgolf-audit with the labelled corpus (dev_labels.tsv, merged.tsv).

Usage: PGOLF_MIRROR=/path/to/mirror.git python benchmarks/corpus_eval.py --labels A.tsv [B.tsv …] [--json out.jsonl]

Prints, per label and per category: rows, agreed, missed, wrongly flagged; then every disagreement with its
reason, and the wall time. Merged rows are labelled clean/legal_ttt; only cap/subset flags are allowed there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from audit.api import audit_git  # noqa: E402
from audit.findings import Severity  # noqa: E402
from audit.verdict import told_apart_as_legal_ttt  # noqa: E402

LOG_CAPS = {"size_over_cap", "time_over_cap", "tokenizer_bpb_bug"}  # the only flags a merged record may get


def audit_row(args):
    mirror, row = args
    t0 = time.perf_counter()
    try:
        rep = audit_git(mirror, row["ref_sha"], row["folder"])
        d = rep.to_dict()
        code_errors = sorted(
            {f.category for f in rep.findings if f.severity is Severity.ERROR and f.category and f.rule < "PG200"}
        )
        return {
            **row,
            "verdict": rep.verdict,
            "got": rep.categories,
            "code_error_cats": code_errors,
            "ttt_recognised": told_apart_as_legal_ttt(rep.verdict, rep.categories, rep.findings),
            "reason": rep.reason,
            "seconds": time.perf_counter() - t0,
            "doc": d,
        }
    except Exception as e:  # noqa: BLE001
        return {
            **row,
            "verdict": "error",
            "got": [],
            "code_error_cats": [],
            "reason": f"{type(e).__name__}: {e}",
            "seconds": time.perf_counter() - t0,
            "doc": None,
        }


def judge(r: dict) -> tuple[bool, str]:
    want = r["label"] or "clean"
    cats = [c for c in (r.get("categories") or "").split(",") if c]
    got = r["verdict"]
    if r.get("source") == "merged":
        if r["code_error_cats"]:
            return False, f"code rule flags a merged record: {r['code_error_cats']} — {r['reason']}"
        if got == "flag" and not set(r["got"]) <= LOG_CAPS:
            return False, f"merged record flagged {r['got']}"
        return True, ""
    if want == "flag":
        if got != "flag":
            return False, f"missed ({got}): {r['reason']}"
        if not set(cats) & set(r["got"]):
            return False, f"flagged with other categories {r['got']} (want {cats})"
        return True, ""
    if got == "flag":
        return False, f"wrongly flagged {r['got']}: {r['reason']}"
    if want == "legal_ttt" and got != "legal_ttt":
        return False, f"legal_ttt not recognised ({got})"
    if want == "clean" and got == "legal_ttt":
        return False, "clean row called legal_ttt"
    return True, ""


def labelled(r: dict) -> list[str]:
    return [c for c in (r.get("categories") or "").split(",") if c]


def print_confusion(rows: list[dict]) -> None:
    """Per category, labelled vs reported over the dev rows: a category is reported when the verdict is `flag`
    and the category is among the reported ones (a needs-human verdict reports nothing as broken)."""
    cats = sorted(
        {c for r in rows for c in labelled(r)} | {c for r in rows if r["verdict"] == "flag" for c in r["got"]}
    )
    print("\n| category | labelled & reported | labelled, not reported | reported, not labelled | neither |")
    print("|---|---|---|---|---|")
    for c in cats:
        cell = [0, 0, 0, 0]
        for r in rows:
            lab = c in labelled(r)
            rep = r["verdict"] == "flag" and c in r["got"]
            cell[(0 if rep else 1) if lab else (2 if rep else 3)] += 1
        print(f"| {c} | {cell[0]} | {cell[1]} | {cell[2]} | {cell[3]} |")
    misses = [
        f"{r.get('pr')}: labelled {labelled(r)}, reported {r['got'] if r['verdict'] == 'flag' else r['verdict']}"
        for r in rows
        if r["label"] == "flag" and not (r["verdict"] == "flag" and set(labelled(r)) <= set(r["got"]))
    ]
    if misses:
        print("\nRows missing a labelled category:")
        for m in misses:
            print(f"- PR {m}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--mirror", default=os.environ.get("PGOLF_MIRROR"))
    ap.add_argument("--json", help="write one JSON line per row here")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prs", help="only these PR numbers (comma-separated), for a quick look at a few rows")
    a = ap.parse_args()
    if not a.mirror:
        print("corpus_eval: set PGOLF_MIRROR or pass --mirror", file=sys.stderr)
        return 2
    rows = []
    for path in a.labels:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                row.setdefault("source", "dev")
                if "merged" in os.path.basename(path):
                    row["source"] = "merged"
                rows.append(row)
    if a.prs:
        wanted = {p.strip() for p in a.prs.split(",") if p.strip()}
        rows = [r for r in rows if r.get("pr") in wanted]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(audit_row, [(a.mirror, r) for r in rows]))
    wall = time.perf_counter() - t0
    table: dict[str, list[int]] = {}
    disagreements = []
    for r in results:
        ok, why = judge(r)
        r["agree"] = ok
        key = "merged" if r["source"] == "merged" else f"dev:{r['label'] or 'clean'}"
        keys = [key] + [
            f"category:{c}" for c in (r.get("categories") or "").split(",") if c and r["source"] != "merged"
        ]
        for k in keys:
            t = table.setdefault(k, [0, 0, 0, 0])
            t[0] += 1
            t[1] += ok
            if not ok:
                if "missed" in why or "other categories" in why or "not recognised" in why:
                    t[2] += 1
                else:
                    t[3] += 1
        if not ok:
            disagreements.append((r.get("pr") or "-", r["folder"], r["label"] or "clean", r.get("categories", ""), why))
    print("| group | rows | agreed | missed | wrongly flagged |\n|---|---|---|---|---|")
    for k in sorted(table):
        n, ok, miss, wrong = table[k]
        print(f"| {k} | {n} | {ok} | {miss} | {wrong} |")
    flag_rows = [r for r in results if r["source"] != "merged" and r["label"] == "flag"]
    good_rows = [r for r in results if r["source"] != "merged" and r["label"] in ("clean", "legal_ttt")]
    ttt_rows = [r for r in results if r["source"] != "merged" and r["label"] == "legal_ttt"]
    merged = [r for r in results if r["source"] == "merged"]
    pct = lambda xs: 100.0 * sum(x["agree"] for x in xs) / max(1, len(xs))  # noqa: E731
    print()
    print(f"flagged PRs flagged with a matching category: {pct(flag_rows):.1f}% of {len(flag_rows)}")
    print(
        f"clean/legal_ttt PRs not flagged: {100.0 * sum(r['verdict'] != 'flag' for r in good_rows) / max(1, len(good_rows)):.1f}% of {len(good_rows)}"
    )
    every = [r for r in flag_rows if r["verdict"] == "flag" and set(labelled(r)) <= set(r["got"])]
    print(
        f"flagged PRs flagged with every labelled category: {100.0 * len(every) / max(1, len(flag_rows)):.1f}% of {len(flag_rows)}"
    )
    print(f"legal_ttt told apart (verdict legal_ttt): {pct(ttt_rows):.1f}% of {len(ttt_rows)}")
    apart = sum(bool(r.get("ttt_recognised")) for r in ttt_rows)
    print(
        f"legal_ttt told apart (score-first TTT recognised; cap-only flags counted): "
        f"{100.0 * apart / max(1, len(ttt_rows)):.1f}% of {len(ttt_rows)}"
    )
    print(f"merged records with a code-rule flag: {sum(bool(r['code_error_cats']) for r in merged)} of {len(merged)}")
    secs = sorted(r["seconds"] for r in results)
    print(
        f"wall time {wall:.1f} s for {len(results)} folders ({a.jobs} workers); median per folder {secs[len(secs) // 2]:.3f} s"
    )
    print_confusion([r for r in results if r["source"] != "merged"])
    print("\nDisagreements:")
    for d in disagreements:
        print(f"- PR {d[0]} `{d[1]}` ({d[2]} {d[3]}): {d[4]}")
    if a.json:
        with open(a.json, "w") as f:
            for r in results:
                f.write(
                    json.dumps(
                        {k: v for k, v in r.items() if k != "doc"} | {"findings": (r["doc"] or {}).get("findings", [])}
                    )
                    + "\n"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
