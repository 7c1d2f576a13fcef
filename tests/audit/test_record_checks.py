"""Record checks: seed count in the record track, best seed as the headline, a non-record in the record track,
the leaderboard of the base commit, and the pgolf-stats verdicts against it — warnings/info, never a flag."""

from __future__ import annotations

from dataclasses import replace

from audit.checks.facts import gather_facts, track_of
from audit.checks.record import leaderboard
from audit.engine import audit_submission
from tests.support import EXAMPLES, make_submission

CODE = (EXAMPLES / "clean_baseline" / "train_gpt.py").read_text()
RECORD = "records/track_10min_16mb/2026-05-01_Mine"
BASE_README = """# Parameter Golf

## Leaderboard

| Run | Score | Author | Summary | Date | Info |
|-----|------:|--------|---------|------|------|
| Best so far | 1.0611 | a | x | 2026-04-27 | info |
| Older | 1.0700 | b | y | 2026-04-20 | info |

#### Unlimited Compute Leaderboard & Non-record Submissions

| Run | Score | Author |
|-----|------:|--------|
| 4-Hour Baseline | 0.9000 | c |
"""


def log(seed: int, bpb: float, loss: float = 1.79) -> str:
    return (
        f"seed:{seed}\nstep:100/100 val_loss:{loss:.4f} val_bpb:{bpb:.4f} train_time:590000ms\n"
        f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n"
    )


def folder(seeds: dict[int, float], readme: str = "# My record\n\nval_bpb: 1.0500\n", name: str = RECORD, **kw):
    files = {"train_gpt.py": CODE, "README.md": readme, **{f"train_seed{s}.log": log(s, v) for s, v in seeds.items()}}
    return replace(make_submission(files, name=name), **kw)


def codes(rep) -> set[str]:
    return {f.code for f in rep.findings}


def test_track_and_seed_facts_from_logs_and_file_names():
    assert track_of(RECORD) == "record" and track_of("records/track_non_record_16mb/x") == "non-record"
    assert track_of("examples/x") is None
    assert gather_facts(RECORD, {}).runs == ()
    rep = audit_submission(folder({1: 1.05, 2: 1.051}))
    assert [r.seed for r in rep.facts.runs] == [1, 2] and rep.facts.track == "record"


def test_fewer_than_three_seeds_in_the_record_track_is_a_warning_not_a_flag():
    rep = audit_submission(folder({1: 1.05, 2: 1.051}))
    assert "PG240" in codes(rep) and rep.verdict != "flag"
    assert "PG240" not in codes(audit_submission(folder({1: 1.05, 2: 1.051, 3: 1.049})))
    assert "PG240" not in codes(audit_submission(folder({1: 1.05}, name="records/track_non_record_16mb/x")))


def test_a_headline_that_is_the_best_seed():
    seeds = {1: 1.0500, 2: 1.0540, 3: 1.0560}
    rep = audit_submission(folder(seeds, readme="# r\n\nval_bpb: 1.0500 (3-seed)\n"))
    assert "PG241" in codes(rep)
    mean = sum(seeds.values()) / 3
    assert "PG241" not in codes(audit_submission(folder(seeds, readme=f"# r\n\nval_bpb: {mean:.4f}\n")))


def test_a_non_record_in_the_record_track():
    rep = audit_submission(folder({1: 1.05, 2: 1.05, 3: 1.05}, readme="# X\n\n**Status:** Non-record submission\n"))
    assert "PG242" in codes(rep)


def test_the_leaderboard_of_the_base_commit():
    rows = leaderboard(BASE_README)
    assert [(r.run, r.score) for r in rows] == [("Best so far", 1.0611), ("Older", 1.07)]  # not the non-record table
    worse = audit_submission(
        folder({1: 1.0650, 2: 1.0660, 3: 1.0640}, readme="# r\n\nval_bpb: 1.0650\n", base_readme=BASE_README)
    )
    assert "PG243" in codes(worse) and worse.verdict != "flag"
    better = audit_submission(
        folder({1: 1.0500, 2: 1.0502, 3: 1.0498}, readme="# r\n\nval_bpb: 1.0500\n", base_readme=BASE_README)
    )
    assert "PG243" not in codes(better)
    (sig,) = [f for f in better.findings if f.code == "PG244"]
    assert "progression rule passes" in sig.message
    assert "| written rule |" in dict(sig.extra)["stats_markdown"]


def test_git_mode_reads_the_leaderboard_at_the_pr_base(tmp_path):
    import shutil
    import subprocess

    from audit.api import audit_git

    r = tmp_path / "pg"
    r.mkdir()

    def sh(*args):
        subprocess.run(args, cwd=r, check=True, capture_output=True)

    sh("git", "init", "-q", "-b", "main")
    sh("git", "config", "user.email", "m@x")
    sh("git", "config", "user.name", "m")
    (r / "README.md").write_text(BASE_README)
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    sh("git", "checkout", "-q", "-b", "pr")
    (r / "README.md").write_text(BASE_README.replace("1.0611", "9.9999"))  # the PR may edit the README: not read
    shutil.copytree(EXAMPLES / "clean_baseline", r / RECORD)
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "record")
    rep = audit_git(str(r / ".git"), "pr", RECORD)
    (worse,) = [f for f in rep.findings if f.code == "PG243"]
    assert "best 1.0611 (Best so far)" in worse.message
