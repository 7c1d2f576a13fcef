"""Multi-seed significance for Parameter Golf records (docs/stats.md).

Modules, each importing only those listed before it:

* `core`    - units and r = val_loss/val_bpb, `Margin`, `Summary`, `Reference`, the t tests
              (`run_test` -> `TestResult`) and the two acceptance rules (`written_rule`,
              `progression_rule` -> `RuleVerdict`). numpy/scipy only.
* `claims`  - a stated claim ("t=16.04 df=2 p<0.001") parsed (`parse_claim` -> `ParsedClaim`) and
              checked against the seeds (`check_claim` -> `ClaimCheck`); the corpus's case rows.
* `report`  - `compare()` -> `StatsReport` (both verdicts and the table the CLI, the verifier and the
              review comment share) and its console, Markdown and JSON renderings.
* `cli`     - `pgolf-stats` (not imported here: it reads record folders through the auditor).
"""

from .claims import (
    ClaimCheck,
    ConversionCheck,
    NumberCheck,
    ParsedClaim,
    StatsCase,
    check_claim,
    check_conversion,
    default_margins,
    parse_case,
    parse_claim,
)
from .core import (
    NO_MARGIN,
    TOKENIZER_RATIOS,
    WRITTEN_MARGIN,
    Margin,
    Reference,
    RuleVerdict,
    StatsError,
    Summary,
    TestResult,
    progression_rule,
    ratio_of,
    require_comparable,
    run_test,
    to_bpb,
    to_nats,
    tokenizer_ratio,
    written_rule,
)
from .report import (
    SCHEMA_VERSION,
    StatsReport,
    compare,
    render_console,
    render_json,
    render_markdown,
)

__all__ = [
    "NO_MARGIN",
    "SCHEMA_VERSION",
    "TOKENIZER_RATIOS",
    "WRITTEN_MARGIN",
    "ClaimCheck",
    "ConversionCheck",
    "Margin",
    "NumberCheck",
    "ParsedClaim",
    "Reference",
    "RuleVerdict",
    "StatsCase",
    "StatsError",
    "StatsReport",
    "Summary",
    "TestResult",
    "check_claim",
    "check_conversion",
    "compare",
    "default_margins",
    "parse_case",
    "parse_claim",
    "progression_rule",
    "ratio_of",
    "render_console",
    "render_json",
    "render_markdown",
    "require_comparable",
    "run_test",
    "to_bpb",
    "to_nats",
    "tokenizer_ratio",
    "written_rule",
]
