"""The one registry of every finding code.

A `Code` describes a finding kind once — code, kebab name, category, default severity, one-line summary,
documentation — and builds its findings (`CODE.finding(...)`), so no code is ever a string literal at the
place it is raised. Rule classes (`audit/rules/`) register their own `Code` when the class is defined; the
loader, folder, suppression and claims codes are declared here. `--list-rules`, `docs/rules/`, SARIF and
`--select`/`--ignore` all read this registry.

Categories: the violation vocabulary of docs/rulings.md §1 (`audit.challenge.CATEGORIES`), `UNANALYSED` for "the
auditor could not look at this" (the verdict is then at least `needs-human`), `UNCHECKED` for evidence it could not
check (no logs: never `clean`), or None for notes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable

from .challenge import RULES_URL, UNANALYSED, UNCHECKED
from .errors import InputError
from .findings import Confidence, Finding, Location, Reachability, Severity

SUBMISSION_PROCESS = "https://github.com/openai/parameter-golf#submission-process"


@dataclass(frozen=True)
class Code:
    """One finding kind. `finding()` fills in the code, category, severity and ruling it declares."""

    code: str  # "PG201"
    name: str  # "claim-not-in-logs"
    category: str | None
    severity: Severity
    summary: str  # one line, for tables and SARIF's shortDescription
    doc: str = ""  # longer documentation (markdown)
    ruling: str = ""
    origin: str = "check"  # "rule" (a class in audit/rules/) | "load" | "check" | "engine"

    @property
    def rule_id(self) -> str:
        return f"{self.code}/{self.name}"

    def finding(
        self,
        message: str,
        location: Location,
        *,
        severity: Severity | None = None,
        category: str | None | type[...] = ...,
        confidence: Confidence = Confidence.HIGH,
        evidence: Iterable[Location] = (),
        ruling: str | None = None,
        reachability: Reachability = Reachability.NOT_APPLICABLE,
        reachability_reason: str = "",
        fix_hint: str = "",
        legal_mechanism: str | None = None,
    ) -> Finding:
        return Finding(
            rule=self.rule_id,
            category=self.category if category is ... else category,
            severity=severity or self.severity,
            confidence=confidence,
            message=message,
            location=location,
            evidence=tuple(evidence),
            reachability=reachability,
            reachability_reason=reachability_reason,
            ruling=self.ruling if ruling is None else ruling,
            fix_hint=fix_hint,
            legal_mechanism=legal_mechanism,
        )


@dataclass
class Registry:
    """Every code, by code string; registering a code twice with different contents is a bug."""

    codes: dict[str, Code] = field(default_factory=dict)

    def add(self, code: Code) -> Code:
        old = self.codes.get(code.code)
        if old is not None and old != code:
            raise ValueError(f"finding code {code.code} registered twice ({old.name} / {code.name})")
        self.codes[code.code] = code
        return code

    def get(self, code: str) -> Code | None:
        return self.codes.get(code.split("/", 1)[0])

    def all(self) -> list[Code]:
        """Every code registered so far; `audit.rules.CODES` is the complete list (rules register on import)."""
        return sorted(self.codes.values(), key=lambda c: c.code)

    def of(self, finding: Finding) -> Code | None:
        return self.get(finding.code)


REGISTRY = Registry()


def select_codes(selectors: Iterable[str] | None, codes: Iterable[Code]) -> set[str] | None:
    """The codes a reviewer's `--select` / `--ignore` names, in any case: a code (`PG230`), a prefix (`PG1`,
    `pg2`), a rule id (`PG101/prequant-ttt`), a name (`prequant-ttt`) or a category (`prequant_ttt`).
    An unknown selector is a usage error with a suggestion, never a silent empty selection."""
    if selectors is None:
        return None
    codes = list(codes)
    out: set[str] = set()
    for raw in selectors:
        key = raw.strip().lower()
        if not key:
            continue
        hits = {
            c.code
            for c in codes
            if c.code.lower().startswith(key) or key in (c.rule_id.lower(), c.name, (c.category or "").lower())
        }
        if not hits:
            vocab = sorted(
                {c.code for c in codes} | {c.name for c in codes} | {c.category for c in codes if c.category}
            )
            near = difflib.get_close_matches(raw.strip(), vocab, n=1) or difflib.get_close_matches(key, vocab, n=1)
            hint = f"; did you mean {near[0]}?" if near else "; see pgolf-audit --list-rules"
            raise InputError(f"unknown rule selector {raw.strip()!r}{hint}")
        out |= hits
    return out


def _code(
    code: str,
    name: str,
    category: str | None,
    severity: Severity,
    summary: str,
    doc: str = "",
    ruling: str = "",
    origin: str = "check",
) -> Code:
    return REGISTRY.add(Code(code, name, category, severity, summary, doc.strip(), ruling, origin))


# --- the audit itself (PG000–PG009) -------------------------------------------------------------------------
INTERNAL_ERROR = _code(
    "PG000",
    "internal-error",
    UNANALYSED,
    Severity.WARNING,
    "A stage of the audit failed inside pgolf; that part of the audit is missing",
    "An exception inside pgolf is reported instead of losing the audit; the rest of the audit still ran. "
    "The verdict cannot be `clean` while a part is missing.",
    origin="engine",
)
CANNOT_PARSE = _code(
    "PG001",
    "cannot-parse",
    UNANALYSED,
    Severity.WARNING,
    "A Python source (as shipped or decoded) does not parse; its code rules were not run",
    "The code rules need an AST. A source that does not parse as Python 3 (Python 2 syntax, a truncated "
    "payload) is reported so a human reads it: the verdict is at least `needs-human`.",
    origin="load",
)
DECOMPRESSION_BOMB = _code(
    "PG002",
    "decompression-bomb",
    UNANALYSED,
    Severity.WARNING,
    "A compressed payload inflates past the decode budget; it was not analysed",
    "Self-extracting wrappers are decoded statically within a byte budget; a payload beyond it is not "
    "decoded, so the code it holds was not audited.",
    origin="load",
)
SCRIPT_THAT_RAN = _code(
    "PG003",
    "script-that-ran",
    None,
    Severity.INFO,
    "A non-entry script whose own messages are in the logs is audited too",
    "A nested copy of the record or a separate eval script is audited as well when the logs print at least "
    "two messages that only it prints: it produced (some of) the results.",
    origin="load",
)
NOTHING_TO_AUDIT = _code(
    "PG004",
    "nothing-to-audit",
    UNANALYSED,
    Severity.WARNING,
    "No Python entry script: there is no code to check",
    "A folder whose code the auditor cannot find is not clean: a human must look at what it ships.",
    origin="load",
)
SOURCE_NOT_READ = _code(
    "PG005",
    "source-not-read",
    UNANALYSED,
    Severity.WARNING,
    "A source was not analysed: too large, unreadable, not text, a notebook, a payload that could not be decoded, "
    "or a folder that was not listed",
    "Whatever code the auditor could not read — a Python file over the size bound, bytes that are not text, a "
    "Jupyter notebook, an `exec` of something it cannot evaluate statically, a folder nested past the depth "
    "bound or past the file cap (not listed at all) — may hold a mechanism; the verdict is at least `needs-human`.",
    origin="load",
)
NO_LOGS = _code(
    "PG006",
    "no-logs",
    UNCHECKED,
    Severity.WARNING,
    "No training log in the folder: the claimed score and the caps cannot be checked",
    "The logs are the evidence of what ran (docs/rulings.md §4, lesson 2); without them nothing claimed can be "
    "checked.",
    origin="load",
)
COLLAPSED = _code(
    "PG007",
    "more-of-the-same",
    None,
    Severity.INFO,
    "Many findings of one code: the first are listed, the rest are counted here",
    "Keeps reports readable and machine outputs bounded (a folder of 100,000 skipped files is one finding, "
    "not 100,000).",
    origin="engine",
)
LOGS_FROM_OTHER_CODE = _code(
    "PG008",
    "logs-from-other-code",
    UNANALYSED,
    Severity.WARNING,
    "The logs were printed by code that is not shipped (their scored line or mechanism messages, or their echo)",
    "Every log call of the shipped sources is rebuilt as a whole-line template (literal text and holes, conditional "
    "fragments included). A metric line, or two messages about a mechanism (TTT, caches and count tables, "
    "mixtures, calibration), that no template matches and that hold words found in no shipped source, or an echoed "
    "source mostly absent from the shipped files, show that other code produced the run. The shipped code did not "
    "produce the claimed number: a human must look, and the mechanism the logs show is judged from the logs.",
    RULES_URL,
    origin="check",
)

# --- the folder (PG010–PG019) ---------------------------------------------------------------------------------
MISSING_FILE = _code(
    "PG010",
    "missing-file",
    None,
    Severity.WARNING,
    "A file every record folder ships is missing (README.md, submission.json)",
    ruling=SUBMISSION_PROCESS,
)
SUBMISSION_JSON = _code(
    "PG011",
    "submission-json",
    None,
    Severity.WARNING,
    "submission.json does not parse as a JSON object, or lacks the usual keys",
    ruling=SUBMISSION_PROCESS,
)
FILE_SKIPPED = _code(
    "PG012",
    "file-skipped",
    None,
    Severity.INFO,
    "A file of the folder was not read (too large, a symlink leaving the folder, not a regular file)",
    ruling=SUBMISSION_PROCESS,
)
CODE_OVER_CAP = _code(
    "PG013",
    "code-over-cap",
    "size_over_cap",
    Severity.ERROR,
    "The code files alone are over the 16,000,000-byte cap",
    ruling=SUBMISSION_PROCESS,
)
AUTHOR_SUPPRESSION = _code(
    "PG020",
    "author-suppression",
    None,
    Severity.INFO,
    "An inline suppression comment (`# noqa`, `# nosec`, `# pgolf: ignore`) in submitted code",
    "Suppression comments in submitted code are reported, never obeyed (docs/rulings.md §4, lesson 10).",
)

# --- claims vs logs (PG201–PG299) ---------------------------------------------------------------------------
_CLAIMS_DOC = "Claims come from README.md and submission.json; the logs decide (docs/rulings.md §4, lesson 2)."
CLAIM_NOT_IN_LOGS = _code(
    "PG201",
    "claim-not-in-logs",
    None,
    Severity.WARNING,
    "The claimed val_bpb is not printed by any log line, nor the mean of the logged seeds",
    _CLAIMS_DOC,
    RULES_URL,
)
SEED_VALUE_MISMATCH = _code(
    "PG202",
    "seed-value-mismatch",
    None,
    Severity.WARNING,
    "A claimed per-seed score differs from that seed's log",
    _CLAIMS_DOC,
    RULES_URL,
)
SEED_LABEL_MISMATCH = _code(
    "PG203",
    "seed-label-mismatch",
    None,
    Severity.WARNING,
    "A log file's name says one seed, its contents another",
    _CLAIMS_DOC,
    RULES_URL,
)
DUPLICATE_RUN = _code(
    "PG204",
    "duplicate-run",
    None,
    Severity.WARNING,
    "Two logs claimed as different seeds hold the same run",
    _CLAIMS_DOC,
    RULES_URL,
)
MISSING_SEED_LOGS = _code(
    "PG205",
    "missing-seed-logs",
    None,
    Severity.WARNING,
    "Claimed seeds have no log in the folder",
    _CLAIMS_DOC,
    RULES_URL,
)
CLAIM_MATCHES_DIAGNOSTIC = _code(
    "PG206",
    "claim-matches-diagnostic",
    None,
    Severity.WARNING,
    "The claimed score matches only a diagnostic line, not a scored stage",
    _CLAIMS_DOC,
    RULES_URL,
)
CONCATENATED_RUNS = _code(
    "PG207",
    "concatenated-runs",
    None,
    Severity.INFO,
    "Several runs are appended to one log file; the last is taken",
    _CLAIMS_DOC,
    RULES_URL,
)
SIZE_OVER_CAP = _code(
    "PG210",
    "size-over-cap",
    "size_over_cap",
    Severity.ERROR,
    "The logged artifact (code + compressed model) is over 16,000,000 bytes",
    "The cap is decimal: 16,000,000 bytes, code plus compressed model.",
    RULES_URL,
)
SHIPPED_SIZE_OVER_CAP = _code(
    "PG211",
    "shipped-size-over-cap",
    "size_over_cap",
    Severity.ERROR,
    "The shipped model file plus code is over 16,000,000 bytes",
    ruling=RULES_URL,
)
BYTE_CLAIM_NOT_IN_LOGS = _code(
    "PG212",
    "byte-claim-not-in-logs",
    None,
    Severity.WARNING,
    "The claimed artifact size is not printed by any log",
    _CLAIMS_DOC,
    RULES_URL,
)
CLAIMED_SIZE_OVER_CAP = _code(
    "PG213",
    "claimed-size-over-cap",
    "size_over_cap",
    Severity.ERROR,
    "The submission's own claimed size is over 16,000,000 bytes",
    ruling=RULES_URL,
)
STALE_SIZE_LINE = _code(
    "PG214",
    "stale-size-line",
    None,
    Severity.INFO,
    "A size line over the cap belongs to an earlier packing than the code shipped",
    ruling=RULES_URL,
)
TRAIN_TIME_OVER_CAP = _code(
    "PG220",
    "train-time-over-cap",
    "time_over_cap",
    Severity.ERROR,
    "Training ran longer than 600 s on the logged clock",
    ruling=RULES_URL,
)
EVAL_TIME_OVER_CAP = _code(
    "PG221",
    "eval-time-over-cap",
    "time_over_cap",
    Severity.ERROR,
    "Evaluation ran longer than 600 s on the logged clock",
    ruling=RULES_URL,
)
EVAL_STAGES_OVER_CAP = _code(
    "PG222",
    "eval-stages-over-cap",
    "time_over_cap",
    Severity.ERROR,
    "The evaluation stages together ran longer than 600 s",
    ruling=RULES_URL,
)
WALLCLOCK_OVER_BUDGET = _code(
    "PG223",
    "wallclock-over-budget",
    None,
    Severity.WARNING,
    "The run's configured wall-clock budget exceeds 600 s",
    ruling=RULES_URL,
)
RUN_OFF_RECORD_HARDWARE = _code(
    "PG224",
    "run-off-record-hardware",
    "other",
    Severity.ERROR,
    "The record's run trained past 600 s on fewer than 8 GPUs",
    "The cap is 600 s of training on 8xH100. A run on fewer GPUs that trained longer is not shown to break it "
    "(its time, scaled to 8 GPUs, fits), but the claimed score comes from a run outside the record track's "
    "conditions.",
    RULES_URL,
)
VAL_SUBSET = _code(
    "PG230",
    "val-subset",
    "tokenizer_bpb_bug",
    Severity.ERROR,
    "The score covers a subset of the validation split (tokens x bpb do not give the split's bytes)",
    ruling=RULES_URL,
)
BYTE_ACCOUNTING = _code(
    "PG231",
    "byte-accounting",
    "tokenizer_bpb_bug",
    Severity.ERROR,
    "The byte count behind the score differs from the split's bytes",
    ruling=RULES_URL,
)
VAL_SPLIT_MISMATCH = _code(
    "PG232",
    "val-split-mismatch",
    "other",
    Severity.ERROR,
    "The validation data is not the challenge's split (its own export)",
    ruling=RULES_URL,
)
VAL_BYTES_DRIFT = _code(
    "PG233",
    "val-bytes-drift",
    None,
    Severity.INFO,
    "Implied validation bytes drift slightly, or an earlier official export was used",
    ruling=RULES_URL,
)
BYTES_PER_TOKEN_MISMATCH = _code(
    "PG234",
    "bytes-per-token-mismatch",
    None,
    Severity.WARNING,
    "Logged bytes per token do not match the tokenizer family",
    ruling=RULES_URL,
)

# --- record checks (audit/checks/record.py): is the claim a record? Never a rule category --------------------
RECORD_URL = "https://github.com/openai/parameter-golf#submission-process"
RECORD_SEED_COUNT = _code(
    "PG240",
    "record-seed-count",
    None,
    Severity.WARNING,
    "A record-track submission with fewer than 3 scored seed runs in its logs",
    "Records are accepted on the mean of at least three seeds, each with its own log. Fewer runs cannot show that "
    "the improvement is not seed noise; the statistics table needs them too.",
    RECORD_URL,
)
RECORD_BEST_SEED_HEADLINE = _code(
    "PG241",
    "record-best-seed-headline",
    None,
    Severity.WARNING,
    "The headline score is the best seed, not the mean of the seeds",
    "The record's number is the mean over its seed runs. A headline equal to the best seed (and not to the mean) "
    "overstates the improvement.",
    RECORD_URL,
)
RECORD_TRACK_MISMATCH = _code(
    "PG242",
    "record-track-mismatch",
    None,
    Severity.WARNING,
    "The folder is in the record track but the submission calls itself non-record",
    "Non-record submissions belong in `records/track_non_record_16mb/`; a folder in the 10-minute record track is "
    "read as a claim to the leaderboard.",
    RECORD_URL,
)
RECORD_NOT_BETTER = _code(
    "PG243",
    "record-not-better",
    None,
    Severity.WARNING,
    "The claimed score does not beat the leaderboard's best at the base commit",
    "A record must improve on the best leaderboard row of the README the PR was written against (its base commit).",
    RECORD_URL,
)
RECORD_SIGNIFICANCE = _code(
    "PG244",
    "record-significance",
    None,
    Severity.INFO,
    "pgolf-stats against the leaderboard's best row: the progression and written verdicts",
    "One-sided tests of the seed runs against the best leaderboard row (a constant, its seeds not being in the "
    "folder): the progression rule (p < 0.25, no margin) and the written rule (0.005 nats, p < 0.01). The review "
    "comment embeds the table.",
    RECORD_URL,
)
