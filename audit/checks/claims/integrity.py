"""Validation integrity: val tokens x val_loss / val_bpb must give the bytes of the challenge's split.

The direction of a deviation decides the category, whatever the tokenizer: more bytes than the split holds is
an overcount (`tokenizer_bpb_bug`); fewer bytes from fewer tokens is a subset or another export of the split
(`other` when the folder builds its own shards from another document count)."""

from __future__ import annotations

from ... import codes
from ...challenge import (
    HISTORICAL_VAL_TOKENS,
    LN2,
    TOKENIZER_FAMILIES,
    VAL_SPLIT_BYTES,
    VOCAB_FAMILY,
)
from ...codes import Code
from ...findings import Confidence, Location, Severity
from ...logs import Metric, RunLog
from .base import CheckerBase, line_at, loc_line
from .extract import VAL_DOC_COUNT, VAL_DOCS, WRITES_VAL_SHARDS

INTEGRITY_ERROR = 0.005  # relative deviation of the implied split bytes that proves a subset / bad accounting
INTEGRITY_NOTE = 0.0005  # below this the numbers agree (CaseOps sidecar vs LUT differ by 0.003 %)
TRUNCATION_SLACK = 65_536  # tokens an eval may drop to round the split down to whole sequences


class IntegrityChecks(CheckerBase):
    def integrity(self) -> tuple[float | None, str | None, int | None]:
        """val_tokens x val_loss/val_bpb must equal the bytes of the split; else a subset or changed accounting."""
        best_ratio = best_family = best_tokens = None
        reported = False
        for p, r in self.final:
            m = _ratio_metric(r)
            if m is None:
                continue
            ratio = m.val_loss / m.val_bpb
            tol = max(INTEGRITY_NOTE, 0.5 * 10.0**-m.decimals / m.val_bpb + 0.5 * 10.0**-m.decimals / m.val_loss)
            bpt = ratio / LN2
            family = _family(r, ratio)
            if best_ratio is None:
                best_ratio, best_family, best_tokens = bpt, family, r.val_tokens
            if reported:
                continue
            loc = loc_line(p, m.lineno, m.line, "val_loss / val_bpb")
            if r.val_tokens:
                implied = r.val_tokens * bpt
                dev = implied / VAL_SPLIT_BYTES - 1.0
                if abs(dev) <= tol:
                    continue
                vt_loc = loc_line(p, r.val_tokens_line, line_at(self.logs[p], r.val_tokens_line), "val tokens")
                nums = (
                    f"val_tokens {r.val_tokens:,} x {bpt:.5f} bytes/token = {implied / 1e6:.3f} M bytes, "
                    f"expected {VAL_SPLIT_BYTES / 1e6:.2f} M ({dev:+.2%})"
                )
                full = min((f.val_tokens for f in TOKENIZER_FAMILIES.values()), key=lambda n: abs(n - r.val_tokens))
                if abs(full - r.val_tokens) <= TRUNCATION_SLACK and abs(dev) > INTEGRITY_ERROR:
                    self._integrity(
                        codes.BYTE_ACCOUNTING,
                        f"the byte count differs from the split's: {nums}; "
                        "the token count is the full split's, so bytes are counted differently",
                        vt_loc,
                        (loc,),
                        "tokenizer_bpb_bug",
                    )
                elif r.val_tokens in HISTORICAL_VAL_TOKENS:
                    self.add(
                        codes.VAL_BYTES_DRIFT,
                        f"validation split of an earlier export ({HISTORICAL_VAL_TOKENS[r.val_tokens]}): {nums}",
                        vt_loc,
                        Severity.INFO,
                        evidence=(loc,),
                    )
                elif dev > INTEGRITY_ERROR:
                    # more bytes than the split holds: no export of the 50,000 documents has them, whatever the
                    # tokenizer and however many tokens it makes of them
                    self._integrity(
                        codes.BYTE_ACCOUNTING,
                        f"the score divides by more bytes than the validation split holds: {nums}; "
                        "the byte count is inflated (byte-fallback, ▁ or space bytes counted wrongly)",
                        vt_loc,
                        (loc,),
                        "tokenizer_bpb_bug",
                    )
                elif r.val_tokens < full - TRUNCATION_SLACK and dev < -INTEGRITY_ERROR:
                    builder = self._val_builder()
                    if builder:  # fewer documents exported by the submission's own script: not the challenge's split
                        self._integrity(
                            codes.VAL_SPLIT_MISMATCH,
                            f"the score covers a subset of the validation "
                            f"split ({nums}), and {builder} builds the validation shards itself: a validation "
                            "split other than the challenge's first 50,000 documents",
                            vt_loc,
                            (loc,),
                            "other",
                        )
                    else:
                        self._integrity(
                            codes.VAL_SUBSET,
                            f"the score covers a subset of the validation split: {nums}",
                            vt_loc,
                            (loc,),
                            "tokenizer_bpb_bug",
                        )
                elif dev < -INTEGRITY_ERROR:
                    self._integrity(
                        codes.VAL_SPLIT_MISMATCH,
                        f"the validation data is not the challenge's split (fewer bytes): {nums}",
                        vt_loc,
                        (loc,),
                        "other",
                    )
                else:
                    self.add(
                        codes.VAL_BYTES_DRIFT,
                        f"implied validation bytes drift slightly: {nums}",
                        vt_loc,
                        Severity.INFO,
                        evidence=(loc,),
                    )
                reported = True
            elif family is not None:
                expect = TOKENIZER_FAMILIES[family].ratio
                dev = ratio / expect - 1.0
                if abs(dev) > max(tol, INTEGRITY_ERROR):
                    self.add(
                        codes.BYTES_PER_TOKEN_MISMATCH,
                        f"val_loss/val_bpb = {ratio:.5f} ({bpt:.4f} bytes/token) but the {family} tokenizer gives "
                        f"{expect:.5f} on the full split ({dev:+.2%}); the log prints no token count, so a subset or "
                        "changed byte accounting cannot be told apart",
                        loc,
                        Severity.WARNING,
                        "tokenizer_bpb_bug",
                        confidence=Confidence.MEDIUM,
                    )
                    reported = True
        return best_ratio, best_family, best_tokens

    def _val_builder(self) -> str | None:
        """A script of the folder that writes validation shards (`fineweb_val_000000.bin`) itself, from a number of
        documents other than the challenge's 50,000 (`--val-docs 10000`)."""
        for path in sorted(self.sub.files):
            if not path.endswith(".py") or path in self.sources.code_files:
                continue
            text = self.sub.text(path)
            if not WRITES_VAL_SHARDS.search(text):
                continue
            counts = {int(m.group(1).replace("_", "")) for m in VAL_DOC_COUNT.finditer(text)}
            if counts and VAL_DOCS not in counts:
                return path
        return None

    def _integrity(self, code: Code, msg: str, loc: Location, ev: tuple[Location, ...], category: str) -> None:
        if self.non_record and code is codes.VAL_SUBSET:
            self.add(
                code, msg + " (non-record track: not comparable to the leaderboard)", loc, Severity.WARNING, evidence=ev
            )
        else:
            self.add(code, msg, loc, Severity.ERROR, category, evidence=ev)


def _ratio_metric(r: RunLog) -> Metric | None:
    """The most precise metric with both numbers (the scored one when it has them)."""
    cands = [m for m in r.metrics if m.val_loss and m.val_bpb > 0 and m.val_loss > 0]
    if not cands:
        return None
    if r.scored is not None and r.scored in cands and r.scored.decimals >= 6:
        return r.scored
    return max(cands, key=lambda m: (m.decimals, m.lineno))


def _family(r: RunLog, ratio: float) -> str | None:
    if r.val_tokens:
        name = min(TOKENIZER_FAMILIES, key=lambda k: abs(TOKENIZER_FAMILIES[k].val_tokens - r.val_tokens))
        if abs(TOKENIZER_FAMILIES[name].val_tokens - r.val_tokens) <= TRUNCATION_SLACK:
            return name
    vocab = r.hyperparams.get("vocab_size")
    if vocab in VOCAB_FAMILY:
        fam = VOCAB_FAMILY[vocab]
        if fam == "sp8192":  # CaseOps shares the vocabulary size; pick the nearer ratio
            caseops = TOKENIZER_FAMILIES["sp8192-caseops"].ratio
            plain = TOKENIZER_FAMILIES["sp8192"].ratio
            return "sp8192-caseops" if abs(ratio - caseops) < abs(ratio - plain) else "sp8192"
        return fam
    return None
