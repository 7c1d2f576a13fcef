"""Which record folders a branch or PR adds — from a checkout or straight from git objects.

Every git process starts from `_git_command()` (through `git()`, or the long-lived blob reader behind
`read_blobs`), which runs it with the repository's own configuration defused: a submission can ship a `.git/`
whose config names commands (`core.fsmonitor`, hooks, filter and diff drivers, lazy-fetch transports), and a ref
or path given on the command line must never be read as a git option.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .folder import MAX_FILE_BYTES, MAX_FOLDER_FILES, Folder, decode_text

_RECORD = re.compile(r"^(records/track_[^/]+/[^/]+|records/(?!track_)[^/]+)/")

# --- the one way to run git --------------------------------------------------------------------------------
# Config that names a command is neutralised on every call. `-c` beats the repository's own config for
# single-valued keys; multi-valued ones (remote URLs) are made harmless by refusing every transport.
SAFE_CONFIG: tuple[str, ...] = (
    "core.fsmonitor=false",  # a hook path here runs on every status/diff of a work tree
    "core.hooksPath=/dev/null",  # no hook can be found under a non-directory
    "core.pager=cat",
    "core.useReplaceRefs=false",  # refs/replace/ could swap the objects we read
    "core.quotePath=false",
    "log.showSignature=false",  # signature checks run gpg.program
    "protocol.allow=never",  # a partial clone's lazy fetch could reach an ext:: "transport"
    "submodule.recurse=false",
)
# Per-driver keys that run commands; their names are chosen by the config itself, so they are found first
# (`git config --list`) and overridden by name.
_DRIVER_KEYS = {
    re.compile(r"^filter\..+\.(?:clean|smudge|process)$", re.I): "",
    re.compile(r"^filter\..+\.required$", re.I): "false",
    re.compile(r"^diff\..+\.(?:textconv|command)$", re.I): "",
    re.compile(r"^merge\..+\.driver$", re.I): "",
    re.compile(r"^protocol\..+\.allow$", re.I): "never",
}
DIFF_OPTS = ("--no-renames", "--no-ext-diff", "--no-textconv", "--ignore-submodules=all", "-z")
GIT_TIMEOUT_S = 300  # one git process; a hung one becomes an input error, not a hung audit
MAX_REV_CHARS = 256
_OPTION_LIKE = re.compile(r"^-|[\x00\n\r]")  # what must never reach git's argv as a revision
_BAD_REV = re.compile(r"[\x00-\x20\x7f]|\.\.|^$")


def check_rev(rev: str, what: str = "ref") -> str:
    """A ref or commit given by the user: never an option (`--output=…`), a range or whitespace."""
    if not isinstance(rev, str):
        raise InputError(f"invalid {what}: {rev!r}")
    if rev.startswith("-"):
        raise InputError(f"invalid {what} {rev!r}: a ref cannot start with '-'")
    if len(rev) > MAX_REV_CHARS or _BAD_REV.search(rev):
        raise InputError(f"invalid {what} {rev!r}: expected a branch, tag, ref or commit SHA")
    return rev


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        GIT_PAGER="cat",
        PAGER="cat",
        GIT_OPTIONAL_LOCKS="0",  # never rewrite the checkout's index
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_LITERAL_PATHSPECS="1",  # a folder name is a path, never `:(magic)`
        GIT_PROTOCOL_FROM_USER="0",
        GIT_ALLOW_PROTOCOL="",  # empty list: no transport at all, whatever protocol.<name>.allow says
        LC_ALL="C",
    )
    return env


def _run(argv: list[str], what: str, input: bytes | None, cwd: str | None, env: dict[str, str]):
    try:
        return subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            env=env,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"git {what}: timed out after {GIT_TIMEOUT_S} s") from None
    except OSError as e:
        raise InputError(f"cannot run git: {e.strerror or e}") from None


@functools.lru_cache(maxsize=64)
def _driver_overrides(git_dir: str) -> tuple[tuple[str, str], ...]:
    """The repository config's command-running driver keys, each mapped to its neutral value."""
    argv = ["git", "--no-pager", *_c_args(), f"--git-dir={git_dir}", "config", "--list", "--name-only", "-z"]
    proc = _run(argv, "config", None, None, _git_env())
    out: list[tuple[str, str]] = []
    for key in proc.stdout.decode(errors="replace").split("\0"):
        key = key.strip()
        for rx, neutral in _DRIVER_KEYS.items():
            if rx.match(key) and (key, neutral) not in out:
                out.append((key, neutral))
    return tuple(out)


def _c_args() -> list[str]:
    return [a for kv in SAFE_CONFIG for a in ("-c", kv)]


def _git_command(git_dir: str, work_tree: str | os.PathLike | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment of every git process on `git_dir`: config defused (see SAFE_CONFIG)."""
    env = _git_env()
    overrides = _driver_overrides(str(git_dir))
    if overrides:  # GIT_CONFIG_KEY_n: names are taken whole, never parsed as `key=value`
        env["GIT_CONFIG_COUNT"] = str(len(overrides))
        for i, (key, value) in enumerate(overrides):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    argv = ["git", "--no-pager", *_c_args(), f"--git-dir={git_dir}"]
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    return argv, env


def git(
    git_dir: str,
    *args: str,
    revs: Sequence[str] = (),
    paths: Sequence[str] | None = None,
    work_tree: str | os.PathLike | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> bytes:
    """Run `git <args> [--end-of-options <revs>] [-- <paths>]` on `git_dir`, config defused (see SAFE_CONFIG).

    `args` are options the caller wrote; anything that came from the user, a PR or a folder goes in `revs`
    (validated, after `--end-of-options`) or `paths` (after `--`). `work_tree` runs git in that checkout.
    """
    argv, env = _git_command(git_dir, work_tree)
    argv.extend(args)
    if revs:
        bad = [r for r in revs if _OPTION_LIKE.search(r)]
        if bad:
            raise InputError(f"invalid ref {bad[0]!r}: a ref cannot start with '-'")
        argv.append("--end-of-options")
        argv.extend(revs)
    if paths is not None:
        argv.append("--")
        argv.extend(str(p) for p in paths)
    proc = _run(argv, " ".join(args[:1]), input, str(work_tree) if work_tree is not None else None, env)
    if check and proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"git {' '.join(args[:2])}: {msg[-1] if msg else 'failed'}")
    return proc.stdout


def resolve_commit(git_dir: str, rev: str, what: str = "ref", *, work_tree: str | os.PathLike | None = None) -> str:
    """The commit SHA `rev` names; `rev` is user input (validated, never an option)."""
    check_rev(rev, what)
    if (git_dir, rev) in _KNOWN_COMMITS:  # a full commit id this process resolved already names itself
        return rev
    known = _KNOWN_REFS.get((git_dir, rev))
    if known is not None:  # a PR head the batch read for every PR at once (`pr_heads`)
        return known
    out = git(git_dir, "rev-parse", "--verify", "--quiet", revs=[f"{rev}^{{commit}}"], work_tree=work_tree, check=False)
    sha = out.decode(errors="replace").strip()
    if not _COMMIT_ID.fullmatch(sha):
        raise InputError(f"{what} {rev!r}: no such commit")
    if len(_KNOWN_COMMITS) > 4096:
        _KNOWN_COMMITS.clear()
    _KNOWN_COMMITS.add((git_dir, sha))
    return sha


# (git dir, commit id) pairs already verified: a PR's head is resolved by the batch, its diff and its folders
_KNOWN_COMMITS: set[tuple[str, str]] = set()
# (git dir, ref) -> the commit it named when the batch listed every PR head (one `for-each-ref`, not a
# `rev-parse` per PR)
_KNOWN_REFS: dict[tuple[str, str], str] = {}
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_PR_HEAD_REF = re.compile(r"refs/pull/(\d+)/head")  # what `pr_head_ref` writes


def pr_head_ref(pr: int) -> str:
    return f"refs/pull/{int(pr)}/head"


def pr_heads(git_dir: str) -> dict[int, str]:
    """Every PR's head commit, from one `for-each-ref` (a head that is not a commit is left out: it is resolved,
    and refused, one by one)."""
    out = git(git_dir, "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)", "refs/pull/")
    heads: dict[int, str] = {}
    for line in out.decode(errors="replace").splitlines():
        sha, kind, ref = (line.split(" ", 2) + ["", ""])[:3]
        m = _PR_HEAD_REF.fullmatch(ref)
        if m and kind == "commit" and _COMMIT_ID.fullmatch(sha):
            heads[int(m.group(1))] = sha
    return heads


def known_pr_head(git_dir: str, pr: int, sha: str) -> None:
    """Take `sha` as PR `pr`'s head (read by `pr_heads`) without asking git again."""
    if _COMMIT_ID.fullmatch(sha):
        if len(_KNOWN_REFS) > 4096:
            _KNOWN_REFS.clear()
        _KNOWN_REFS[(git_dir, pr_head_ref(pr))] = sha
        _KNOWN_COMMITS.add((git_dir, sha))


_MAIN_REFS = ("refs/heads/main", "refs/remotes/origin/main", "main", "origin/main")


def raw_entries(tokens: list[bytes], i: int = 0) -> tuple[list[tuple[str, str, str, str, str]], int]:
    """The records of a `--raw -z` diff from `tokens[i]` on (its output split at NULs): (status, new mode, old
    object, new object, path) each, up to the first token that is not a record; and the index of that token.
    ValueError for a malformed record."""
    out = []
    while i + 1 < len(tokens) and tokens[i].startswith(b":"):
        meta = tokens[i].decode(errors="replace").split()  # `:old-mode new-mode old new status`
        if len(meta) != 5:
            raise ValueError(f"not a raw diff record: {tokens[i][:80]!r}")
        out.append((meta[4], meta[1], meta[2], meta[3], tokens[i + 1].decode(errors="replace")))
        i += 2
    return out, i


# --- which folders a ref adds -------------------------------------------------------------------------------
def record_folder_of(path: str) -> str | None:
    m = _RECORD.match(path)
    if not m or any(part in (".", "..") for part in m.group(1).split("/")):
        return None
    return m.group(1)


@functools.lru_cache(maxsize=64)
def main_ref(git_dir: str) -> str | None:
    """The first of `_MAIN_REFS` the repository has (looked up once per process: a batch asks for every PR)."""
    for ref in _MAIN_REFS:
        if git(git_dir, "rev-parse", "--verify", "--quiet", revs=[f"{ref}^{{commit}}"], check=False).strip():
            return ref
    return None


def _default_base(git_dir: str, head: str) -> str:
    for cand in _MAIN_REFS:
        out = git(git_dir, "merge-base", revs=[cand, head], check=False).decode().strip()
        if out:
            return out
    for cand in _MAIN_REFS:  # unrelated histories (a PR from a re-created fork): diff against main itself
        out = git(git_dir, "rev-parse", "--verify", "--quiet", revs=[f"{cand}^{{commit}}"], check=False)
        if out.strip():
            return out.decode().strip()
    raise InputError("cannot find main or origin/main to diff against; pass --base")


def _folders(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        f = record_folder_of(n)
        if f and f not in out:
            out.append(f)
    return out


def _z(out: bytes) -> list[str]:
    return [t for t in out.decode(errors="replace").split("\0") if t]


@dataclass(frozen=True)
class PrDiff:
    """What a PR changes, computed once per PR: its head, the base it is compared with (default the merge-base
    with main) and (status, path) of every changed path. The folders, the launchers outside them and the
    leaderboard README are all read from it. `base` is None when git found the merge-base inside the diff itself
    (`base_commit` asks for it when needed); `readme` names the README.md blob at the base ("" when it has none)."""

    head: str
    base: str | None
    status: tuple[tuple[str, str], ...]
    readme: str = ""
    # What `ls-tree -r -l` lists at the head for every path the PR adds or changes: (mode, kind, object, size,
    # path), in git's order; and the record folders absent at the base, which the diff therefore holds whole.
    # Filled by the batch's scan of the queue (`queue.scan_queue`): a worker lists such a folder without git.
    entries: tuple[tuple[str, str, str, str, str], ...] = ()
    whole: frozenset[str] = frozenset()

    def base_commit(self, git_dir: str) -> str:
        return self.base or _default_base(git_dir, self.head)

    def listing(self, folder: str, paths: list[str]) -> list[tuple[str, str, str, str, str]] | None:
        """`folder` and `paths` as `ls-tree -r -l` lists them at the head; None unless the diff holds the folder
        whole (then every file of it is a path the PR adds)."""
        if folder not in self.whole:
            return None
        inside, outside = folder + "/", set(paths)
        return [e for e in self.entries if e[4].startswith(inside) or e[4] in outside]


def pr_diff(git_dir: str, head: str, base: str | None = None) -> PrDiff:
    head = resolve_commit(git_dir, head, "head")
    if not base:
        known = _KNOWN_DIFFS.get((git_dir, head))
        if known is not None:  # the batch diffed the whole queue at once (`queue.scan_queue`)
            return known
        fused = _diff_from_main(git_dir, head)
        if fused is not None:
            return fused
    base = resolve_commit(git_dir, base, "--base") if base else _default_base(git_dir, head)
    status = _z(git(git_dir, "diff", "--name-status", *DIFF_OPTS, revs=[f"{base}..{head}"]))
    return PrDiff(head, base, tuple(zip(status[0::2], status[1::2])), f"{base}:README.md")


# (git dir, head) -> its diff from its merge-base with main, as the batch read it for the whole queue
_KNOWN_DIFFS: dict[tuple[str, str], PrDiff] = {}


def known_pr_diff(git_dir: str, diff: PrDiff) -> None:
    """Take `diff` as the diff of `diff.head` from its merge-base with main without asking git again."""
    if _COMMIT_ID.fullmatch(diff.head):
        if len(_KNOWN_DIFFS) > 64:
            _KNOWN_DIFFS.clear()
        _KNOWN_DIFFS[(git_dir, diff.head)] = diff


def _diff_from_main(git_dir: str, head: str) -> PrDiff | None:
    """The diff from the merge-base with main in one git process (`diff --merge-base`): the base README is read
    from the diff, at its old object when the PR changes it, at the head when it does not. None when there is no
    main or it has no single merge-base with the head: the caller then asks step by step."""
    main = main_ref(git_dir)
    if main is None:
        return None
    try:
        out = git(git_dir, "diff", "--raw", "--merge-base", *DIFF_OPTS, revs=[main, head])
    except InputError:
        return None
    if not out:
        return None  # no change at all: the step-by-step path says so the way it always has
    tokens = out.split(b"\0")
    try:
        entries, end = raw_entries(tokens)
    except ValueError:
        return None
    if any(tokens[end:]):
        return None  # something that is not a record: not the output expected
    readme = next(((kind, old) for kind, _, old, _, path in entries if path == "README.md"), None)
    return PrDiff(head, None, tuple((kind, path) for kind, _, _, _, path in entries), readme_at_base(head, readme))


def readme_at_base(head: str, change: tuple[str, str] | None) -> str:
    """The README.md blob at a PR's base, named from its diff: `change` is (status, old object) when the PR
    changes the README, None when it does not (the base's is then the head's); "" when the base has none."""
    if change is None:
        return f"{head}:README.md"
    kind, old = change
    return "" if kind == "A" else old


def pr_folders(git_dir: str, head: str, base: str | None = None, diff: PrDiff | None = None) -> list[str]:
    """Record folders the PR itself adds. A fork may carry folders merged in from other people's branches;
    keep the ones whose commits share the head commit's author (the submitter), else all added ones."""
    diff = diff or pr_diff(git_dir, head, base)
    head = diff.head
    added, changed = [], []
    for kind, name in diff.status:
        if kind == "D" or not name.startswith("records/"):
            continue  # a folder the PR deletes is not a submission
        (added if kind == "A" else changed).append(name)
    folders = _folders(added) or _folders(changed)
    if len(folders) <= 1:
        return folders
    author = git(git_dir, "log", "-1", "--format=%ae", revs=[head], paths=[]).decode(errors="replace").strip()
    since = f"{diff.base_commit(git_dir)}..{head}"
    log = git(git_dir, "log", "--format=@@%ae", "--name-only", "-z", revs=[since], paths=["records/"])
    mine: list[str] = []
    current = ""
    for token in _z(log):
        token = token.lstrip("\n")
        if token.startswith("@@"):
            current = token[2:]
        elif token and current == author:
            f = record_folder_of(token)
            if f in folders and f not in mine:
                mine.append(f)
    return mine or folders


def _checkout_git_dir(repo: Path) -> Path:
    """`repo/.git` (a directory, or a `gitdir:` file as in a linked worktree); never found by searching upward."""
    dot = repo / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        try:
            line = dot.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as e:
            raise InputError(f"{repo}: cannot read .git: {e.strerror}") from None
        if line.startswith("gitdir:"):
            target = Path(line[len("gitdir:") :].strip())
            target = target if target.is_absolute() else repo / target
            if target.is_dir():
                return target
    raise InputError(f"{repo}: not a git checkout (no .git directory)")


def checkout_folders(repo: Path, base: str | None = None) -> tuple[str, list[str]]:
    """Folders a checked-out branch adds or changes (committed, staged, modified or untracked).

    git runs with `--work-tree` pinned to `repo` (a `core.worktree` in the checkout's config cannot move it)
    and its config defused, so a checkout that ships a hostile `.git/config` runs nothing."""
    repo = Path(repo).resolve()
    git_dir = str(_checkout_git_dir(repo))
    head = resolve_commit(git_dir, "HEAD", "HEAD", work_tree=repo)
    base_sha = resolve_commit(git_dir, base, "--base", work_tree=repo) if base else _default_base(git_dir, head)
    diff = git(git_dir, "diff", "--name-only", *DIFF_OPTS, revs=[base_sha], paths=["records/"], work_tree=repo)
    untracked = git(git_dir, "ls-files", "--others", "--exclude-standard", "-z", paths=["records/"], work_tree=repo)
    folders = [f for f in _folders(_z(diff) + _z(untracked)) if (repo / f).is_dir()]
    return head, folders


def looks_like_repo_root(path: Path) -> bool:
    """A checkout of the challenge repository rather than one record folder: it has `.git` and `records/`
    and no `submission.json` of its own."""
    p = Path(path)
    if not ((p / ".git").exists() and (p / "records").is_dir()):
        return False
    try:
        return not any(c.name.lower() == "submission.json" and c.is_file() for c in p.iterdir())
    except OSError:
        return False


def list_prs(git_dir: str) -> list[int]:
    refs = git(git_dir, "for-each-ref", "--format=%(refname)", "refs/pull/").decode().split()
    nums = sorted({int(m.group(1)) for r in refs for m in [_PR_HEAD_REF.fullmatch(r)] if m})
    return nums


# --- reading folders from git objects --------------------------------------------------------------------
MAX_README_BYTES = 1_000_000  # the base README: its leaderboard is near the top
MAX_OUTSIDE_LAUNCHERS = 20  # shell launchers read from outside one record folder
MAX_LAUNCHER_BYTES = 256_000
LAUNCHER_SUFFIXES = (".sh", ".bash")  # the shell launchers read from outside a record folder
_OUTSIDE = "\0outside "  # the read key of a launcher outside the folder: no path of the folder starts so


def _launcher_paths(folder: str, diff: PrDiff | None) -> list[str]:
    """Shell launchers the PR adds or changes outside `folder` (next to it, above it, `scripts/`): their run
    commands may set the record's switches. Bounded in count; no base (no main to diff against) means none."""
    if diff is None:
        return []
    inside = folder.strip("/") + "/"
    names = [name for kind, name in diff.status if kind != "D"]
    return [n for n in names if n.endswith(LAUNCHER_SUFFIXES) and not n.startswith(inside)][:MAX_OUTSIDE_LAUNCHERS]


def _outside_launchers(folder: str, launchers: dict[str, bytes]) -> dict[str, bytes]:
    """The launchers (read, within MAX_LAUNCHER_BYTES) that name `folder`."""
    name = folder.strip("/").rsplit("/", 1)[-1].encode()
    return {p: b for p, b in launchers.items() if name in b}


def load_git_folder(git_dir: str, ref: str, folder: str, base: str | None = None, diff: PrDiff | None = None) -> Folder:
    """Read `folder` at `ref` from a (bare) repository without a checkout, with the launchers the PR adds
    outside it and the README at its base (the leaderboard it is compared with). `base`: what the PR is diffed
    against, default the merge-base with main; `diff`: the PR's diff when the caller has it already."""
    folder = folder.strip("/")
    sha = resolve_commit(git_dir, ref)
    if diff is None or diff.head != sha:
        try:
            diff = pr_diff(git_dir, sha, base)
        except InputError:  # no main to compare with: no launchers outside, no leaderboard
            diff = None
    outside = _launcher_paths(folder, diff)
    # one listing for the folder and the launchers outside it
    listing = diff.listing(folder, outside) if diff is not None else None
    if listing is None:
        listing = _ls_tree(git_dir, sha, [folder + "/", *outside])
    sizes: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    blobs: list[tuple[str, str]] = []
    launchers: list[tuple[str, str]] = []
    for mode, kind, obj, size, path in listing:
        if not path.startswith(folder + "/"):  # a launcher outside the folder: read when it is a small file
            small = size.strip().isdigit() and int(size) <= MAX_LAUNCHER_BYTES
            if path in outside and kind == "blob" and mode != "120000" and small:
                launchers.append((_OUTSIDE + path, obj))
            continue
        rel = path[len(folder) + 1 :]
        if kind != "blob":
            continue
        if mode == "120000":
            skipped.append((rel, "symlink; not followed"))
            continue
        n = int(size) if size.strip().isdigit() else 0
        sizes[rel] = n
        if len(sizes) > MAX_FOLDER_FILES:
            skipped.append((rel, "too many files in folder"))
            continue
        if n > MAX_FILE_BYTES:
            skipped.append((rel, f"{n} bytes; too large to read"))
            continue
        blobs.append((rel, obj))
    if not sizes:
        raise InputError(f"{folder}: no files at {ref}")
    missing: list[str] = []
    readme_key = "\0base README"  # not a path: cannot collide with a file of the folder
    extra = [(readme_key, diff.readme)] if diff is not None and diff.readme else []
    # one cat-file exchange for the folder, the base README and the launchers
    files = read_blobs(git_dir, blobs + extra + launchers, missing)
    base_readme = files.pop(readme_key, b"")
    read = {key[len(_OUTSIDE) :]: files.pop(key) for key, _ in launchers if key in files}
    missing = [m for m in missing if m != readme_key and not m.startswith(_OUTSIDE)]
    skipped.extend((rel, "object absent from this git mirror") for rel in missing)
    return Folder(
        folder,
        files,
        sizes,
        tuple(skipped),
        head_sha=sha,
        outside_launchers=_outside_launchers(folder, read),
        base_readme=decode_text(base_readme[:MAX_README_BYTES]),
    )


def _ls_tree(git_dir: str, commit: str, paths: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(mode, kind, object, size, path) of every file under `paths` at `commit`."""
    out = []
    for entry in git(git_dir, "ls-tree", "-r", "-l", "-z", revs=[commit], paths=paths).split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            mode, kind, obj, size = meta.decode().split(None, 3)
            out.append((mode, kind, obj, size, path.decode(errors="replace")))
    return out


def read_blobs(git_dir: str, blobs: list[tuple[str, str]], missing: list[str] | None = None) -> dict[str, bytes]:
    """Read many blobs ((key, object name) pairs) through this process's `git cat-file --batch` on `git_dir`;
    absent objects go to `missing`."""
    if not blobs:
        return {}
    names = [_object_name(obj) for _, obj in blobs]
    files: dict[str, bytes] = {}
    for (rel, _), data in zip(blobs, _read_objects(str(git_dir), names)):
        if data is not None:
            files[rel] = data
        elif missing is not None:  # "<name> missing": a partial mirror lacks the object
            missing.append(rel)
    return files


# --- one long-lived `git cat-file --batch` per process and git dir -----------------------------------------
# A batch worker reads every folder of every PR it audits through one reader instead of starting git for each.
_BAD_OBJECT_NAME = re.compile(r"[\x00\n\r]")  # a newline would be a second request on the reader's stdin
_PIPE_CHUNK = 1 << 16  # a pipe's default capacity: one read takes what git has written
_MAX_READERS = 4  # git dirs with a live reader per process (tests open many; a batch uses one)


class _ReaderDiedError(Exception):
    pass


class _ReaderTimeoutError(Exception):
    pass


def _object_name(obj: str) -> bytes:
    if not isinstance(obj, str) or _BAD_OBJECT_NAME.search(obj):
        raise InputError(f"invalid object name {str(obj)[:80]!r}: a newline, carriage return or NUL")
    try:
        return obj.encode()
    except UnicodeEncodeError:
        raise InputError(f"invalid object name {obj[:80]!r}: not UTF-8") from None


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # no new session: the reader stays in its starter's process group, so a batch worker's killpg takes it too
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0
        )
    except OSError as e:
        raise InputError(f"cannot run git: {e.strerror or e}") from None


class _BlobReader:
    """`git cat-file --batch` on one git dir, started by (and only ever used from) the process `pid`."""

    def __init__(self, git_dir: str) -> None:
        argv, env = _git_command(git_dir)
        self.pid = os.getpid()
        self.proc = _spawn([*argv, "cat-file", "--batch"], env)
        self.lock = threading.Lock()
        self.err = b""  # the tail of its stderr, for the message when it dies
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(f.fileno(), False)

    def read(self, names: list[bytes], deadline: float) -> list[bytes | None]:
        """Each object's content, None where git answers "<name> missing" (or "ambiguous")."""
        if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _ReaderTimeoutError
        try:
            return self._exchange(names, deadline)
        finally:
            self.lock.release()

    def _exchange(self, names: list[bytes], deadline: float) -> list[bytes | None]:
        request = memoryview(b"".join(n + b"\n" for n in names))
        sent = 0
        self.err = b""  # what it says during this read only
        buf = bytearray()
        sel = selectors.DefaultSelector()
        stdin, stdout, stderr = (f.fileno() for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr))

        def pump() -> None:  # one round: write what git will take of the request, read what it has written
            nonlocal sent
            left = deadline - time.monotonic()
            events = sel.select(left) if left > 0 else []
            if not events:
                raise _ReaderTimeoutError
            for key, _ in events:
                try:
                    if key.fd == stdin:
                        sent += os.write(stdin, request[sent : sent + _PIPE_CHUNK])
                        if sent == len(request):
                            sel.unregister(stdin)
                        continue
                    chunk = os.read(key.fd, _PIPE_CHUNK)
                except BlockingIOError:
                    continue
                except OSError as e:  # EPIPE: it exited
                    raise _ReaderDiedError(e.strerror or str(e)) from None
                if key.fd == stdout:
                    if not chunk:
                        raise _ReaderDiedError("exited without answering")
                    buf.extend(chunk)
                elif chunk:
                    self.err = (self.err + chunk)[-4096:]
                else:
                    sel.unregister(stderr)

        try:
            sel.register(stdin, selectors.EVENT_WRITE)
            sel.register(stdout, selectors.EVENT_READ)
            sel.register(stderr, selectors.EVENT_READ)
            out: list[bytes | None] = []
            pos = 0
            for _ in names:
                while (nl := buf.find(b"\n", pos)) < 0:
                    pump()
                header = buf[pos:nl].split()
                if len(header) != 3 or not header[2].isdigit():
                    out.append(None)
                    pos = nl + 1
                    continue
                end = nl + 1 + int(header[2])
                while len(buf) <= end:  # the content and the newline after it
                    pump()
                if buf[end] != 0x0A:
                    raise _ReaderDiedError("unexpected output")
                out.append(bytes(buf[nl + 1 : end]))
                pos = end + 1
                if pos >= _PIPE_CHUNK:  # drop what is parsed; what is left is at most one read
                    del buf[:pos]
                    pos = 0
            if pos != len(buf) or sent != len(request):
                raise _ReaderDiedError("unexpected output")  # out of step with its requests: never reuse it
            return out
        finally:
            sel.close()

    def close(self, kill: bool = False) -> None:
        """End it: EOF on its stdin ends cat-file at once; killed when asked or when it does not end."""
        if kill:
            self.proc.kill()
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # unkillable (D state): nothing more to do here
                pass
        try:  # what it said before it ended, for the error message
            while chunk := os.read(self.proc.stderr.fileno(), _PIPE_CHUNK):
                self.err = (self.err + chunk)[-4096:]
        except (OSError, ValueError):  # nothing more without waiting (BlockingIOError), or closed already
            pass
        self.proc.stdout.close()
        self.proc.stderr.close()

    def last_error(self) -> str:
        lines = self.err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""


_READERS: dict[tuple[int, str], _BlobReader] = {}  # (pid, git dir) → reader; least recently used first
_READERS_LOCK = threading.Lock()
_INHERITED: list[_BlobReader] = []  # a parent's readers seen in a forked child: kept so nothing reaps them here


def _reader(git_dir: str) -> tuple[_BlobReader, bool]:
    """This process's reader on `git_dir` (started now when it has none or its process has ended) and whether
    it was used before."""
    key = (os.getpid(), git_dir)  # a forked child never finds its parent's reader
    with _READERS_LOCK:
        reader = _READERS.pop(key, None)
        if reader is not None and reader.proc.poll() is None:
            _READERS[key] = reader
            return reader, True
        stale = [reader] if reader is not None else []
        reader = _BlobReader(git_dir)
        _READERS[key] = reader
        while len(_READERS) > _MAX_READERS:
            stale.append(_READERS.pop(next(iter(_READERS))))
    for old in stale:
        old.close()
    return reader, False


def _drop(reader: _BlobReader, kill: bool = True) -> None:
    with _READERS_LOCK:
        for key, r in list(_READERS.items()):
            if r is reader:
                del _READERS[key]
    reader.close(kill=kill)


def _read_objects(git_dir: str, names: list[bytes]) -> list[bytes | None]:
    """Fail closed: a reader that hangs past GIT_TIMEOUT_S, dies or answers out of step is killed and dropped
    (the next call starts a fresh one) and the read is an InputError. A reused reader that died since its last
    use gets one fresh retry: reads have no side effects."""
    deadline = time.monotonic() + GIT_TIMEOUT_S
    for attempt in range(2):
        reader, reused = _reader(git_dir)
        try:
            return reader.read(names, deadline)
        except _ReaderTimeoutError:
            _drop(reader)
            raise InputError(f"git cat-file --batch: timed out after {GIT_TIMEOUT_S} s") from None
        except _ReaderDiedError as e:
            _drop(reader)
            if reused and attempt == 0:
                continue
            raise InputError(f"git cat-file --batch: {reader.last_error() or e}") from None
        except BaseException:  # interrupted mid-answer: its stream is out of step
            _drop(reader)
            raise
    raise AssertionError("unreachable")


def _close_readers() -> None:
    """This process's readers, at exit (a parent's, inherited over fork, are not ours to end)."""
    with _READERS_LOCK:
        mine = [r for (pid, _), r in _READERS.items() if pid == os.getpid()]
        _READERS.clear()
    for reader in mine:
        reader.close()


def _forget_after_fork() -> None:
    """In a forked child: close our copies of the parent's pipes (so its reader sees EOF when the parent closes
    it), never signal or wait for the parent's git."""
    global _READERS_LOCK
    _READERS_LOCK = threading.Lock()  # another thread may have held it at the fork
    for reader in _READERS.values():
        for f in (reader.proc.stdin, reader.proc.stdout, reader.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        _INHERITED.append(reader)
    _READERS.clear()


atexit.register(_close_readers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
