"""Local backend: the seeds run one after another on this node — never two at once, which would skew the
600 s timing — with a short pause between them, as in the official re-run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..launch import read_result, run_seed
from ..ledger import Ledger
from ..plan import SeedJob

DEFAULT_PAUSE_S = 10.0  # lets the GPUs clock down and the previous job's memory go before the next seed


@dataclass
class LocalBackend:
    pause_s: float = DEFAULT_PAUSE_S
    name: str = "local"

    @property
    def description(self) -> str:
        return f"local (this node, one seed at a time, {self.pause_s:g} s pause)"

    def run(self, jobs: list[SeedJob], ledger: Ledger) -> None:
        for i, job in enumerate(jobs):
            if i and self.pause_s > 0:
                time.sleep(self.pause_s)
            ledger.mark_running(job)
            try:
                result = run_seed(job)
            except KeyboardInterrupt:
                written = read_result(job.seed_dir)
                if written is not None:
                    ledger.record(written)  # a run that finished as the signal came stays a result
                ledger.mark_interrupted(job.seed)  # otherwise `interrupted`: run again on resume
                raise
            ledger.record(result)
