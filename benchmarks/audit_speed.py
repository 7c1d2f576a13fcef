"""Speed of pgolf-audit on real record folders and on the whole PR queue.

    PGOLF_MIRROR=/path/to/mirror.git python benchmarks/audit_speed.py [--all-prs] [--jobs N]

1. Median / p90 / max audit time per merged record folder (merged.tsv), one process, warm imports.
2. With --all-prs: wall time of `pgolf-audit --git-dir MIRROR --all-prs` (the maintainer's queue), the number of PRs
   and verdict counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.api import audit_git  # noqa: E402


def per_folder(mirror: str, labels: Path) -> list[float]:
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    times = []
    for row in rows:
        t0 = time.perf_counter()
        audit_git(mirror, row["ref_sha"], row["folder"])
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default=os.environ.get("PGOLF_MIRROR"))
    ap.add_argument("--labels", default=str(ROOT.parent / "shared" / "corpus" / "merged.tsv"))
    ap.add_argument("--all-prs", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    if not a.mirror:
        print("audit_speed: set PGOLF_MIRROR or pass --mirror", file=sys.stderr)
        return 2
    times = per_folder(a.mirror, Path(a.labels))
    times.sort()
    print(
        f"per record folder ({len(times)} folders): median {statistics.median(times):.3f} s, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.3f} s, max {times[-1]:.3f} s, total {sum(times):.1f} s"
    )
    if a.all_prs:
        out = Path(tempfile.mkdtemp()) / "queue.jsonl"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "audit.cli",
                "--git-dir",
                a.mirror,
                "--all-prs",
                "--jobs",
                str(a.jobs),
                "--output",
                str(out),
                "--exit-zero",
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        prs = {r.get("pr") for r in rows}
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        print(
            f"--all-prs: {len(prs)} PRs, {len(rows)} rows in {wall:.0f} s ({wall / 60:.1f} min) with {a.jobs} workers"
        )
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        print(f"JSON lines: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
