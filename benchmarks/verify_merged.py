"""pgolf-verify --logs-only against pgolf-audit on every merged record (issue 16's "Done when").

For each row of `merged.tsv` (`../shared/corpus` next to the repository, or `PGOLF_CORPUS`), reads the record
folder straight from the git mirror `PGOLF_MIRROR` (`audit.load.git.load_git_folder`, no checkout), runs the
audit and the verifier's --logs-only checks on it, and prints one row per folder:

    folder | audit size | verify size | agree | logs-only verdict (and why, when not verified)

Size verdicts: `pass`, `over` (a cap break), `doubt` (a warning: the files are over but the log's own total
fits without explaining them), `unknown` (verify: no size in any log; the audit then has no finding, which
counts as agreeing). Then a summary: how many agree, and the logs-only verdicts of the 2026-04 records of the
10-minute track (the frontier).

    PGOLF_MIRROR=/path/to/parameter-golf.git python benchmarks/verify_merged.py [--json out.json]
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from audit import codes
from audit.engine import audit_submission
from audit.findings import Severity
from audit.load.git import load_git_folder
from verify.checks import Status
from verify.plan import make_plan
from verify.report import build_report, logs_evidence

ROOT = Path(__file__).resolve().parents[1]
SIZE_CODES = {c.code for c in (codes.SIZE_OVER_CAP, codes.SHIPPED_SIZE_OVER_CAP, codes.STALE_SIZE_LINE)}
FRONTIER = ("records/track_10min_16mb/2026-04",)


def corpus_dir() -> Path:
    return Path(os.environ.get("PGOLF_CORPUS") or ROOT.parent / "shared" / "corpus")


def audit_size(findings) -> tuple[str, str]:
    """over (an error with the size category), doubt (a warning), pass; with the first such message."""
    size = [f for f in findings if f.rule.split("/")[0] in SIZE_CODES]
    errors = [f for f in size if f.severity is Severity.ERROR and f.category == "size_over_cap"]
    if errors:
        return "over", errors[0].message
    warns = [f for f in size if f.severity is Severity.WARNING]
    if warns:
        return "doubt", warns[0].message
    return "pass", ""


def verify_size(rep) -> tuple[str, str]:
    checks = [c for s in rep.seeds for c in s.checks if c.name == "size"]
    for status, word in ((Status.FAIL, "over"), (Status.WARN, "doubt"), (Status.INCONCLUSIVE, "unknown")):
        hit = [c for c in checks if c.status == status]
        if hit:
            return word, hit[0].message
    return ("pass", "") if checks else ("unknown", "no run in the logs")


def read_row(mirror: str, sha: str, ref: str, folder: str):
    """The folder at the row's ref_sha, else at `ref` (a copy of the mirror without that commit)."""
    if sha:
        try:
            return sha, load_git_folder(mirror, sha, folder)
        except Exception:  # noqa: BLE001 - not in this copy of the mirror
            pass
    return ref, load_git_folder(mirror, ref, folder)


@click.command()
@click.option("--mirror", default=lambda: os.environ.get("PGOLF_MIRROR"), help="git dir of openai/parameter-golf")
@click.option("--ref", default="main", show_default=True, help="Ref to read a row from when its ref_sha is absent.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the rows as JSON here too.")
def main(mirror: str | None, ref: str, json_out: str | None) -> None:
    if not mirror:
        raise SystemExit("set PGOLF_MIRROR (or --mirror) to the git directory of openai/parameter-golf")
    rows = list(csv.DictReader(open(corpus_dir() / "merged.tsv"), delimiter="\t"))
    out = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pgolf-verify-merged-") as tmp:
        for row in rows:
            folder = row["folder"]
            sha = row.get("ref_sha") or ""
            at, sub = read_row(mirror, sha, ref, folder)
            a = audit_submission(sub)
            a_size, a_msg = audit_size(a.findings)
            try:
                plan = make_plan(folder, str(Path(tmp) / "out"), sub=sub, need_entry=False)
                rep = build_report("logs-only", plan, logs_evidence(plan))
                v_size, v_msg = verify_size(rep)
                verdict, reason = rep.verdict, rep.reason
            except Exception as e:  # noqa: BLE001 - a row that cannot be planned (no entry script) is a result too
                v_size, v_msg, verdict, reason = "unknown", str(e), "error", f"{type(e).__name__}: {e}"
            agree = a_size == v_size or (a_size == "pass" and v_size == "unknown")
            out.append(
                dict(
                    folder=folder,
                    ref=at[:10],
                    label=row.get("label", ""),
                    audit_verdict=a.verdict,
                    audit_size=a_size,
                    verify_size=v_size,
                    agree=agree,
                    logs_only=verdict,
                    reason="" if verdict == "verified" else reason,
                    audit_size_message=a_msg,
                    verify_size_message=v_msg,
                )
            )
    elapsed = time.perf_counter() - t0
    w = max(len(r["folder"].split("/", 1)[-1]) for r in out)
    print(f"{'folder':<{w}}  {'audit size':<10}  {'verify size':<11}  agree  logs-only")
    for r in out:
        name = r["folder"].split("/", 1)[-1]
        why = f"  ({r['reason'][:140]})" if r["reason"] else ""
        print(
            f"{name:<{w}}  {r['audit_size']:<10}  {r['verify_size']:<11}  {'yes' if r['agree'] else 'NO ':<5}  "
            f"{r['logs_only']}{why}"
        )
    agree = sum(r["agree"] for r in out)
    print(f"\n{agree}/{len(out)} folders: audit and verify agree on the size cap ({elapsed:.0f} s)")
    for r in out:
        if not r["agree"]:
            print(
                f"  disagree: {r['folder']}: audit {r['audit_size_message'][:160]!r} / verify {r['verify_size_message'][:160]!r}"
            )
    frontier = [r for r in out if r["folder"].startswith(FRONTIER)]
    passed = [r for r in frontier if r["logs_only"] == "verified"]
    print(f"frontier (2026-04, 10-minute track): {len(passed)}/{len(frontier)} verified by --logs-only")
    for r in frontier:
        print(
            f"  {r['logs_only']:<12} {r['folder'].split('/')[-1]}" + (f" — {r['reason'][:160]}" if r["reason"] else "")
        )
    counts: dict[str, int] = {}
    for r in out:
        counts[r["logs_only"]] = counts.get(r["logs_only"], 0) + 1
    print("logs-only verdicts, all rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2) + "\n")
    sys.exit(0 if agree == len(out) else 1)


if __name__ == "__main__":
    main()
