"""The headline facts of a record folder, from every place they live: the track from the folder's path, and per
seed run (one per log file: its last run) the seed, the scored val_bpb, train and eval seconds and the artifact
bytes — with the seed from the log file's name when the log does not print it (`train_seed42.log`).

The review comment's facts table, the triage page and the record checks read these; nothing here judges.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from ..logs import LogResult
from .claims.base import seed_from_name

RECORD_TRACK = "track_10min_16mb"
NON_RECORD_TRACK = "track_non_record_16mb"
HEADLINE_TOL = 5e-5


@dataclass(frozen=True)
class SeedRun:
    log: str  # the log file
    seed: int | None
    seed_from: str  # "log" | "file name" | ""
    val_bpb: float | None
    val_loss: float | None
    tag: str | None  # the scored line's tag
    train_seconds: float | None
    eval_seconds: float | None
    artifact_bytes: int | None
    line: int  # the scored line in the log (0: none)


@dataclass(frozen=True)
class Facts:
    track: str | None  # "record" | "non-record" | None (not under records/<track>/)
    runs: tuple[SeedRun, ...] = field(default_factory=tuple)

    @property
    def scored_runs(self) -> tuple[SeedRun, ...]:
        return tuple(r for r in self.runs if r.val_bpb is not None)

    @property
    def seeds(self) -> list[int]:
        """Distinct seeds of the runs that have a score, in log order."""
        out: list[int] = []
        for r in self.scored_runs:
            if r.seed is not None and r.seed not in out:
                out.append(r.seed)
        return out

    @property
    def mean_bpb(self) -> float | None:
        vals = [r.val_bpb for r in self.scored_runs]
        return statistics.fmean(vals) if vals else None

    def headline(self, claimed: float | None) -> str:
        """How a claimed score relates to the logged seed scores: "" (nothing to compare), "single", "mean",
        "best" (the best seed, not the mean) or "neither". Within half a unit of the 4th decimal, the precision
        records print."""
        values = [r.val_bpb for r in self.scored_runs]
        if claimed is None or not values:
            return ""
        if len(values) == 1:
            return "single"
        if abs(claimed - statistics.fmean(values)) <= HEADLINE_TOL:
            return "mean"
        return "best" if abs(claimed - min(values)) <= HEADLINE_TOL else "neither"

    @property
    def ratio(self) -> float | None:
        """r = val_loss / val_bpb of the scored lines (converts the nats margin to bpb), when they print both."""
        rs = [r.val_loss / r.val_bpb for r in self.scored_runs if r.val_loss and r.val_bpb]
        return statistics.fmean(rs) if rs else None

    def to_dict(self) -> dict:
        return {"track": self.track, "runs": [asdict(r) for r in self.runs]}


def track_of(folder: str) -> str | None:
    parts = folder.replace("\\", "/").split("/")
    if RECORD_TRACK in parts:
        return "record"
    if NON_RECORD_TRACK in parts:
        return "non-record"
    return None


def gather_facts(folder_name: str, results: dict[str, LogResult]) -> Facts:
    runs: list[SeedRun] = []
    for path in sorted(results):
        run = results[path].last
        if run is None:
            continue
        seed, seed_from = run.seed, "log" if run.seed is not None else ""
        if seed is None:
            seed = seed_from_name(path)
            seed_from = "file name" if seed is not None else ""
        scored = run.scored
        eval_s, _ = run.eval_seconds()
        runs.append(
            SeedRun(
                log=path,
                seed=seed,
                seed_from=seed_from,
                val_bpb=scored.val_bpb if scored else None,
                val_loss=scored.val_loss if scored else None,
                tag=scored.tag if scored else None,
                train_seconds=run.train_seconds,
                eval_seconds=eval_s,
                artifact_bytes=run.artifact_bytes,
                line=scored.lineno if scored else 0,
            )
        )
    return Facts(track_of(folder_name), tuple(runs))
