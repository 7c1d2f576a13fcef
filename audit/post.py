"""Post the review comment on the PR, or update the one posted before (a sticky comment), with the `gh` CLI.

The comment is found again by its marker, which never changes with the head commit, so a re-run after a push
edits the same comment instead of adding another. `gh` brings its own authentication (GH_TOKEN in Actions).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from .errors import InputError

MARKER = "<!-- pgolf-audit:review -->"
_SLUG = re.compile(r"^(?:https?://github\.com/)?([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")
_ACTIONS_PR_REF = re.compile(r"^refs/pull/(\d+)/")
GH_TIMEOUT_S = 60


def repo_slug(repo_url: str | None) -> str:
    """owner/name from --repo-url, else from GITHUB_REPOSITORY (set in GitHub Actions)."""
    text = repo_url or os.environ.get("GITHUB_REPOSITORY", "")
    m = _SLUG.match(text.strip())
    if not m:
        raise InputError("--post needs the repository: --repo-url https://github.com/OWNER/NAME (or GITHUB_REPOSITORY)")
    return m.group(1)


def pr_number(pr: int | None) -> int:
    """--pr, else the PR of the Actions run (GITHUB_REF=refs/pull/N/merge)."""
    if pr is not None:
        return pr
    m = _ACTIONS_PR_REF.match(os.environ.get("GITHUB_REF", ""))
    if not m:
        raise InputError("--post needs the PR number: --pr N (or run it in a pull_request workflow)")
    return int(m.group(1))


def _gh(args: list[str], stdin: str | None = None) -> str:
    gh = shutil.which("gh")
    if gh is None:
        raise InputError("--post needs the GitHub CLI `gh` on PATH (https://cli.github.com)")
    try:
        proc = subprocess.run(
            [gh, *args], input=stdin, capture_output=True, text=True, timeout=GH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"gh {args[0]} did not answer within {GH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split())[:300] or f"exit code {proc.returncode}"
        raise InputError(f"gh {' '.join(args[:2])} failed: {why}")
    return proc.stdout


def _existing_comment(slug: str, pr: int) -> int | None:
    """The id of our earlier comment on the PR (the last one carrying the marker), if any."""
    out = _gh(["api", "--paginate", f"repos/{slug}/issues/{pr}/comments", "--jq", ".[] | {id, body}"])
    found = None
    for line in out.splitlines():
        try:
            c = json.loads(line)
        except ValueError:
            continue
        if isinstance(c, dict) and MARKER in str(c.get("body", "")):
            found = int(c["id"])
    return found


def post_comment(body: str, pr: int, slug: str) -> str:
    """Create or update the sticky comment; returns what was done, for the user."""
    if MARKER not in body:
        body = MARKER + "\n" + body
    payload = json.dumps({"body": body})
    cid = _existing_comment(slug, pr)
    if cid is None:
        _gh(["api", "-X", "POST", f"repos/{slug}/issues/{pr}/comments", "--input", "-"], stdin=payload)
        return f"posted the review on {slug}#{pr}"
    _gh(["api", "-X", "PATCH", f"repos/{slug}/issues/comments/{cid}", "--input", "-"], stdin=payload)
    return f"updated the review on {slug}#{pr} (comment {cid})"
