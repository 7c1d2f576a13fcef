"""The challenge contract in one place (docs/rulings.md §5), shared by every part of pgolf."""

import math
from dataclasses import dataclass

ARTIFACT_CAP_BYTES = 16_000_000  # decimal bytes: code + compressed model
TRAIN_CAP_SECONDS = 600.0
EVAL_CAP_SECONDS = 600.0

# The `categories` vocabulary (docs/rulings.md §1), in its order.
CATEGORIES = (
    "prequant_ttt",
    "ngram_target_key",
    "ngram_unnormalized",
    "slot",
    "multipass_rescore",
    "val_calibration",
    "train_data_at_eval",
    "size_over_cap",
    "time_over_cap",
    "tokenizer_bpb_bug",
    "other",
)

# Finding categories outside the violation vocabulary: a part the auditor could not analyse keeps any verdict
# off `clean` and `legal_ttt`; evidence it could not check (no logs) keeps the verdict off `clean`.
UNANALYSED = "unanalysed"
UNCHECKED = "unchecked"

RULES_URL = "https://github.com/openai/parameter-golf#rules"

LN2 = math.log(2.0)

# Bytes of the validation split (first 50,000 documents) implied by every correct tokenizer on `main`:
# val_tokens x (val_loss / val_bpb) / ln 2. sp1024, sp4096, sp8192, byte-level and CaseOps agree to 0.005 %.
VAL_SPLIT_BYTES = 151_080_000


@dataclass(frozen=True)
class TokenizerFamily:
    """The fixed numbers of one tokenizer family on the full validation split (docs/rulings.md §5)."""

    name: str
    val_tokens: int

    @property
    def bytes_per_token(self) -> float:
        return VAL_SPLIT_BYTES / self.val_tokens

    @property
    def ratio(self) -> float:
        """val_loss / val_bpb on the full split (nats per token over bits per byte) = bytes per token x ln 2."""
        return self.bytes_per_token * LN2


TOKENIZER_FAMILIES: dict[str, TokenizerFamily] = {
    f.name: f
    for f in (
        TokenizerFamily("sp1024", 62_021_632),
        TokenizerFamily("sp4096", 45_514_752),
        TokenizerFamily("sp8192", 40_540_160),
        TokenizerFamily("sp8192-caseops", 47_851_520),
        TokenizerFamily("byte", 151_080_000),
    )
}
# The family a logged vocabulary size names.
VOCAB_FAMILY = {"1024": "sp1024", "4096": "sp4096", "8192": "sp8192", "256": "byte", "260": "byte"}

# Validation exports that were official at some point: the launch-day sp1024 split was re-exported a day later
# (first 50,000 documents, 62,021,632 tokens). Records scored on it were accepted; report, do not flag.
HISTORICAL_VAL_TOKENS = {63_779_840: "the launch-day sp1024 validation export"}
