"""What many tests share: where things are, and one way to build a `Folder` from text."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from audit.load.folder import Folder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The labelled corpus lives in ../shared next to the repository; PGOLF_CORPUS overrides it.
CORPUS = Path(os.environ.get("PGOLF_CORPUS") or ROOT.parent / "shared" / "corpus")


def nested_dirs(top: Path, depth: int, files: dict[str, str] | None = None) -> None:
    """`top/n/n/…/n`, `depth` levels, with `files` written in the deepest. Made from inside, one level at a
    time: the whole path can be longer than the system accepts in one call."""
    cwd = os.getcwd()
    os.chdir(top)
    try:
        for _ in range(depth):
            os.mkdir("n")
            os.chdir("n")
        for name, text in (files or {}).items():
            Path(name).write_text(text)
    finally:
        os.chdir(cwd)


def make_submission(files: dict[str, str | bytes], name: str = "case", dedent: bool = False) -> Folder:
    """A submission from {relative path: text or bytes}; `dedent` strips a common indent from text files."""
    data = {
        path: body if isinstance(body, bytes) else (textwrap.dedent(body) if dedent else body).encode()
        for path, body in files.items()
    }
    return Folder(name=name, files=data, sizes={p: len(b) for p, b in data.items()})
