"""--post: the review comment goes on the PR through `gh`, and a second run edits the same comment (a stub `gh` on
PATH stands in for GitHub and records every call)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from audit.post import MARKER
from tests.audit.test_gitsource import repo  # noqa: F401 - the fixture

STUB = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    state = os.environ["GH_STUB_STATE"]
    calls = json.load(open(state)) if os.path.exists(state) else {{"calls": [], "comments": []}}
    args = sys.argv[1:]
    body = sys.stdin.read() if "--input" in args else None
    calls["calls"].append({{"args": args, "stdin": body}})
    if os.environ.get("GH_STUB_FAIL"):
        print("HTTP 401: Bad credentials", file=sys.stderr)
        json.dump(calls, open(state, "w"))
        sys.exit(1)
    out = ""
    if args[:2] == ["api", "--paginate"]:
        out = "".join(json.dumps(c) + "\\n" for c in calls["comments"])
    elif "POST" in args:
        calls["comments"].append({{"id": 1000 + len(calls["comments"]), "body": json.loads(body)["body"]}})
    elif "PATCH" in args:
        cid = int(args[args.index("PATCH") + 1].rsplit("/", 1)[1])
        for c in calls["comments"]:
            if c["id"] == cid:
                c["body"] = json.loads(body)["body"]
    json.dump(calls, open(state, "w"))
    sys.stdout.write(out)
    """
)


@pytest.fixture
def gh(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "gh"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "gh.json"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "GH_STUB_STATE": str(state)}
    env.pop("GITHUB_REPOSITORY", None)
    env.pop("GITHUB_REF", None)
    return env, state


def audit(repo, env, *extra):  # noqa: F811
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", "--git-dir", str(repo / ".git"), "--pr", "7", "--post", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_post_creates_then_updates_one_sticky_comment(repo, gh):  # noqa: F811
    env, state = gh
    first = audit(repo, env, "--repo-url", "https://github.com/openai/parameter-golf")
    assert "posted the review on openai/parameter-golf#7" in first.stderr, first.stderr
    second = audit(repo, env, "--repo-url", "https://github.com/openai/parameter-golf")
    assert "updated the review on openai/parameter-golf#7 (comment 1000)" in second.stderr, second.stderr
    calls = json.loads(state.read_text())
    assert len(calls["comments"]) == 1  # edited in place, not a second comment
    body = calls["comments"][0]["body"]
    assert body.startswith(MARKER) and "FLAG" in body and "2026-03-01_Alice" in body
    methods = [c["args"][2] for c in calls["calls"] if c["args"][:2] == ["api", "-X"]]
    assert methods == ["POST", "PATCH"]
    assert first.returncode == second.returncode == 1  # the verdict still decides the exit code


def test_post_takes_the_repository_and_pr_from_actions(repo, gh):  # noqa: F811
    env, state = gh
    env = {**env, "GITHUB_REPOSITORY": "someone/fork", "GITHUB_REF": "refs/pull/7/merge"}
    proc = audit(repo, env)
    assert "posted the review on someone/fork#7" in proc.stderr


def test_post_failures_are_one_line_and_exit_2(repo, gh):  # noqa: F811
    env, _ = gh
    proc = audit(repo, {**env, "GH_STUB_FAIL": "1"}, "--repo-url", "https://github.com/o/r")
    assert proc.returncode == 2 and proc.stderr.strip().endswith("HTTP 401: Bad credentials")
    assert proc.stderr.count("pgolf-audit: error:") == 1
    proc = audit(repo, env)  # no repository anywhere
    assert proc.returncode == 2 and "--post needs the repository" in proc.stderr
