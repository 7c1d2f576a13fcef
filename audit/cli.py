"""pgolf-audit: static review of a record folder, a branch checkout, a git ref or a whole PR queue."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from . import __version__
from .clirun import run_click
from .codes import select_codes
from .engine import PR_TIMEOUT_S, AuditReport, audit_submission
from .errors import InputError
from .findings import Severity
from .load.folder import Folder, load_folder, not_a_record_folder
from .load.git import (
    check_rev,
    checkout_folders,
    list_prs,
    load_git_folder,
    looks_like_repo_root,
    pr_diff,
    pr_folders,
    resolve_commit,
)
from .post import post_comment, pr_number, repo_slug
from .report.console import print_report
from .report.github import annotations
from .report.html import triage_html
from .report.jsonout import jsonl
from .report.markdown import review_comment
from .report.sarif import sarif_document
from .rules import CODES

FAIL_ON = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO, "never": None}


def _parse_prs(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--prs expects comma-separated PR numbers, got {text!r}") from None


def _codes(text: str | None) -> set[str] | None:
    return {c.strip() for c in text.split(",") if c.strip()} if text else None


def _reports_for(
    path, git_dir, ref, pr, folder, base, head_sha, repo_url, filters, checkout=False
) -> list[tuple[Folder, AuditReport]]:
    """Each record folder to audit, with its report."""
    if base is not None:
        check_rev(base, "--base")
        if not (git_dir or checkout):
            raise InputError("--base only applies with --checkout or --git-dir")
    if git_dir:
        if checkout:
            raise InputError("--checkout and --git-dir are exclusive: give one source")
        if not Path(git_dir).exists():
            raise InputError(f"--git-dir {git_dir}: no such directory")
        if pr is not None:
            ref = f"refs/pull/{pr}/head"
        if not ref:
            raise InputError("--git-dir needs --ref REF, --pr N, --prs LIST or --all-prs")
        sha = resolve_commit(git_dir, ref, "--ref" if pr is None else "--pr")
        try:
            diff = pr_diff(git_dir, sha, base)
        except InputError:
            if base or not folder:
                raise
            diff = None  # a ref with no main to compare with: its folder still reads
        folders = [folder.strip("/")] if folder else pr_folders(git_dir, sha, base, diff)
        if not folders:
            raise InputError(f"{ref}: adds or changes no record folder under records/")
        reports = []
        for f in folders:
            sub = load_git_folder(git_dir, sha, f, base, diff)
            sub = sub.at(sub.head_sha, repo_url)
            rep = audit_submission(sub, **filters)
            rep.pr = pr
            reports.append((sub, rep))
        return reports
    if path is None:
        raise InputError("give a record folder, a repository checkout, or --git-dir with --ref/--pr/--all-prs")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or directory")
    if not checkout and looks_like_repo_root(p):
        raise InputError(f"{path} is a checkout of the challenge repository, not a record folder: pass --checkout")
    if checkout:  # only when asked: a record folder may ship its own .git/ and must not steer git
        head, folders = checkout_folders(p, base)
        if not folders:
            raise InputError(
                f"{path}: the checked-out branch adds or changes no record folder (base {base or 'merge-base with main'})"
            )
        reports = []
        for f in folders:
            sub = replace(load_folder(p / f, name=f), base_readme=root_readme(p)).at(head_sha or head, repo_url)
            reports.append((sub, audit_submission(sub, **filters)))
        return reports
    sub = replace(load_folder(p, name=repo_relative_name(p)), base_readme=root_readme(work_tree_root(p)))
    sub = sub.at(head_sha, repo_url)
    not_one = not_a_record_folder(sub)
    if not_one:
        raise InputError(f"{path}: {not_one}")
    return [(sub, audit_submission(sub, **filters))]


def work_tree_root(path: Path) -> Path | None:
    """The root of the git work tree that holds the folder; the folder's own `.git` is never consulted (the
    search starts at its parent)."""
    return next((root for root in path.resolve().parents if (root / ".git").exists()), None)


def repo_relative_name(path: Path) -> str:
    """The folder's path from the root of its work tree, whatever the working directory (links and SARIF URIs are
    relative to that root); the path as given, normalised, outside any work tree."""
    root = work_tree_root(path)
    return path.resolve().relative_to(root).as_posix() if root else Path(os.path.normpath(path)).as_posix()


MAX_README_BYTES = 1_000_000


def root_readme(root: Path | None) -> str:
    """The challenge README of the work tree (its leaderboard), bounded; empty when there is none."""
    if root is None:
        return ""
    readme = root / "README.md"
    try:
        if readme.is_file() and not readme.is_symlink() and readme.stat().st_size <= MAX_README_BYTES:
            return readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    return ""


def render_docs(docs: list[dict], fmt: str, verbose: bool, collection: bool = False) -> str:
    """The machine formats, from the JSON documents (reports or batch rows)."""
    if fmt == "json":  # always one document: the report, or {"submissions": [...]} for several
        doc = docs[0] if len(docs) == 1 and not collection else {"schema_version": 1, "submissions": docs}
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(sarif_document(docs, include_info=verbose), indent=2) + "\n"
    if fmt == "github":  # workflow commands: annotations on the PR's files
        return annotations(docs, include_info=verbose)
    return jsonl(docs)  # jsonl, and text written to a file


def _emit(reports: list[AuditReport], fmt: str, output: str | None, verbose: bool) -> None:
    text: str | None
    if fmt == "text":
        for rep in reports:
            print_report(rep, verbose=verbose)
        text = jsonl([r.to_dict() for r in reports]) if output else None
    elif fmt == "markdown":
        text = review_comment(reports)  # one comment: a section per folder
    else:
        text = render_docs([r.to_dict() for r in reports], fmt, verbose)
        for rep in reports:  # the verdict line still goes to the human channel
            click.echo(f"{rep.verdict}\t{rep.folder}", err=True)
    if text is None:
        return
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _exit_code(docs: list[dict], fail_on: str, exit_zero: bool) -> int:
    level = FAIL_ON[fail_on]
    if exit_zero or level is None:
        return 0
    for doc in docs:
        if doc.get("verdict") in ("flag", "needs-human", "error"):  # a part that could not be judged never passes
            return 1
        for f in doc.get("findings", ()):
            if Severity(f["severity"]).rank >= level.rank and (f.get("category") or level is not Severity.ERROR):
                return 1
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False)
@click.option("--git-dir", help="A (bare) clone of the challenge repo: audit from git objects, no checkout.")
@click.option("--ref", help="Ref or SHA to audit inside --git-dir.")
@click.option("--pr", type=int, help="Audit refs/pull/N/head inside --git-dir.")
@click.option("--prs", help="Comma-separated PR numbers to audit in batch.")
@click.option("--all-prs", is_flag=True, help="Audit every refs/pull/*/head in --git-dir (batch).")
@click.option("--folder", help="Record folder inside the ref (default: the folder(s) the ref adds).")
@click.option(
    "--checkout",
    is_flag=True,
    help="PATH is a checkout of the challenge repo: audit the record folders its branch adds (runs git there, its config defused).",
)
@click.option(
    "--base", help="With --checkout or --git-dir: base to diff against (default: merge-base with main / origin/main)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json", "jsonl", "sarif", "github"]),
    default="text",
    show_default=True,
)
@click.option("--output", "-o", help="Write the machine output here instead of stdout.")
@click.option("--html", help="Also write a static triage page (sortable, filterable; one row per folder) here.")
@click.option("--fail-on", type=click.Choice(list(FAIL_ON)), default="error", show_default=True)
@click.option("--exit-zero", is_flag=True, help="Always exit 0 unless the input is unusable.")
@click.option("--repo-url", help="Repository URL for permalinks (e.g. https://github.com/openai/parameter-golf).")
@click.option("--head-sha", help="Head commit SHA for permalinks and the review marker.")
@click.option(
    "--select",
    help="Only these codes (comma-separated; codes, prefixes, names or categories, any case), e.g. PG1,PG230.",
)
@click.option(
    "--ignore", help="Drop these codes (same selectors), e.g. PG230 for synthetic data, or tokenizer_bpb_bug."
)
@click.option("--jobs", "-j", type=int, default=0, help="Batch worker processes (default: all cores).")
@click.option(
    "--resume", is_flag=True, help="Batch: keep the PRs already in --output (or its .partial) and audit the rest."
)
@click.option(
    "--pr-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=PR_TIMEOUT_S,
    show_default=True,
    help="Batch: seconds one PR may take; past it the PR is recorded as needs-human and the queue goes on.",
)
@click.option(
    "--post",
    is_flag=True,
    help="Post the review comment on the PR (or update the one posted before) with the gh CLI; needs --pr N (or "
    "GITHUB_REF) and --repo-url (or GITHUB_REPOSITORY).",
)
@click.option(
    "--fix",
    is_flag=True,
    help="Turn off the switch a violation hangs on: rewrite its default in the code (formatting kept), print the "
    "run-command change, and re-audit.",
)
@click.option("--verbose", "-v", is_flag=True, help="Show info findings too.")
@click.option("--list-rules", is_flag=True, help="List the rules and exit.")
@click.version_option(__version__, prog_name="pgolf-audit")
def cli(
    path,
    git_dir,
    ref,
    pr,
    prs,
    all_prs,
    folder,
    base,
    fmt,
    output,
    html,
    fail_on,
    exit_zero,
    repo_url,
    head_sha,
    select,
    ignore,
    jobs,
    verbose,
    list_rules,
    checkout,
    pr_timeout,
    resume,
    post,
    fix,
):
    """Review a Parameter Golf submission statically. Never runs submission code.

    PATH is a record folder (a .git/ inside it is ignored); with --checkout, a checkout of the challenge repository.
    """
    if list_rules:
        for c in CODES:
            click.echo(f"{c.rule_id}\t{c.category or '-'}\t{c.summary}")
        return 0
    # validated here so a typo is a usage error before any work (an unknown selector never selects nothing)
    filters = {"select": select_codes(_codes(select), CODES), "ignore": select_codes(_codes(ignore), CODES)}
    if all_prs or prs:
        if not git_dir:
            raise InputError("--all-prs / --prs need --git-dir")
        if resume and not output:
            raise InputError("--resume needs --output (the file to resume)")
        if post:
            raise InputError("--post comments on one PR: use --pr N (batch writes --output/--html instead)")
        if fmt == "markdown":
            raise InputError(
                "the review comment is written per PR: use --pr N --format markdown (batch: json, jsonl, sarif, github)"
            )
        numbers = list_prs(git_dir) if all_prs else _parse_prs(prs)
        streaming = fmt in ("text", "jsonl")
        from .batch import run_batch  # worker processes: loaded only for a batch

        rows = run_batch(
            git_dir,
            numbers,
            output=output,
            jobs=jobs or os.cpu_count() or 1,
            repo_url=repo_url,
            pr_timeout=pr_timeout,
            resume=resume,
            filters=filters,
            render=lambda docs: render_docs(docs, fmt, verbose, collection=True),
            stream=streaming,
        )
        if not output and not streaming:
            sys.stdout.write(render_docs(rows, fmt, verbose, collection=True))
        _write_html(html, rows, repo_url)
        return _exit_code(rows, fail_on, exit_zero)
    if fix and (git_dir or checkout or path is None):
        raise InputError("--fix rewrites files of a record folder: give the folder's PATH")
    pairs = _reports_for(path, git_dir, ref, pr, folder, base, head_sha, repo_url, filters, checkout)
    reports = [rep for _, rep in pairs]
    if fix or fmt == "markdown" or post:  # the comment carries the fixes as suggestions
        from .fix import find_fixes  # libcst: imported only when fixes are wanted

        for sub, rep in pairs:
            rep.fixes = find_fixes(sub, rep, filters)
    if fix:
        return _apply_fixes(Path(path), pairs[0], filters, fail_on, exit_zero)
    if post:  # checked before writing anything: a bad slug or PR number is a usage error
        target = (pr_number(pr), repo_slug(repo_url))
    _emit(reports, fmt, output, verbose)
    if post:
        click.echo(f"pgolf-audit: {post_comment(review_comment(reports), *target)}", err=True)
    docs = [r.to_dict() for r in reports]
    _write_html(html, docs, repo_url)
    return _exit_code(docs, fail_on, exit_zero)


def _apply_fixes(path: Path, pair: tuple[Folder, AuditReport], filters: dict, fail_on: str, exit_zero: bool) -> int:
    """Rewrite the switch defaults the fixes name, print the run-command changes, re-audit from disk."""
    sub, rep = pair
    print_report(rep)
    if not rep.fixes:
        click.echo("pgolf-audit --fix: no violation here hangs on a switch; nothing to change", err=True)
        return _exit_code([rep.to_dict()], fail_on, exit_zero)
    for f in rep.fixes:
        click.echo(f"{'fixed' if f.kind == 'code-default' else 'change by hand'}: {f.describe()}", err=True)
        click.echo(f"  - {f.old.strip()}\n  + {f.new.strip()}", err=True)
    from .fix import apply_code_fixes

    for rel, text in apply_code_fixes(sub, rep.fixes).items():
        target = path / rel
        target.write_bytes(text.encode("utf-8"))
    after = audit_submission(load_folder(path, name=repo_relative_name(path)), **filters)
    click.echo("after --fix:", err=True)
    print_report(after)
    return _exit_code([after.to_dict()], fail_on, exit_zero)


def _write_html(path: str | None, docs: list[dict], repo_url: str | None) -> None:
    if path:
        Path(path).write_text(triage_html(docs, repo_url), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    run_click(cli, "pgolf-audit", argv, (InputError,))


if __name__ == "__main__":
    main()
