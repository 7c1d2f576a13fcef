"""What a submission claims (README.md, submission.json) against what its logs show.

Claims come from every submission.json layout seen on `main` (flat keys, `seed_results` dicts, `seeds` +
`seed_scores` lists, nested re-run blocks) and from the README headline and per-seed tables (extract.py).
Each claimed number is matched against *all* metric lines of the logs (docs/logs.md §4: tags lie, the scored
line is not always the last one) and the matching tag is reported (seeds.py). Cap checks (16,000,000 bytes,
600 s train, 600 s eval; caps.py) and the validation-integrity check (val tokens x val_loss/val_bpb = bytes
of the split; integrity.py) use the logs only.

Codes PG201…PG299. Severity: `error` only for a broken cap or an integrity break the logs prove,
`warning` for a discrepancy a human must look at, `info` otherwise.
"""

from __future__ import annotations

from .check import ClaimsChecker, check_claims
from .extract import SCORE_KEYS, claims_from_json, claims_from_readme, extract_claims
from .model import ClaimedValue, Claims, ClaimsReport, ClaimsSummary, matching_metrics, value_matches

__all__ = [
    "SCORE_KEYS",
    "ClaimedValue",
    "Claims",
    "ClaimsChecker",
    "ClaimsReport",
    "ClaimsSummary",
    "check_claims",
    "claims_from_json",
    "claims_from_readme",
    "extract_claims",
    "matching_metrics",
    "value_matches",
]
