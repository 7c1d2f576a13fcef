"""Slurm backend through submitit: one exclusive 8-GPU node per seed, all seeds in parallel.

Each Slurm task runs the same `launch.run_seed` as the local backend, so the node does the copy, the
timeout and the process-tree kill itself and writes `result.json` into the shared `--out` folder. The
verifier only submits, records job ids in the ledger and collects. If the verifier dies, the jobs keep
their nodes; a resumed verifier re-attaches to them by job id (or adopts the result.json they wrote).

`cluster="local"` selects submitit's LocalExecutor: the same submit/collect path on this machine, which is
how the tests (and CI) exercise it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from audit.errors import InputError

from ..launch import RunResult, read_result, run_seed
from ..ledger import Ledger
from ..plan import SeedJob

JOB_OVERHEAD_S = 600.0  # copy, version probe, kill grace: the Slurm limit must outlast run_seed's own timeout
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "COMPLETED"}


@dataclass
class SlurmBackend:
    folder: str  # submitit's folder for pickles and job logs; must be on a filesystem the nodes share
    cluster: str | None = None  # None: Slurm when sbatch is present, else local; "local" for tests
    gpus_per_node: int = 8
    partition: str | None = None
    parallelism: int = 0  # most seeds running at once; 0 = all
    poll_s: float = 5.0
    additional: dict = field(default_factory=dict)  # account, qos, constraint … passed to sbatch
    name: str = "slurm"

    @property
    def description(self) -> str:
        where = self.cluster or "auto"
        return f"slurm via submitit (cluster={where}, 1 node × {self.gpus_per_node} GPUs per seed)"

    def _executor(self, timeout_s: float):
        try:
            import submitit
        except ImportError:
            raise InputError("the slurm backend needs submitit: pip install 'pgolf[slurm]'") from None
        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        params = dict(
            name="pgolf-verify",
            timeout_min=int(math.ceil((timeout_s + JOB_OVERHEAD_S) / 60)),
            nodes=1,
            tasks_per_node=1,  # run_seed starts torchrun, which starts one process per GPU
            gpus_per_node=self.gpus_per_node,
            slurm_exclusive=True,  # never share a node: a neighbour would skew the 600 s timing
        )
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.parallelism:
            params["slurm_array_parallelism"] = self.parallelism
        if self.additional:
            params["slurm_additional_parameters"] = dict(self.additional)
        ex.update_parameters(**params)
        return ex

    def _reattach(self, ex, job: SeedJob, ledger: Ledger):
        """A job a previous verifier submitted, if Slurm still knows it."""
        jid = ledger.entry(job.seed).get("job_id")
        if not jid or ex.cluster != "slurm":
            return None  # local jobs died with (or are cancelled by) the verifier that started them
        import submitit

        sj = submitit.SlurmJob(folder=self.folder, job_id=str(jid))
        try:
            state = sj.state
        except Exception:  # noqa: BLE001 - sacct unavailable: submit again
            return None
        return sj if state.split()[0] in LIVE_STATES else None

    def run(self, jobs: list[SeedJob], ledger: Ledger) -> None:
        if not jobs:
            return
        ex = self._executor(max(j.timeout_s for j in jobs))
        running: dict[int, tuple[SeedJob, object]] = {}
        for job in jobs:
            if (sj := self._reattach(ex, job, ledger)) is not None:
                ledger.event(job.seed, f"re-attached to job {sj.job_id}")
                running[job.seed] = (job, sj)
        fresh = [j for j in jobs if j.seed not in running]
        if fresh:
            with ex.batch():  # one job array on Slurm
                handles = [ex.submit(run_seed, j) for j in fresh]
            for j, h in zip(fresh, handles):
                ledger.mark_running(j, job_id=str(h.job_id))
                running[j.seed] = (j, h)
        try:
            while running:
                for seed, (job, handle) in list(running.items()):
                    if handle.done():
                        ledger.record(self._collect(job, handle))
                        del running[seed]
                if running:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            if ex.cluster != "slurm":
                for _, handle in running.values():
                    handle.cancel(check=False)
            raise

    @staticmethod
    def _collect(job: SeedJob, handle) -> RunResult:
        try:
            result = handle.result()
            if isinstance(result, RunResult):
                return result
        except Exception as e:  # noqa: BLE001 - the job died outside run_seed (node failure, Slurm limit)
            written = read_result(job.seed_dir)
            if written is not None and written.fingerprint == job.fingerprint:
                return written
            return RunResult(
                seed=job.seed,
                fingerprint=job.fingerprint,
                status="launch_error",
                timeout_s=job.timeout_s,
                error=f"job {handle.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}",
            )
        written = read_result(job.seed_dir)
        return written or RunResult(
            seed=job.seed, fingerprint=job.fingerprint, status="launch_error", error="no result"
        )
