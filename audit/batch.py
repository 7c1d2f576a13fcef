"""Batch mode: audit a queue of PRs in parallel over the cores, one JSON line per PR, a summary table."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from .engine import audit_submission
from .errors import InputError
from .load.git import git, load_git_folder, pr_folders
from .report.console import print_summary


def audit_pr(git_dir: str, pr: int, repo_url: str | None = None) -> list[dict]:
    """All record folders a PR adds, as JSON-ready dicts; errors become a row, never an exception."""
    t0 = time.perf_counter()
    try:
        sha = git(git_dir, "rev-parse", "--verify", f"refs/pull/{pr}/head^{{commit}}").decode().strip()
        folders = pr_folders(git_dir, sha)
        if not folders:
            return [{"schema_version": 1, "pr": pr, "head_sha": sha, "verdict": "no-record", "categories": [], "findings": [],
                     "reason": "the PR adds no record folder", "seconds": round(time.perf_counter() - t0, 4)}]
        rows = []
        for folder in folders:
            sub = load_git_folder(git_dir, sha, folder)
            sub = sub.at(sub.head_sha, repo_url)
            rep = audit_submission(sub)
            rep.pr = pr
            rows.append(rep.to_dict())
        return rows
    except InputError as e:
        return [{"schema_version": 1, "pr": pr, "verdict": "error", "categories": [], "findings": [], "reason": str(e)}]
    except Exception as e:  # noqa: BLE001 - one bad PR must not stop a queue of 2,000
        return [{"schema_version": 1, "pr": pr, "verdict": "error", "categories": [], "findings": [],
                 "reason": f"internal error: {type(e).__name__}: {e}"}]


def run_batch(git_dir: str, prs: list[int], *, output: str | None, jobs: int, repo_url: str | None = None) -> list[dict]:
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    rows: list[dict] = []
    console = Console(stderr=True)
    try:
        with Progress(
            TextColumn("auditing PRs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress, ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            task = progress.add_task("audit", total=len(prs))
            futures = {pool.submit(audit_pr, git_dir, pr, repo_url): pr for pr in prs}
            for fut in as_completed(futures):
                for row in fut.result():
                    out.write(json.dumps(row) + "\n")
                    out.flush()  # a killed batch keeps every finished line
                    rows.append(row)
                progress.advance(task)
    finally:
        if output:
            out.close()
    print_summary(rows, console)
    return rows
