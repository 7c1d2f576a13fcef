"""Seeds: the headline claim and each claimed seed against the logs, seed labels, duplicate runs, missing logs."""

from __future__ import annotations

from pathlib import PurePosixPath

from ... import codes
from ...findings import Location, Severity
from ...logs import Metric, RunLog
from .base import CheckerBase, fmt_claim, loc_claim, loc_line, seed_from_name
from .model import ClaimedValue, matching_metrics, mean_matches


class SeedChecks(CheckerBase):
    def runs_for_seed(self, seed: int) -> list[tuple[str, RunLog]]:
        return [(p, r) for p, r in self.runs if r.seed == seed]

    def check_headline(self) -> tuple[str | None, float | None]:
        c = self.claims.headline_bpb or self.claims.readme_bpb
        if c is None:
            return None, None
        hits = matching_metrics(c, self.runs)
        if hits:
            scored = [h for h in hits if not h[1].diagnostic]
            path, m = (scored or hits)[-1]
            if m.diagnostic:
                self.add(
                    codes.CLAIM_MATCHES_DIAGNOSTIC,
                    f"claimed val_bpb {fmt_claim(c)} matches only a diagnostic line ({m.tag}), not a scored stage",
                    loc_line(path, m.lineno, m.line),
                    Severity.WARNING,
                    evidence=(loc_claim(c),),
                )
            return m.tag, c.value
        means = self._seed_means()
        for label, mean, _runs in means:
            if mean_matches(c, mean):
                return f"mean of {label}", c.value
        subset = self.headline_mean(c)
        if subset:
            tag, runs = subset
            seeds = ", ".join(str(k) for k in runs if isinstance(k, int))
            return f"mean of {len(runs)} logged runs" + (f" (seeds {seeds})" if seeds else "") + f" ({tag})", c.value
        ev = tuple(loc_line(p, r.scored.lineno, r.scored.line, "scored line") for p, r in self.final if r.scored)[:6]
        self.add(
            codes.CLAIM_NOT_IN_LOGS,
            f"claimed val_bpb {fmt_claim(c)} is not printed by any log line, nor the mean of any set of the logged runs"
            + (f" (seed means: {', '.join(f'{m:.6f}' for _, m, _ in means)})" if means else ""),
            loc_claim(c),
            Severity.WARNING,
            evidence=ev,
        )
        return None, c.value

    def _seed_means(self) -> list[tuple[str, float, list]]:
        """Means of the per-seed values the logs support: scored lines, and the lines the claims point at."""
        out = []
        by_seed: dict[int, float] = {}
        for _, r in self.final:
            if r.seed is not None and r.scored is not None:
                by_seed[r.seed] = r.scored.val_bpb
        if by_seed:
            out.append((f"{len(by_seed)} logged seeds", sum(by_seed.values()) / len(by_seed), list(by_seed)))
        claimed: dict[int, float] = {}
        for s, vals in self.claims.per_seed_bpb.items():
            for v in vals:
                hits = matching_metrics(v, self.runs_for_seed(s) or self.runs)
                if hits:
                    claimed[s] = hits[-1][1].val_bpb
                    break
        if claimed and claimed != by_seed:
            out.append((f"{len(claimed)} claimed seeds", sum(claimed.values()) / len(claimed), list(claimed)))
        if len(self.claims.per_seed_bpb) > 0:
            vals = [v[0].value for v in self.claims.per_seed_bpb.values() if v]
            if vals:
                out.append((f"{len(vals)} claimed per-seed values", sum(vals) / len(vals), []))
        return out

    def check_per_seed(self) -> dict[int, float]:
        per_seed: dict[int, float] = {}
        logged_seeds = {r.seed for _, r in self.runs if r.seed is not None}
        for seed, vals in sorted(self.claims.per_seed_bpb.items()):
            runs = self.runs_for_seed(seed)
            if not runs:
                continue  # reported once by check_seed_coverage
            own = {p for p, _ in runs}
            missing: list[ClaimedValue] = []
            elsewhere: list[tuple[str, Metric]] = []
            for v in vals:
                hits = matching_metrics(v, runs)
                if hits:
                    per_seed.setdefault(seed, hits[-1][1].val_bpb)
                    continue
                missing.append(v)
                elsewhere.extend(h for h in matching_metrics(v, self.runs) if h[0] not in own)
            if not missing:
                continue
            path, run = runs[-1]
            ev = [loc_claim(v) for v in missing]
            if run.scored:
                ev.append(loc_line(path, run.scored.lineno, run.scored.line, "scored line of this seed"))
            ev.extend(loc_line(p, m.lineno, m.line, "value found in another seed's log") for p, m in elsewhere[:2])
            self.add(
                codes.SEED_VALUE_MISMATCH,
                f"seed {seed}: claimed {', '.join(fmt_claim(v) for v in missing)} not printed by the log of that seed"
                + (f" (the value appears in {elsewhere[0][0]})" if elsewhere else "")
                + (f"; its scored line says {run.scored.val_bpb} ({run.scored.tag})" if run.scored else ""),
                loc_line(path, run.scored.lineno, run.scored.line) if run.scored else loc_claim(missing[0]),
                Severity.WARNING,
                evidence=tuple(ev),
            )
        for _, r in self.final:
            if r.seed is not None and r.scored is not None and r.seed not in per_seed and r.seed in logged_seeds:
                per_seed.setdefault(r.seed, r.scored.val_bpb)
        return per_seed

    def check_seed_labels(self) -> None:
        for path, res in self.logs.items():
            named = seed_from_name(path)
            last = res.last
            if named is None or last is None or last.seed is None or named == last.seed:
                continue
            if any(r.seed == named for r in res.runs):
                continue
            self.add(
                codes.SEED_LABEL_MISMATCH,
                f"{PurePosixPath(path).name} is labelled seed {named} but the run prints seed {last.seed}",
                loc_line(path, last.seed_line, "", "printed seed"),
                Severity.WARNING,
            )

    def check_duplicates(self) -> None:
        seen: dict[tuple, tuple[str, RunLog]] = {}
        for path, r in self.final:
            m = r.scored
            if m is None or not m.exact:
                continue
            key = (m.tag, m.val_bpb, m.val_loss, r.train_time_ms, r.artifact_bytes)
            if key in seen:
                p0, r0 = seen[key]
                labels = {seed_from_name(p0), seed_from_name(path)} - {None}
                distinct = len(labels) > 1 or (r0.seed != r.seed)
                self.add(
                    codes.DUPLICATE_RUN,
                    f"{path} repeats the run of {p0} (same scored line {m.val_bpb}, same train time and size)"
                    + ("; they are presented as different seeds" if distinct else "; one run shipped twice"),
                    loc_line(path, m.lineno, m.line),
                    Severity.WARNING if distinct else Severity.INFO,
                    evidence=(loc_line(p0, r0.scored.lineno, r0.scored.line, "same line"),),
                )
            else:
                seen[key] = (path, r)

    def check_seed_coverage(self) -> None:
        claimed = list(dict.fromkeys(self.claims.seeds))
        if not claimed:
            return
        logged = {r.seed for _, r in self.final if r.seed is not None and (r.scored is not None or r.has_content)}
        missing = [s for s in claimed if s not in logged]
        if missing:
            c = self.claims.headline_bpb or self.claims.readme_bpb
            where = self.sub.submission_json_path or self.sub.find("README.md") or "."
            self.add(
                codes.MISSING_SEED_LOGS,
                f"{len(claimed)} seed(s) claimed ({', '.join(map(str, claimed))}) but no log prints seed "
                f"{', '.join(map(str, missing))} ({len(self.logs)} log file(s), seeds logged: "
                f"{', '.join(map(str, sorted(logged))) or 'none'})",
                loc_claim(c) if c else Location(path=where),
                Severity.WARNING,
            )

    # caps -----------------------------------------------------------------------------------------------------
    def check_runs(self) -> None:
        for p, res in self.logs.items():
            if len(res.runs) > 1:
                self.add(
                    codes.CONCATENATED_RUNS,
                    f"{p} holds {len(res.runs)} runs appended to one file; the last (from line "
                    f"{res.runs[-1].start_line}) is taken",
                    Location(path=p, start_line=res.runs[-1].start_line, end_line=res.runs[-1].start_line),
                    Severity.INFO,
                )
