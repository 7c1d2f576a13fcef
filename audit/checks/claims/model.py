"""What a submission claims, the summary of claims vs logs, and how a claimed number matches a logged one."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from itertools import combinations

from ...findings import Finding
from ...logs import Metric, RunLog


@dataclass(frozen=True)
class ClaimedValue:
    value: float
    text: str  # the number as written (decimals matter for matching)
    path: str
    line: int
    snippet: str
    key: str = ""

    @property
    def decimals(self) -> int:
        return len(self.text.split(".", 1)[1]) if "." in self.text else 0


@dataclass
class Claims:
    headline_bpb: ClaimedValue | None = None
    readme_bpb: ClaimedValue | None = None
    total_bytes: ClaimedValue | None = None
    code_bytes: ClaimedValue | None = None
    seeds: list[int] = field(default_factory=list)
    per_seed_bpb: dict[int, list[ClaimedValue]] = field(default_factory=dict)
    per_seed_bytes: dict[int, ClaimedValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimsSummary:
    claimed_bpb: float | None
    matched_tag: str | None
    seeds: list[int]
    per_seed: dict[int, float]
    n_logs: int
    artifact_bytes: int | None
    code_bytes: int | None
    train_seconds: float | None
    eval_seconds: float | None
    bytes_per_token: float | None
    tokenizer: str | None
    val_tokens: int | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_seed"] = {str(k): v for k, v in self.per_seed.items()}
        return d

    def line(self) -> str:
        """One-line summary for the review comment."""
        parts = [f"claimed {self.claimed_bpb}" if self.claimed_bpb is not None else "no claimed val_bpb"]
        if self.seeds:
            parts.append(f"seeds {', '.join(map(str, self.seeds))}")
        if self.artifact_bytes is not None:
            parts.append(f"artifact {self.artifact_bytes:,} B")
        if self.train_seconds is not None:
            parts.append(f"train {self.train_seconds:.1f} s")
        if self.eval_seconds is not None:
            parts.append(f"eval {self.eval_seconds:.1f} s")
        return " · ".join(parts)


@dataclass
class ClaimsReport:
    findings: list[Finding] = field(default_factory=list)
    summary: ClaimsSummary | None = None
    claims: Claims | None = None


# --- number matching ----------------------------------------------------------------------------------------
def value_matches(claim: ClaimedValue, value: float) -> bool:
    """The claim is the logged value rounded or truncated to the claim's decimals."""
    d = claim.decimals
    if d == 0:
        return False
    scale = 10.0**d
    return (
        abs(round(value * scale) - round(claim.value * scale)) == 0
        or math.floor(value * scale + 1e-9) == round(claim.value * scale)
        or abs(value - claim.value) < 1e-9
    )


def mean_matches(claim: ClaimedValue, mean: float) -> bool:
    """A claimed mean: the logged mean rounded or truncated to the claim's decimals, or within half a unit of them."""
    return value_matches(claim, mean) or abs(mean - claim.value) <= 0.5 * 10.0**-claim.decimals + 1e-9


# Every subset up to 8 runs (247 sets); past it only the sets that leave out at most 3 runs, so that a claim with
# few decimals is not "supported" by one of thousands of means by chance.
EXHAUSTIVE_SUBSETS = 8


def matching_subset(claim: ClaimedValue, values: dict[Hashable, float]) -> tuple[Hashable, ...] | None:
    """The largest set of two or more runs whose mean the claim quotes, or None.

    A README may quote the mean of 3 of 5 logged seeds (re-runs, a seed dropped); every subset is tried before
    the claim is called unsupported. Larger sets first: the mean of all the runs is the likeliest reading."""
    if claim.decimals == 0 or len(values) < 2:
        return None
    keys = list(values)
    n = len(keys)
    smallest = 2 if n <= EXHAUSTIVE_SUBSETS else n - 3
    for k in range(n, smallest - 1, -1):
        for subset in combinations(keys, k):
            if mean_matches(claim, sum(values[x] for x in subset) / k):
                return subset
    return None


def matching_metrics(claim: ClaimedValue, runs: list[tuple[str, RunLog]]) -> list[tuple[str, Metric]]:
    return [(p, m) for p, r in runs for m in r.metrics if value_matches(claim, m.val_bpb)]
