"""What a batch needs to know of the whole PR queue, from a handful of git processes, none per PR.

Four processes for 2,000 PRs: main's history with its parents (`rev-list --topo-order --parents`), the PRs' own
commits (`log --stdin`), one `diff-tree --stdin` of every (head, merge-base) pair and one `cat-file --batch-check`
of the sizes. From them:

- each PR's **weight**, so that the batch hands out the heaviest first (`batch.heaviest_first`);
- each PR's **diff** from its merge-base with main — what `git diff --merge-base main <head>` gives a worker, one
  git process per PR otherwise. Only where that merge-base is unique; any other PR is diffed by its worker as
  before (`git.pr_diff`).

Any git failure gives an empty scan: the queue then goes in PR order and every worker asks git itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InputError
from .folder import MAX_FILE_BYTES
from .git import DIFF_OPTS, LAUNCHER_SUFFIXES, PrDiff, git, main_ref, raw_entries, readme_at_base, record_folder_of

_WEIGHED = (".py", ".log", ".txt", ".out")  # what the audit parses: its sources and its logs
_NOT_A_LINE = re.compile(r"[\x00\n\r]")  # a path `cat-file --batch-check` could not be asked about on one line
_OBJECT_TYPES = frozenset({"blob", "tree", "commit", "tag"})


@dataclass(frozen=True)
class QueueScan:
    weights: dict[int, int] = field(default_factory=dict)  # PR -> the bytes its audit will parse
    diffs: dict[str, PrDiff] = field(default_factory=dict)  # head commit -> its diff from the merge-base with main


def scan_queue(git_dir: str, heads: dict[int, str]) -> QueueScan:
    """Weights and diffs of the PRs `heads` names (PR -> head commit); empty when anything fails."""
    try:
        return _scan(git_dir, heads)
    except (InputError, OSError, ValueError, IndexError):
        return QueueScan()


def pr_weights(git_dir: str, heads: dict[int, str]) -> dict[int, int]:
    """A rough cost of auditing each PR: the bytes of the Python sources and logs under records/ that the PR adds
    (or, adding none, changes) since it forked from main, each capped where the audit stops reading. Only an
    order: {} when anything fails."""
    return scan_queue(git_dir, heads).weights


def _scan(git_dir: str, heads: dict[int, str]) -> QueueScan:
    ref = main_ref(git_dir)
    if ref is None or not heads:
        return QueueScan()
    history = [
        line.split()
        for line in git(git_dir, "rev-list", "--topo-order", "--parents", revs=[ref], paths=[]).decode().splitlines()
        if line.strip()
    ]
    main_parents = {c: ps for c, *ps in history}
    rank = {c: i for i, (c, *_) in enumerate(history)}  # topological: a descendant comes before its ancestors
    tip = history[0][0]
    wanted = sorted(set(heads.values()))
    tips = [h for h in wanted if h not in rank]
    listing = git(
        git_dir, "log", "--stdin", "--format=%H %P", input="".join(f"{t}\n" for t in [f"^{tip}", *tips]).encode()
    )
    parents = {c: ps for c, *ps in (line.split() for line in listing.decode().splitlines() if line.strip())}
    bases = {head: _merge_base(head, parents, rank, main_parents) for head in wanted}
    pairs = [(head, bases[head][0] or tip) for head in wanted]
    changes = _diff_pairs(git_dir, pairs)
    # a head on main itself, or one with no change, is left to the worker (it says so the way it always has)
    planned = {
        head: base
        for head, (base, unique) in bases.items()
        if base is not None and unique and base != head and changes[head]
    }
    listings = _listings(git_dir, {head: (base, changes[head]) for head, base in planned.items()})
    diffs = {}
    for head, base in planned.items():
        status = tuple((kind, path) for kind, _, _, _, path in changes[head])
        old = {path: (kind, obj) for kind, _, obj, _, path in changes[head]}
        entries, whole = listings.get(head, ((), frozenset()))
        diffs[head] = PrDiff(head, base, status, readme_at_base(head, old.get("README.md")), entries, whole)
    return QueueScan(_weights(git_dir, heads, changes), diffs)


def _merge_base(head: str, parents: dict[str, list[str]], rank: dict[str, int], main_parents: dict[str, list[str]]):
    """(the newest commit of main that `head` reaches, whether it is git's only merge-base of main and `head`).

    The main commits `head` reaches first (walking its own commits down to main) hold every common ancestor; the
    merge-bases are those of them no other one descends from. The newest is one; it is the only one when each of
    the others is among its ancestors."""
    if head in rank:
        return head, True
    seen: set[str] = set()
    stack = [head]
    reached: set[str] = set()
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        if c in rank:
            reached.add(c)
        else:
            stack.extend(parents.get(c, ()))
    if not reached:
        return None, False
    best = min(reached, key=rank.__getitem__)
    others = reached - {best}
    if not others:
        return best, True
    # the others must all be ancestors of `best`: walk main down from it, no further than the oldest of them
    floor = max(rank[c] for c in others)
    seen = {best}
    stack = [best]
    while stack and others:
        for p in main_parents.get(stack.pop(), ()):
            if p not in seen and rank.get(p, floor + 1) <= floor:
                seen.add(p)
                others.discard(p)
                stack.append(p)
    return best, not others


def _diff_pairs(git_dir: str, pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str, str, str, str]]]:
    """head -> (status, new mode, old object, new object, path) of every path it changes from its pair, in
    git's order."""
    out = git(
        git_dir,
        "diff-tree",
        "-r",
        "--stdin",
        "--always",  # a header for every pair, even one with no change: the output is read pair by pair
        *DIFF_OPTS,
        input="".join(f"{head} {base}\n" for head, base in pairs).encode(),  # commit, then what it is diffed with
    )
    changes: dict[str, list[tuple[str, str, str, str, str]]] = {}
    tokens = out.split(b"\0")
    i = 0
    for head, _ in pairs:
        while i < len(tokens) and not tokens[i]:
            i += 1
        if i >= len(tokens) or tokens[i].decode() != head:
            raise ValueError(f"diff-tree: expected {head}")  # not the pair expected next: nothing can be attributed
        changes[head], i = raw_entries(tokens, i + 1)
    return changes


def _listings(git_dir: str, diffs: dict[str, tuple[str, list[tuple[str, str, str, str, str]]]]):
    """head -> (what `ls-tree -r -l` lists at the head for the paths a worker lists: the files of the record
    folders the diff holds whole and the shell launchers it adds or changes; those folders). A folder is held
    whole when the PR adds every path of it the diff shows and the base has no such path. A head with an object
    the mirror lacks gets none: its worker lists its folders itself."""
    asks: list[tuple[str, str]] = []
    for head, (_, files) in diffs.items():
        kinds: dict[str, set[str]] = {}
        for kind, _, _, _, path in files:
            folder = record_folder_of(path)
            if folder is not None:
                kinds.setdefault(folder, set()).add(kind)
        asks += [(head, f) for f, ks in kinds.items() if ks == {"A"} and not _NOT_A_LINE.search(f)]
    whole: dict[str, set[str]] = {}
    for (head, folder), answer in zip(asks, _batch_check(git_dir, [f"{diffs[h][0]}:{f}" for h, f in asks])):
        if answer is None:  # absent at the base
            whole.setdefault(head, set()).add(folder)
    listed: dict[str, list[tuple[str, str, str, str]]] = {}
    for head, folders in whole.items():
        listed[head] = [
            (mode, obj, path, "commit" if mode == "160000" else "blob")
            for kind, mode, _, obj, path in diffs[head][1]
            if kind != "D" and (record_folder_of(path) in folders or path.endswith(LAUNCHER_SUFFIXES))
        ]
    objects = sorted({obj for files in listed.values() for _, obj, _, kind in files if kind == "blob"})
    sizes = dict(zip(objects, _batch_check(git_dir, objects)))
    out = {}
    for head, files in listed.items():
        if any(kind == "blob" and sizes.get(obj) is None for _, obj, _, kind in files):
            continue
        entries = tuple(
            (mode, kind, obj, sizes[obj][1] if kind == "blob" else "-", path) for mode, obj, path, kind in files
        )
        out[head] = (entries, frozenset(whole[head]))
    return out


def _batch_check(git_dir: str, names: list[str]) -> list[tuple[str, str] | None]:
    """(type, size) of each object `names` names (`<commit>:<path>` or an object id), None for one that is absent."""
    if not names:
        return []
    out = git(
        git_dir,
        "cat-file",
        "--batch-check=%(objecttype) %(objectsize)",
        input="".join(f"{n}\n" for n in names).encode(),
    )
    lines = out.decode(errors="replace").split("\n")[: len(names)]
    if len(lines) != len(names):
        raise ValueError("cat-file --batch-check: fewer answers than questions")
    answers: list[tuple[str, str] | None] = []
    for line in lines:
        kind, _, size = line.partition(" ")
        answers.append((kind, size) if kind in _OBJECT_TYPES and size.isdigit() else None)
    return answers


def _weights(
    git_dir: str, heads: dict[int, str], changes: dict[str, list[tuple[str, str, str, str]]]
) -> dict[int, int]:
    blobs: dict[str, list[str]] = {}
    for head, files in changes.items():
        records = [f for f in files if f[4].startswith("records/")]
        added = [f for f in records if f[0] == "A"]
        kept = added or [f for f in records if f[0] != "D"]
        blobs[head] = [obj for _, _, _, obj, path in kept if path.lower().endswith(_WEIGHED)]
    wanted = sorted({obj for objs in blobs.values() for obj in objs})
    sizes: dict[str, int] = {}
    if wanted:
        check = git(
            git_dir,
            "cat-file",
            "--batch-check=%(objectname) %(objectsize)",
            input="".join(f"{o}\n" for o in wanted).encode(),
        )
        for line in check.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                sizes[parts[0]] = min(int(parts[1]), MAX_FILE_BYTES)
    return {pr: sum(sizes.get(o, 0) for o in blobs.get(head, ())) for pr, head in heads.items()}
