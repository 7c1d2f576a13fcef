"""The analyses of one submission, each computed on first use and shared by every rule that needs it.

Rules read `self.analyses.<name>`; nothing is keyed by strings, and every analysis takes its inputs from
this one object, so two rules can never build the same analysis from different arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from ..findings import Location
from ..load.messages import LogProvenance
from ..logs.model import LoggedLine
from .bytetables import ByteAccounting, byte_accounting
from .calibration import CalibrationAnalysis, LogCalibration, log_calibration
from .evaluation import Evaluation
from .native import NativeAnalysis
from .network import NetCall, network_calls
from .ngram import NgramAnalysis
from .program import Program
from .slot import SlotAnalysis, SlotSite
from .ttt import TTTAnalysis, TTTSite, ttt_log_evidence
from .valueflow import ValFlow


@dataclass
class Analyses:
    program: Program
    log_lines: list[LoggedLine] = field(default_factory=list)  # non-source lines of every log
    log_provenance: LogProvenance = field(default_factory=LogProvenance)  # log lines other code printed
    files: Mapping[str, bytes] = field(default_factory=dict)  # the folder's readable files (sibling native sources)

    @cached_property
    def valflow(self) -> ValFlow:
        return ValFlow(self.program)

    @cached_property
    def evaluation(self) -> Evaluation:
        """The evaluation model: scoring passes, the states they read, every update in program order."""
        return Evaluation(self.program, self.valflow)

    @cached_property
    def ttt(self) -> TTTAnalysis:
        return TTTAnalysis(self.program, self.valflow, [s.backward for s in self.slot_sites])

    @cached_property
    def ttt_sites(self) -> list[TTTSite]:
        return self.ttt.sites()

    @cached_property
    def ttt_log(self) -> tuple[list[Location], bool]:
        """Log lines showing a TTT stage ran, and whether there are logs at all."""
        return ttt_log_evidence(self.log_lines)

    @cached_property
    def slot(self) -> SlotAnalysis:
        return SlotAnalysis(self.program, self.valflow)

    @cached_property
    def slot_sites(self) -> list[SlotSite]:
        return self.slot.sites()

    @cached_property
    def calibration(self) -> CalibrationAnalysis:
        return CalibrationAnalysis(self.program)

    @cached_property
    def log_calibration(self) -> list[LogCalibration]:
        """What each log says about calibration (the clock stop, a reserve, calibration lines)."""
        return log_calibration(self.log_lines)

    @cached_property
    def ngram(self) -> NgramAnalysis:
        return NgramAnalysis(self.program)

    @cached_property
    def ngram_target_key_sites(self) -> list:
        return self.ngram.target_key_sites()

    @cached_property
    def ngram_unnormalized_sites(self) -> list:
        return self.ngram.unnormalized_sites()

    @cached_property
    def network_calls(self) -> list[NetCall]:
        return network_calls(self.program)

    @cached_property
    def byte_accounting(self) -> ByteAccounting:
        return byte_accounting(self.program, self.valflow)

    @cached_property
    def native(self) -> NativeAnalysis:
        """Native code built or loaded by the submission, read for the byte-spread and target-gate shapes."""
        return NativeAnalysis(self.program, self.files)
