"""Batch mode: audit a queue of PRs in parallel over the cores, one JSON line per PR, a summary table.

Each PR runs in a worker process under a wall-clock limit (`--pr-timeout`): a PR that takes longer gets a
`needs-human` row, its worker is killed (with the git processes it started) and replaced, and the queue goes
on. Workers never outlive the batch: they are killed on the way out, and one whose parent disappears exits.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .engine import PR_TIMEOUT_S, audit_submission, preload
from .errors import InputError
from .load.folder import Folder
from .load.git import (
    PrDiff,
    known_pr_diff,
    known_pr_head,
    load_git_folder,
    pr_diff,
    pr_folders,
    pr_head_ref,
    pr_heads,
    resolve_commit,
)
from .load.queue import scan_queue
from .memo import ReportMemo, folder_digest, reuse
from .report.console import print_summary
from .report.jsonout import jsonl

_TICK_S = 0.5  # how often the parent wakes up to refresh progress and check deadlines
_REFRESH_S = 0.2  # how often the batch's progress bar is drawn
_ORPHAN_POLL_S = 0.5  # how often a worker checks that its parent is still there
_JOIN_S = 2.0


def _row(pr: int, verdict: str, reason: str, **extra) -> dict:
    return {
        "schema_version": 1,
        "pr": pr,
        "verdict": verdict,
        "categories": [],
        "findings": [],
        "reason": reason,
        **extra,
    }


def audit_folder(sub: Folder, pr: int, filters: dict | None, memo: ReportMemo | None) -> dict:
    """One record folder's report as a JSON-ready dict; the memo's report when the same bytes were audited."""
    t0 = time.perf_counter()
    digest = folder_digest(sub, filters) if memo is not None else None
    hit = memo.get(digest) if digest is not None else None
    if hit is not None:
        return {**reuse(hit, sub, round(time.perf_counter() - t0, 4)), "pr": pr}
    rep = audit_submission(sub, **(filters or {}))
    rep.pr = pr
    row = rep.to_dict()
    if digest is not None:
        memo.put(digest, row)
    return row


def audit_pr(
    git_dir: str,
    pr: int,
    repo_url: str | None = None,
    filters: dict | None = None,
    memo: ReportMemo | None = None,
) -> list[dict]:
    """All record folders a PR adds, as JSON-ready dicts; errors become a row, never an exception. `filters` are
    `audit_submission`'s select/ignore code sets; `memo` holds the reports of folders audited before."""
    t0 = time.perf_counter()
    try:
        sha = resolve_commit(git_dir, pr_head_ref(pr), "--pr")
        diff = pr_diff(git_dir, sha)  # once per PR: its folders, the launchers outside them, the base README
        folders = pr_folders(git_dir, sha, diff=diff)
        if not folders:
            return [
                _row(
                    pr,
                    "no-record",
                    "the PR adds no record folder",
                    head_sha=sha,
                    seconds=round(time.perf_counter() - t0, 4),
                )
            ]
        rows = []
        for folder in folders:
            sub = load_git_folder(git_dir, sha, folder, diff=diff)
            rows.append(audit_folder(sub.at(sub.head_sha, repo_url), pr, filters, memo))
        return rows
    except InputError as e:
        return [_row(pr, "error", str(e))]
    except Exception as e:  # noqa: BLE001 - one bad PR must not stop a queue of 2,000
        return [_row(pr, "error", f"internal error: {type(e).__name__}: {e}")]


def timeout_row(pr: int, seconds: float) -> dict:
    return _row(pr, "needs-human", f"audit timed out after {seconds:g} s", seconds=round(seconds, 4))


def _lost_row(pr: int, exitcode: int | None) -> dict:
    how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    return _row(pr, "needs-human", f"audit worker died ({how}); not audited")


# --- worker processes ---------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the batch: ask the kernel (Linux) and also watch the parent id."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):  # not Linux: the watch below still applies
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(_ORPHAN_POLL_S)

    threading.Thread(target=watch, name="pgolf-orphan-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent went before the watch started
        os._exit(1)


def _worker(
    conn: Connection, git_dir: str, repo_url: str | None, filters: dict | None, memo_dir: str, parent_pid: int
) -> None:
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # its own group, so a kill also takes the git processes it started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(parent_pid)
    memo = ReportMemo(memo_dir)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        pr, head, diff = job
        if head:
            known_pr_head(git_dir, pr, head)
        if diff is not None:
            known_pr_diff(git_dir, diff)
        rows = audit_pr(git_dir, pr, repo_url, filters, memo)  # looked up at call time (tests replace it)
        try:
            conn.send(rows)
        except OSError:
            return


class _Worker:
    def __init__(self, ctx, git_dir: str, repo_url: str | None, filters: dict | None, memo_dir: str) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        args = (child, git_dir, repo_url, filters, memo_dir, os.getpid())
        self.proc = ctx.Process(target=_worker, args=args, daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        pid = self.proc.pid
        if pid is not None and self.proc.is_alive():
            try:
                if hasattr(os, "killpg"):
                    os.killpg(pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.join(_JOIN_S)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(_JOIN_S)
        self.kill()


def _mp_context():
    # fork: workers start in milliseconds and see the parent's modules as they are; spawn where fork is absent.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def iter_audits(
    git_dir: str,
    prs: list[int],
    *,
    jobs: int,
    repo_url: str | None = None,
    pr_timeout: float = PR_TIMEOUT_S,
    filters: dict | None = None,
) -> Iterator[list[dict] | None]:
    """Each PR's rows as it finishes (completion order), a timeout row for a PR past `pr_timeout`, and None
    now and then while waiting (so the caller can refresh a display)."""
    ctx = _mp_context()
    idle: list[_Worker] = []
    busy: dict[Connection, tuple[_Worker, int, float]] = {}
    memo = tempfile.TemporaryDirectory(prefix="pgolf-memo-")  # reports of folders audited in this batch
    heads = _heads(git_dir)
    # more PRs than workers: one scan of the queue weighs every PR, so the heaviest go first (the queue does not
    # end on one long PR while a core idles), and diffs every PR, so no worker starts git for it
    queued = {pr: heads[pr] for pr in prs if pr in heads}
    scan = scan_queue(git_dir, queued) if len(prs) > jobs else None
    queue = deque(heaviest_first(prs, scan.weights) if scan else prs)
    diffs: dict[str, PrDiff] = scan.diffs if scan else {}
    if ctx.get_start_method() == "fork":
        preload()  # once here rather than on each worker's first folder
    try:
        while queue or busy:
            while queue and (idle or len(busy) < jobs):
                w = idle.pop() if idle else _Worker(ctx, git_dir, repo_url, filters, memo.name)
                pr = queue.popleft()
                try:
                    w.conn.send((pr, heads.get(pr), diffs.get(heads.get(pr, ""))))
                except OSError:  # it died while idle: drop it, hand the PR to another
                    w.kill()
                    queue.appendleft(pr)
                    continue
                busy[w.conn] = (w, pr, time.monotonic() + pr_timeout)
            while idle and not queue:  # nothing left to hand out
                idle.pop().stop()
            next_deadline = min(d for _, _, d in busy.values())
            ready = wait(list(busy), timeout=max(0.0, min(_TICK_S, next_deadline - time.monotonic())))
            for conn in ready:
                w, pr, _ = busy.pop(conn)
                try:
                    rows = conn.recv()
                except (EOFError, OSError):  # the worker died mid-audit (killed, out of memory …)
                    w.proc.join(_JOIN_S)
                    yield [_lost_row(pr, w.proc.exitcode)]
                    w.kill()
                    continue
                idle.append(w)
                yield rows
            now = time.monotonic()
            for conn, (w, pr, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[conn]
                    w.kill()
                    yield [timeout_row(pr, pr_timeout)]
            if not ready:
                yield None
    finally:
        for w, _, _ in busy.values():
            w.kill()
        for w in idle:
            w.stop()
        memo.cleanup()


def _heads(git_dir: str) -> dict[int, str]:
    """Every PR head in one git call, handed to the workers with their PRs; none when it fails (each worker then
    resolves its PR's head itself, and reports the error in that PR's row)."""
    try:
        return pr_heads(git_dir)
    except (InputError, OSError):
        return {}


def heaviest_first(prs: list[int], weights: dict[int, int]) -> list[int]:
    """`prs` by weight (`pr_weights`), heaviest first, ties in PR order. A PR whose weight an earlier one has
    already (most often the same folder filed again) goes after all the others: handed out side by side, both
    copies would be audited, where one after the other the second is the first's report (the memo)."""
    if not weights:
        return list(prs)
    first: list[int] = []
    again: list[int] = []
    seen: set[int] = set()
    for pr in sorted(prs, key=lambda p: (-weights.get(p, 0), p)):
        w = weights.get(pr, 0)
        (again if w and w in seen else first).append(pr)
        seen.add(w)
    return first + again


def pr_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r.get("pr") if isinstance(r.get("pr"), int) else -1, r.get("folder") or ""))


def run_batch(
    git_dir: str,
    prs: list[int],
    *,
    output: str | None,
    jobs: int,
    repo_url: str | None = None,
    pr_timeout: float = PR_TIMEOUT_S,
    resume: bool = False,
    filters: dict | None = None,
    render: Callable[[list[dict]], str] = jsonl,
    stream: bool = True,
) -> list[dict]:
    """Audit `prs`; returns the rows (one per record folder) in PR order.

    With `output`, every finished row is appended to `output.partial` at once (a killed batch loses nothing) and at
    the end `render(rows)` replaces `output` in one step, so a rerun never truncates a finished output; `resume`
    keeps the rows of PRs already in `output` (or its `.partial`) and audits only the others. Without `output`,
    `stream` writes each row to stdout as a JSON line as it finishes."""
    rows: list[dict] = _finished_rows(output) if resume and output else []
    done = {r.get("pr") for r in rows}
    prs = [p for p in prs if p not in done]
    partial = Path(f"{output}.partial") if output else None
    out = partial.open("w", encoding="utf-8") if partial else (sys.stdout if stream else None)
    if partial:
        out.write(jsonl(rows))
    console = Console(stderr=True)
    if done:
        console.print(f"resuming: {len(done)} PR(s) already audited, {len(prs)} to go", markup=False)
    try:
        # auto_refresh off: no display thread in this process, so forking a replacement worker is safe
        with Progress(
            TextColumn("auditing PRs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
        ) as progress:
            task = progress.add_task("audit", total=len(prs))
            audits = iter_audits(
                git_dir, prs, jobs=max(1, jobs), repo_url=repo_url, pr_timeout=pr_timeout, filters=filters
            )
            shown = 0.0
            for pr_rows in audits:
                for row in pr_rows or ():
                    if out is not None:
                        out.write(json.dumps(row) + "\n")
                        out.flush()  # a killed batch keeps every finished line
                    rows.append(row)
                if pr_rows is not None:
                    progress.advance(task)
                if time.monotonic() - shown >= _REFRESH_S:  # drawn a few times a second, not once per PR
                    progress.refresh()
                    shown = time.monotonic()
            progress.refresh()
    finally:
        if partial:
            out.close()
    rows = pr_order(rows)
    if output:
        tmp = Path(f"{output}.tmp")
        tmp.write_text(render(rows), encoding="utf-8")
        os.replace(tmp, output)  # only a finished queue replaces the previous output
        partial.unlink(missing_ok=True)
    print_summary(rows, console)
    return rows


def _finished_rows(output: str) -> list[dict]:
    """Rows of an earlier run: what an interrupted run left in its `.partial`, else the finished output (JSON
    lines, or a `--format json` document)."""
    for path in (Path(f"{output}.partial"), Path(output)):
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        candidates: list = []
        try:
            doc = json.loads(text)
            candidates = doc.get("submissions", []) if isinstance(doc, dict) else []
        except ValueError:
            for line in text.splitlines():
                try:
                    candidates.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by the interruption
        rows = [
            r
            for r in candidates
            if isinstance(r, dict) and isinstance(r.get("pr"), int) and r.get("verdict") != "error"
        ]
        if rows:
            return rows
    return []
