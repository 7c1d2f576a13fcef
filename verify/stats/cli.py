"""pgolf-stats: multi-seed significance for a Parameter Golf record, both verdicts, claim checks.

    pgolf-stats --new 1.1453 1.1490 1.1498 --sota 1.1748 --tokenizer sp1024
    pgolf-stats --new … --baseline-seeds 1.0581 1.0573 1.0574 --check-claim "t=3.4 df=3.9 p=0.014"
    pgolf-stats records/…/2026-04-09_X            # seeds and r from the folder's logs
    pgolf-stats --cases dev_stats_cases.tsv        # a file of claims to check

Exit codes: 0 the deciding rule passes and every checked claim agrees; 1 otherwise (an undecided
rule counts as not passing); 2 usage or unreadable input.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click
from rich.console import Console

from audit.clirun import VERSION, run_click
from audit.errors import InputError
from audit.load.folder import load_folder
from audit.logs import parse_log

from .claims import check_claim, default_margins, parse_case, parse_values
from .core import (
    TOKENIZER_RATIOS,
    Margin,
    Reference,
    StatsError,
    decimals_of,
    moment_sample,
    ratio_of,
    require_comparable,
    tokenizer_ratio,
)
from .report import (
    case_rows,
    compare,
    render_cases,
    render_console,
    render_json,
    render_markdown,
)

LIST_OPTIONS = ("--new", "--baseline-seeds")
RATIO_TOLERANCE = 1e-5  # relative; 8-dp log lines agree on r to ~1e-7


class _ListCommand(click.Command):
    """Lets `--new 1.1453 1.1490 1.1498` take several values (click options take one)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            out.append(arg)
            i += 1
            if arg in LIST_OPTIONS:
                vals = []
                while i < len(args) and not args[i].startswith("--"):
                    vals.append(args[i])
                    i += 1
                out.append(",".join(vals))
        return super().parse_args(ctx, out)


@dataclass(frozen=True)
class FolderScores:
    """Per-seed scores read from a record folder's logs."""

    values: tuple[float, ...]
    decimals: tuple[int, ...]
    seeds: tuple[int | None, ...]
    files: tuple[str, ...]
    ratio: float | None
    warnings: tuple[str, ...]


def scores_from_folder(path: str) -> FolderScores:
    """Each log's last run (as the auditor's log parser reads it): its scored val_bpb, its seed, and r
    from the same line."""
    try:
        sub = load_folder(path)
    except InputError as e:
        raise StatsError(str(e)) from None
    values, decs, seeds, files, ratios, warnings = [], [], [], [], [], []
    for p in sub.log_files:
        run = parse_log(sub.text(p), p).last
        if run is None or run.scored is None:
            warnings.append(f"{p}: no scored val_bpb line; skipped")
            continue
        m = run.scored
        values.append(m.val_bpb)
        decs.append(m.decimals or decimals_of(m.val_bpb))
        seeds.append(run.seed)
        files.append(p)
        if m.val_loss:
            ratios.append(ratio_of(m.val_loss, m.val_bpb))
    if not values:
        raise StatsError(f"{path}: no log with a scored val_bpb line")
    seen: dict[int, str] = {}
    for s, f in zip(seeds, files):
        if s is not None and s in seen:
            warnings.append(f"seed {s} appears in both {seen[s]} and {f}")
        elif s is not None:
            seen[s] = f
    ratio = None
    if ratios:
        ratio = sum(ratios) / len(ratios)
        if max(ratios) - min(ratios) > RATIO_TOLERANCE * ratio:
            warnings.append(
                f"r = val_loss/val_bpb differs between logs ({min(ratios):.6f}..{max(ratios):.6f}): "
                "different val set, subset eval or byte accounting?"
            )
    return FolderScores(tuple(values), tuple(decs), tuple(seeds), tuple(files), ratio, tuple(warnings))


def _floats(text: str | None, what: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    if not text:
        return (), ()
    try:
        return parse_values(text)
    except StatsError:
        raise StatsError(f"{what}: not a list of numbers: {text!r}") from None


def _summary(text: str, option: str = "--baseline-summary") -> tuple[float, float, int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        mean, sd, n = float(parts[0]), float(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        raise StatsError(f"{option} {text!r}: expected mean,sd,n (e.g. 1.0607,0.0009,6)") from None
    if len(parts) != 3:
        raise StatsError(f"{option} {text!r}: expected exactly mean,sd,n")
    return mean, sd, n


def _emit(text: str, output: str | None) -> None:
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise StatsError(f"cannot write {output}: {e.strerror}") from None
    else:
        sys.stdout.write(text)


@click.command(cls=_ListCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pgolf-stats")
@click.argument("path", required=False, type=click.Path())
@click.option("--new", "new_text", help="New record's per-seed scores (space or comma separated).")
@click.option(
    "--new-summary", help="New record as mean,sd,n when only summary statistics are known (e.g. 1.0807,0.0004,3)."
)
@click.option("--sota", type=float, help="The SOTA value as printed (one-sample reference).")
@click.option("--baseline-seeds", "baseline_text", help="Previous record's per-seed scores.")
@click.option("--baseline-summary", help="Previous record as mean,sd,n (Welch from summary statistics).")
@click.option("--baseline-folder", type=click.Path(), help="Previous record's folder: seeds from its logs.")
@click.option("--ratio", type=float, help="r = val_loss/val_bpb of the new record (converts nats <-> bpb).")
@click.option("--tokenizer", help=f"Take r from a known tokenizer: {', '.join(TOKENIZER_RATIOS)}.")
@click.option("--baseline-tokenizer", help="The baseline's tokenizer (refuses cross-tokenizer nats).")
@click.option(
    "--unit", type=click.Choice(["bpb", "nats"]), default="bpb", show_default=True, help="Unit of the given scores."
)
@click.option(
    "--margin", "margin_nats", type=float, default=0.005, show_default=True, help="Written-rule margin in nats."
)
@click.option("--check-claim", "claims", multiple=True, help='A stated claim, e.g. "t=16.04 df=2 p<0.001".')
@click.option("--cases", "cases_file", type=click.Path(), help="TSV of claims to check (corpus format).")
@click.option(
    "--rule",
    type=click.Choice(["progression", "written", "both", "none"]),
    default="progression",
    show_default=True,
    help="Which verdict decides the exit code.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option("--output", type=click.Path(), help="Write json/markdown here instead of stdout.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when a rule fails or a claim is false.")
def _cli(
    path,
    new_text,
    new_summary,
    sota,
    baseline_text,
    baseline_summary,
    baseline_folder,
    ratio,
    tokenizer,
    baseline_tokenizer,
    unit,
    margin_nats,
    claims,
    cases_file,
    rule,
    fmt,
    output,
    exit_zero,
):
    """Per-seed statistics, the written and progression verdicts, and claim checks."""
    # Piped output keeps whole table rows on one line (rich would wrap at 80 columns).
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if cases_file:
        code = _run_cases(cases_file, fmt, output, console)
        sys.exit(0 if exit_zero else code)
    if tokenizer and ratio is not None and not math.isclose(tokenizer_ratio(tokenizer), ratio, rel_tol=1e-4):
        raise StatsError(f"--ratio {ratio} contradicts --tokenizer {tokenizer} ({tokenizer_ratio(tokenizer)})")
    require_comparable(unit, tokenizer, baseline_tokenizer)
    new, new_decs = _floats(new_text, "--new")
    notes: list[str] = []  # warnings
    inputs: list[str] = []  # where the new record's numbers came from
    if path:
        if new:
            raise StatsError("give either a record folder or --new, not both")
        folder = scores_from_folder(path)
        new, new_decs = folder.values, folder.decimals
        inputs += [f"{f}: seed {s}, val_bpb {v}" for f, s, v in zip(folder.files, folder.seeds, folder.values)]
        notes += list(folder.warnings)
        if folder.ratio is not None and ratio is None and not tokenizer:
            ratio = folder.ratio
    if new_summary:
        if new or path:
            raise StatsError("give one of a record folder, --new or --new-summary")
        mean, sd, n = _summary(new_summary, "--new-summary")
        new = moment_sample(mean, sd, n)
        new_decs = (max(decimals_of(p.strip()) for p in new_summary.split(",")[:2]) + 2,) * n
        inputs.append(f"new record as summary statistics: mean {mean}, sd {sd}, n {n} (the tests read only these)")
    if not new:
        raise StatsError("no scores: give a record folder, --new V1 V2 V3 or --new-summary MEAN,SD,N")
    if tokenizer and ratio is None:
        ratio = tokenizer_ratio(tokenizer)
    base, base_decs = _floats(baseline_text, "--baseline-seeds")
    if baseline_folder:
        if base:
            raise StatsError("give either --baseline-seeds or --baseline-folder, not both")
        bf = scores_from_folder(baseline_folder)
        base, base_decs = bf.values, bf.decimals
        notes += [f"baseline {w}" for w in bf.warnings]
        if unit == "nats" and ratio and bf.ratio and not math.isclose(ratio, bf.ratio, rel_tol=1e-3):
            raise StatsError(
                "nats are not comparable across tokenizers (r differs between the folders); use --unit bpb"
            )
    summary = _summary(baseline_summary) if baseline_summary else None
    report = compare(
        new, sota=sota, baseline=base or None, margin_nats=margin_nats, ratio=ratio, baseline_summary=summary, unit=unit
    )
    report = replace(report, warnings=tuple(notes) + report.warnings, inputs=tuple(inputs))
    if claims:
        ref = _claim_reference(base, base_decs, summary, baseline_summary, sota)
        margins = default_margins(unit, ratio)
        if margin_nats not in (0.0, 0.005):
            margins.append(Margin(margin_nats, "nats"))
        checks = tuple(
            check_claim(c, new, ref, unit=unit, ratio=ratio, margins=margins, new_decimals=new_decs) for c in claims
        )
        report = replace(report, claims=checks)
    if fmt == "json":
        _emit(render_json(report) + "\n", output)
    elif fmt == "markdown":
        _emit(render_markdown(report), output)
    else:
        render_console(report, console)
    verdicts = {
        "progression": [report.progression],
        "written": [report.written],
        "both": [report.progression, report.written],
        "none": [],
    }[rule]
    failed = any(v.passed is not True for v in verdicts) or any(not c.agrees for c in report.claims)
    sys.exit(1 if failed and not exit_zero else 0)


def _claim_reference(base, base_decs, summary, summary_text, sota) -> Reference:
    if len(base) >= 2:
        return Reference.seeds(base, base_decs)
    if summary:
        parts = [p.strip() for p in summary_text.split(",")]
        return Reference.summary(*summary, decimals=(decimals_of(parts[0]), decimals_of(parts[1])))
    if base:
        return Reference.constant(base[0], base_decs)
    if sota is not None:
        return Reference.constant(sota)
    raise StatsError("--check-claim needs a reference (--sota, --baseline-seeds or --baseline-summary)")


def _run_cases(cases_file: str, fmt: str, output: str | None, console: Console) -> int:
    try:
        text = Path(cases_file).read_text(encoding="utf-8")
    except OSError as e:
        raise StatsError(f"{cases_file}: {e.strerror}") from None
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    needed = {"new_seed_values", "baseline", "claimed_stat"}
    if not reader.fieldnames or not needed <= set(reader.fieldnames):
        raise StatsError(f"{cases_file}: a TSV with columns {', '.join(sorted(needed))} is expected")
    cases, checks = [], []
    for lineno, row in enumerate(reader, start=2):
        try:
            case = parse_case(row)
            checks.append(case.check())
        except (StatsError, KeyError, TypeError) as e:
            raise StatsError(f"{cases_file}:{lineno}: {e}") from None
        cases.append(case)
    rows = case_rows(cases, checks)
    rendered = render_cases(rows, fmt, console)
    if rendered is not None:
        _emit(rendered, output)
    return 1 if any(r["matches_expected"] == "no" for r in rows) else 0


def main(argv: list[str] | None = None) -> None:
    run_click(_cli, "pgolf-stats", argv, (StatsError, InputError))


__all__ = ["main", "scores_from_folder", "FolderScores"]
