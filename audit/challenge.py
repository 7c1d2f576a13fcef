"""The challenge contract in one place (RULES.md), shared by every part of pgolf."""

ARTIFACT_CAP_BYTES = 16_000_000  # decimal bytes: code + compressed model
TRAIN_CAP_SECONDS = 600.0
EVAL_CAP_SECONDS = 600.0

# The `categories` vocabulary of RULES.md, in its order.
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

VERDICTS = ("flag", "legal_ttt", "clean", "needs-human")

# Full validation split sizes (first 50,000 documents) per tokenizer family.
VAL_TOKENS = {"sp1024": 62_021_632, "sp8192": 40_540_160}

RECORD_ROOTS = ("records/track_10min_16mb/", "records/track_non_record_16mb/", "records/")

RULES_URL = "https://github.com/openai/parameter-golf#rules"
FIELD_GUIDE_URL = "https://github.com/openai/parameter-golf/issues/1017"

# Validation exports that were official at some point: the launch-day sp1024 split was re-exported a day later
# (first 50,000 documents, 62,021,632 tokens). Records scored on it were accepted; report, do not flag.
HISTORICAL_VAL_TOKENS = {63_779_840: "the launch-day sp1024 validation export"}
