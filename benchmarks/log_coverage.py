"""Coverage of the log parser over the real repository (docs/logs.md §3).

Reads every log file straight from a bare mirror of openai/parameter-golf: all `records/` logs on
`refs/heads/main`, and the record folders of the labelled PRs in the corpus (`dev_labels.tsv`), plus any PR
given with `--pr` (logs it adds relative to its merge-base with main). Prints the coverage table, the parse
time, and every unmatched data line.

    python benchmarks/log_coverage.py --mirror $PGOLF_MIRROR [--corpus ../shared/corpus] [--pr 1105 ...]
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import click

from audit.errors import InputError
from audit.load.folder import NOT_LOGS, decode_text, is_binary
from audit.load.git import git, read_blobs
from audit.logs import LogResult, parse_log

LOG_SUFFIXES = (".log", ".txt")
DEFAULT_CORPUS = Path(os.environ.get("PGOLF_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")


def is_log_path(path: str) -> bool:
    name = PurePosixPath(path).name.lower()
    return name.endswith(LOG_SUFFIXES) and name not in NOT_LOGS


@dataclass
class Corpus:
    name: str
    files: int = 0
    data_lines: int = 0
    matched: int = 0
    scored: int = 0
    train_time: int = 0
    artifact: int = 0
    seed: int = 0
    peak_mem: int = 0
    seconds: float = 0.0
    nbytes: int = 0
    lines: int = 0  # every line of every log (the parser's per-line cost is seconds / lines)
    unmatched: list[tuple[str, int, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, path: str, res: LogResult) -> None:
        self.files += 1
        self.lines += res.n_lines
        self.data_lines += res.data_lines
        self.matched += res.data_matched
        runs = res.runs
        self.scored += any(r.scored is not None for r in runs)
        self.train_time += any(r.train_time_ms is not None for r in runs)
        self.artifact += any(r.artifact_bytes is not None for r in runs)
        self.seed += any(r.seed is not None for r in runs)
        self.peak_mem += any(r.peak_memory_mib is not None for r in runs)
        self.unmatched.extend((path, ln, text) for ln, text in res.unmatched)


def ls_tree(mirror: str, ref: str, prefix: str) -> list[tuple[str, str]]:
    out = git(mirror, "ls-tree", "-r", "-z", ref, "--", prefix)
    items = []
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, kind, obj = meta.decode().split()
        p = path.decode(errors="replace")
        if kind == "blob" and mode != "120000" and is_log_path(p):
            items.append((p, obj))
    return items


def added_logs(mirror: str, pr: int) -> list[tuple[str, str]]:
    ref = f"refs/pull/{pr}/head"
    base = git(mirror, "merge-base", "refs/heads/main", ref).decode().strip()
    names = git(mirror, "diff", "--name-only", "--diff-filter=AM", "-z", base, ref).decode(errors="replace").split("\0")
    wanted = {n for n in names if n and is_log_path(n)}
    return [(p, o) for p, o in ls_tree(mirror, ref, ".") if p in wanted]


def measure(corpus: Corpus, mirror: str, items: list[tuple[str, str]], label: str = "") -> None:
    missing: list[str] = []
    blobs = read_blobs(mirror, items, missing)
    corpus.missing.extend(f"{label}{p}" for p in missing)
    for path, data in blobs.items():
        if is_binary(data):
            continue
        text = decode_text(data)
        t0 = time.perf_counter()
        res = parse_log(text, path)
        corpus.seconds += time.perf_counter() - t0
        corpus.nbytes += len(data)
        corpus.add(f"{label}{path}", res)


def corpus_prs(corpus_dir: Path) -> list[tuple[int, str, str]]:
    rows = []
    path = corpus_dir / "dev_labels.tsv"
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            rows.append((int(row["pr"]), row["ref_sha"], row["folder"]))
    return rows


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.2f} %" if b else "-"


def print_table(corpora: list[Corpus]) -> None:
    head = (
        "corpus",
        "files",
        "data lines",
        "matched",
        "scored metric",
        "train time",
        "artifact bytes",
        "seed",
        "peak mem",
        "parse s",
        "MB/s",
        "µs/line",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in corpora:
        mbps = c.nbytes / 1e6 / c.seconds if c.seconds else 0.0
        print(
            f"| {c.name} | {c.files} | {c.data_lines:,} | {c.matched:,} ({pct(c.matched, c.data_lines)}) | {c.scored} | "
            f"{c.train_time} | {c.artifact} | {c.seed} | {c.peak_mem} | {c.seconds:.2f} | {mbps:.1f} | "
            f"{1e6 * c.seconds / max(1, c.lines):.2f} |"
        )


@click.command()
@click.option(
    "--mirror", default=lambda: os.environ.get("PGOLF_MIRROR", ""), help="bare git dir of openai/parameter-golf"
)
@click.option(
    "--corpus",
    "corpus_dir",
    default=str(DEFAULT_CORPUS),
    type=click.Path(),
    help="folder with dev_labels.tsv (default: ../shared/corpus next to the repository, or PGOLF_CORPUS)",
)
@click.option("--pr", "prs", multiple=True, type=int, help="also measure the logs this PR adds (repeatable)")
@click.option("--max-unmatched", default=200, show_default=True, help="unmatched lines to print per corpus")
def main(mirror: str, corpus_dir: str, prs: tuple[int, ...], max_unmatched: int) -> None:
    if not mirror or not Path(mirror).exists():
        click.echo("error: give --mirror or set PGOLF_MIRROR to the bare openai/parameter-golf git dir", err=True)
        sys.exit(2)
    try:
        merged = Corpus("refs/heads/main records/")
        measure(merged, mirror, ls_tree(mirror, "refs/heads/main", "records/"))
        corpora = [merged]
        cdir = Path(corpus_dir)
        if (cdir / "dev_labels.tsv").exists():
            labelled = Corpus(f"labelled PRs ({cdir.name}/dev_labels.tsv)")
            for pr, sha, folder in corpus_prs(cdir):
                ref = (
                    sha
                    if git(mirror, "cat-file", "-e", sha, check=False) == b"" and _has(mirror, sha)
                    else f"refs/pull/{pr}/head"
                )
                try:
                    items = ls_tree(mirror, ref, folder.rstrip("/") + "/")
                except InputError as e:
                    labelled.missing.append(f"#{pr} {folder}: {e}")
                    continue
                measure(labelled, mirror, items, f"#{pr}:")
            corpora.append(labelled)
        if prs:
            extra = Corpus(f"{len(prs)} PRs (--pr, added logs)")
            for pr in prs:
                measure(extra, mirror, added_logs(mirror, pr), f"#{pr}:")
            corpora.append(extra)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    print_table(corpora)
    for c in corpora:
        print(f"\n## unmatched data lines: {c.name} ({len(c.unmatched)})")
        for path, ln, text in c.unmatched[:max_unmatched]:
            print(f"{path}:{ln}: {text[:200]}")
        if c.missing:
            print(f"\n## not measured (object absent from mirror): {len(c.missing)}")
            for m in c.missing:
                print(f"  {m}")


def _has(mirror: str, sha: str) -> bool:
    try:
        git(mirror, "cat-file", "-e", revs=(sha,))  # through the one git() that neutralises repository config
    except InputError:
        return False
    return True


if __name__ == "__main__":
    main()
