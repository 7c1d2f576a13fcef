"""The whole PR queue against its floor, in one run (issue: the queue in under 4 minutes on 2 cores).

    PGOLF_MIRROR=/path/to/mirror.git python benchmarks/queue_speed.py [--sample N] [--jobs 2]

1. The floor, for the record folders the PRs add: read every blob from git (one `cat-file --batch`), `ast.parse`
   every Python source, one `split` of every log line. Wall and CPU seconds (this process and git). The folders are
   found PR by PR (`pr_folders`, an `ls-tree` per folder): that part is printed on its own.
2. The audit of the same PRs: `pgolf-audit --git-dir MIRROR --prs … --jobs N -o rows.jsonl` in a child process.
   Wall and CPU seconds (the audit and everything it started), the ratio to the floor, per-folder seconds
   (median / p99 / max, from the rows) and the peak resident memory of the largest worker.
3. The floor again. A shared machine drifts by a tenth or more within minutes; the ratio is to the mean of the
   floor measured just before and just after the audit (both are printed), so a slower or faster second half of
   the run does not tilt it.

`--sample N` takes N PRs spread evenly over the queue (the same N every time) for a quick run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.load.folder import decode_text  # noqa: E402
from audit.load.git import git, list_prs, pr_folders, read_blobs, resolve_commit  # noqa: E402

LOG_SUFFIXES = (".log", ".txt", ".out")


def sample(prs: list[int], n: int | None) -> list[int]:
    if not n or n >= len(prs):
        return prs
    step = len(prs) / n
    return [prs[int(i * step)] for i in range(n)]


def folder_blobs(mirror: str, pr: int) -> list[tuple[str, str]]:
    """(path, blob sha) of every file in the record folders the PR adds."""
    try:
        sha = resolve_commit(mirror, f"refs/pull/{pr}/head")
    except Exception:  # noqa: BLE001 - a PR ref that is gone: nothing to read
        return []
    out: list[tuple[str, str]] = []
    for folder in pr_folders(mirror, sha):
        listing = git(mirror, "ls-tree", "-r", "-z", revs=[sha], paths=[folder + "/"])
        for entry in listing.split(b"\0"):
            meta, _, path = entry.partition(b"\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == b"blob":
                out.append((path.decode(errors="replace"), parts[2].decode()))
    return out


def floor(mirror: str, prs: list[int]) -> dict:
    t0, c0, ch0 = time.perf_counter(), time.process_time(), _children_cpu()
    blobs: list[tuple[str, str]] = []
    for pr in prs:
        # keyed by PR and path: two PRs filing the same folder path are two folders to read (a key of the
        # path alone kept one of them, and the floor missed a sixth of the queue)
        blobs.extend((f"{pr}:{path}", obj) for path, obj in folder_blobs(mirror, pr))
    listing_cpu = time.process_time() - c0 + _children_cpu() - ch0
    data = read_blobs(mirror, blobs)
    n_py = n_lines = 0
    for path, raw in data.items():
        if path.endswith(".py"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ast.parse(decode_text(raw))
                except (SyntaxError, ValueError, RecursionError):
                    pass
            n_py += 1
        elif path.lower().endswith(LOG_SUFFIXES):
            for line in decode_text(raw).splitlines():
                line.split()
                n_lines += 1
    return {
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - c0 + _children_cpu() - ch0,
        "listing_cpu": listing_cpu,
        "blobs": len(data),
        "mb": sum(len(b) for b in data.values()) / 1e6,
        "py": n_py,
        "log_lines": n_lines,
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def audit(mirror: str, prs: list[int], jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.jsonl"
        listing = Path(tmp) / "prs.txt"
        listing.write_text(",".join(map(str, prs)))
        script = (
            "import resource, sys, time\n"
            "from audit.cli import main\n"
            "try:\n"
            "    main(sys.argv[1:])\n"
            "except SystemExit:\n"
            "    pass\n"
            "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print('MAXRSS_CHILD_KB', ru.ru_maxrss, file=sys.stderr)\n"
        )
        args = ["--git-dir", mirror, "--prs", listing.read_text(), "--jobs", str(jobs), "-o", str(out)]
        args += ["--format", "jsonl", "--exit-zero"]
        ch0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - ch0
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rss_kb = next((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_CHILD_KB")), 0)
    secs = sorted(r.get("seconds", 0.0) for r in rows if "seconds" in r)
    slowest = sorted((r for r in rows if "seconds" in r), key=lambda r: -r["seconds"])[:5]
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[r.get("verdict", "?")] = verdicts.get(r.get("verdict", "?"), 0) + 1
    return {
        "wall": wall,
        "cpu": cpu,
        "rows": len(rows),
        "median": statistics.median(secs) if secs else 0.0,
        "p99": secs[min(len(secs) - 1, int(0.99 * len(secs)))] if secs else 0.0,
        "max": secs[-1] if secs else 0.0,
        "worker_rss_mb": rss_kb / 1024,
        "verdicts": verdicts,
        "rc": proc.returncode,
        "stderr_tail": proc.stderr[-500:] if proc.returncode not in (0, 1) else "",
        "slowest": [(r.get("pr"), r.get("folder"), r["seconds"]) for r in slowest],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default=os.environ.get("PGOLF_MIRROR"))
    ap.add_argument("--sample", type=int, help="only N PRs, spread evenly over the queue")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    if not a.mirror:
        print("queue_speed: set PGOLF_MIRROR or pass --mirror", file=sys.stderr)
        return 2
    prs = sample(list_prs(a.mirror), a.sample)
    before = floor(a.mirror, prs)
    r = audit(a.mirror, prs, a.jobs)
    after = floor(a.mirror, prs)
    f = {**before, **{k: (before[k] + after[k]) / 2 for k in ("wall", "cpu", "listing_cpu")}}
    print(f"PRs: {len(prs)}; record folders audited: {r['rows']}; verdicts: {r['verdicts']}")
    print(
        f"floor: {f['blobs']} blobs ({f['mb']:.0f} MB), {f['py']} Python sources parsed, "
        f"{f['log_lines']:,} log lines split; finding the folders (git, PR by PR) is {f['listing_cpu']:.1f} CPU-s of it"
    )
    print(
        f"floor before / after the audit: {before['cpu']:.1f} / {after['cpu']:.1f} CPU-s, "
        f"{before['wall']:.1f} / {after['wall']:.1f} s wall (the table has their mean)"
    )
    print("| measure | floor | audit | audit / floor |")
    print("|---|---|---|---|")
    print(f"| wall s | {f['wall']:.1f} | {r['wall']:.1f} | {r['wall'] / max(f['wall'], 1e-9):.1f}x |")
    print(f"| CPU s | {f['cpu']:.1f} | {r['cpu']:.1f} | {r['cpu'] / max(f['cpu'], 1e-9):.2f}x |")
    print(
        f"per folder: median {r['median']:.2f} s, p99 {r['p99']:.2f} s, max {r['max']:.2f} s; "
        f"peak RSS of the largest worker {r['worker_rss_mb']:.0f} MB ({a.jobs} jobs)"
    )
    print("slowest folders: " + "; ".join(f"PR {p} {f} {s:.1f} s" for p, f, s in r["slowest"]))
    if r["stderr_tail"]:
        print(f"audit exit {r['rc']}: {r['stderr_tail']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
