"""Where seeds run: `local` (this node, one seed at a time) or `slurm` (submitit, one node per seed)."""

from __future__ import annotations

from typing import Protocol

from ..ledger import Ledger
from ..plan import SeedJob


class Backend(Protocol):
    name: str

    @property
    def description(self) -> str:
        """One line for the report: where and how the seeds run."""

    def run(self, jobs: list[SeedJob], ledger: Ledger) -> None:
        """Run every job, recording each state change in the ledger as it happens."""
