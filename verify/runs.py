"""Which shipped runs count: one per seed, the latest.

A record may ship several logs of one seed by design — the original run and a re-run (a compliance re-run,
a reproduction), or the same log twice (`train.log` and `train_seed1337.log`). A later run of a seed replaces
the earlier ones; only when nothing says which is later is the seed logged twice (`seeds_unique` fails).
A run is later than another of its seed when, in this order:

1. the file names say so: `rerun`, `re-run`, `repro`, `retry`, `final`, … against `original`, `orig`, `old`,
   `first`, …; or version numbers (`_v3` after `_v1`);
2. only it measured the code as shipped (its logged code size is the shipped code's bytes) — it ran the code
   the folder ships, the other an earlier version.

Identical runs (same score, training time and artifact size) are one run shipped twice. An eval-only run
(a re-evaluation of a saved artifact, `TTT_EVAL_ONLY` and the like) next to the training run of its seed is
the later half of that run: its score counts, with the training run's time and sizes. A file whose name names
another seed than the one its log prints is not a re-run: it is mislabelled, and counts as a duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from audit.checks.claims.base import seed_from_name

from .checks import LogFacts

_LATER = re.compile(
    r"(?:^|[^a-z])(re-?run|repro\w*|retry|redo|re-?exec\w*|final|latest|new|second|fix(?:ed)?)(?:[^a-z]|$)"
)
_EARLIER = re.compile(r"(?:^|[^a-z])(orig(?:inal)?|old|first|initial|prev(?:ious)?|pre-?fix|draft)(?:[^a-z]|$)")
_VERSION = re.compile(r"(?:^|[^a-z0-9])v(\d+)(?:[^a-z0-9]|$)")


@dataclass
class ShippedRun:
    path: str
    facts: LogFacts
    counts: bool = True  # the run that counts for its seed
    replaced_by: str = ""  # the later run (or the identical copy) that counts instead
    why: str = ""  # how the order was decided
    superseded: list[str] = field(default_factory=list)  # earlier runs this one replaces

    @property
    def seed(self) -> int | None:
        return self.facts.seed


def _name(path: str) -> str:
    return PurePosixPath(path).stem.lower()


def _name_rank(path: str) -> tuple[int, int]:
    """(marker, version): 1 for a re-run marker, -1 for an original marker, 0 for none; the highest vN or -1."""
    name = _name(path)
    marker = 1 if _LATER.search(name) else -1 if _EARLIER.search(name) else 0
    versions = [int(v) for v in _VERSION.findall(name)]
    return marker, max(versions) if versions else -1


def _ran_shipped(f: LogFacts, code_bytes: int) -> bool:
    return bool(code_bytes) and code_bytes in (f.code_raw_bytes, f.code_bytes)


def _identical(a: LogFacts, b: LogFacts) -> bool:
    keys = ("val_bpb", "train_time_ms", "total_bytes", "model_bytes")
    return all(getattr(a, k) == getattr(b, k) for k in keys) and any(getattr(a, k) is not None for k in keys)


def _later(a: ShippedRun, b: ShippedRun, code_bytes: int) -> tuple[ShippedRun | None, str]:
    """The later of two runs of one seed, and why; (None, "") when nothing says."""
    (ma, va), (mb, vb) = _name_rank(a.path), _name_rank(b.path)
    if ma != mb:
        return (a, b)[ma < mb], "the file names mark a re-run"
    if va != vb and va >= 0 and vb >= 0:
        return (a, b)[va < vb], "a higher version number in the file name"
    sa, sb = _ran_shipped(a.facts, code_bytes), _ran_shipped(b.facts, code_bytes)
    if sa != sb:
        return (a if sa else b), "only it measured the code as shipped"
    return None, ""


def _latest(group: list[ShippedRun], code_bytes: int) -> ShippedRun | None:
    """The latest of runs of one seed, marking the others replaced; None (nothing marked) when some pair cannot
    be ordered. Identical copies are dropped first."""
    kept: list[ShippedRun] = []
    for r in group:
        twin = next((k for k in kept if _identical(k.facts, r.facts)), None)
        if twin is None:
            kept.append(r)
        else:
            r.counts, r.replaced_by, r.why = False, twin.path, "an identical copy"
    latest = kept[0]
    whys: dict[int, str] = {}
    for r in kept[1:]:
        winner, why = _later(latest, r, code_bytes)
        if winner is None:
            return None
        whys[id(r if winner is latest else latest)] = why
        latest = winner
    for r in kept:
        if r is not latest:
            r.counts, r.replaced_by, r.why = False, latest.path, whys.get(id(r), "")
            latest.superseded.append(r.path)
    return latest


def _carry_training(evaluation: ShippedRun, training: ShippedRun) -> None:
    """The eval-only run counts, with the training run's clock and sizes (the artifact it re-evaluated)."""
    t = training.facts
    evaluation.facts = replace(
        evaluation.facts,
        train_time_ms=t.train_time_ms,
        step_avg_ms=t.step_avg_ms,
        stop_reason=t.stop_reason,
        total_bytes=t.total_bytes,
        model_bytes=t.model_bytes,
        code_bytes=t.code_bytes,
        code_raw_bytes=t.code_raw_bytes,
        world_size=evaluation.facts.world_size or t.world_size,
        gpus=evaluation.facts.gpus or t.gpus,
        trained_in=training.path,
        size_log=t.run_log,
    )
    training.counts, training.replaced_by = False, evaluation.path
    training.why = "the eval-only run re-evaluates its artifact"
    evaluation.superseded.append(training.path)


def order_runs(logs: dict[str, LogFacts], code_bytes: int) -> list[ShippedRun]:
    """Every shipped run and whether it counts. Runs without a seed, and logs that hold no training or scored
    run (a summary), are left as they are."""
    runs = [ShippedRun(p, f) for p, f in logs.items()]
    by_seed: dict[int, list[ShippedRun]] = {}
    for r in runs:
        if r.seed is not None and (r.facts.val_bpb is not None or r.facts.train_time_ms is not None):
            by_seed.setdefault(r.seed, []).append(r)
    for seed, group in by_seed.items():
        if len(group) < 2 or any(_mislabelled(r.path, seed) for r in group):
            continue  # one run; or a file named for another seed: a duplicate, not a re-run
        trained = [r for r in group if not r.facts.eval_only]
        evals = [r for r in group if r.facts.eval_only]
        if trained and evals:
            t = trained[0] if len(trained) == 1 else _latest(trained, code_bytes)
            e = evals[0] if len(evals) == 1 else _latest(evals, code_bytes)
            if t is None or e is None:
                _undo(group)
                continue
            _carry_training(e, t)
            continue
        if _latest(group, code_bytes) is None:
            _undo(group)
    return runs


def _undo(group: list[ShippedRun]) -> None:
    """Some pair cannot be ordered: every run of the seed counts (and `seeds_unique` reports them)."""
    for r in group:
        if r.why != "an identical copy":
            r.counts, r.replaced_by, r.why = True, "", ""
        r.superseded.clear()


def _mislabelled(path: str, seed: int) -> bool:
    named = seed_from_name(path)
    return named is not None and named != seed
