"""Slurm backend through submitit: one exclusive 8-GPU node per seed, all seeds in parallel.

Each Slurm task runs the same `launch.run_seed` as the local backend, so the node does the copy, the
timeout and the process-tree kill itself and writes `result.json` into the shared `--out` folder. The
verifier only submits, records job ids in the ledger and collects. If the verifier dies, the jobs keep
their nodes; a resumed verifier re-attaches to them by job id (or adopts the result.json they wrote).

`cluster="local"` selects submitit's LocalExecutor: the same submit/collect path on this machine, which is
how the tests (and CI) exercise it. Otherwise Slurm must be there: `sbatch`, `srun` and `sacct` on PATH and, where
`sinfo` is installed, a controller that answers it — else `SlurmUnavailableError`, never a local run.

Resources per seed (one sbatch array task): 1 node, exclusive, 1 task, `gpus_per_node` GPUs, `cpus_per_task`
CPUs (default 8 per GPU: torchrun's workers and their data loaders), `mem` ("0": all of the node's memory) and
`time_min` (default: the per-seed timeout plus `JOB_OVERHEAD_S`).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from audit.errors import InputError

from ..launch import RunResult, read_result, run_seed
from ..ledger import Ledger
from ..plan import SeedJob

JOB_OVERHEAD_S = 600.0  # copy, version probe, kill grace: the Slurm limit must outlast run_seed's own timeout
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "COMPLETED"}
CPUS_PER_GPU = 8  # torchrun's worker per GPU and its data-loading threads
DEFAULT_MEM = "0"  # Slurm: all of the node's memory (the node is exclusive anyway)
SLURM_TOOLS = ("sbatch", "srun", "sacct")  # submit, the task launcher in the sbatch script, job states
SINFO_TIMEOUT_S = 30.0


class SlurmUnavailableError(InputError):
    """--backend slurm where there is no Slurm to submit to: an error, never a silent local run."""


def slurm_problem() -> str:
    """ "" when Slurm's tools are on PATH and its controller answers `sinfo`, else what is missing (one line)."""
    missing = [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return ""  # no sinfo to ask: sbatch will say if the controller is down
    try:
        p = subprocess.run([sinfo, "-h", "-o", "%P"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {SINFO_TIMEOUT_S:.0f} s (is the Slurm controller reachable?)"
    except OSError as e:
        return f"sinfo cannot run: {e}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        return f"the Slurm controller does not answer: sinfo: {last}"
    return ""


def parse_time(text: str) -> int:
    """Minutes from a Slurm time limit: `90`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`."""
    t = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
    if not m:
        raise ValueError(f"{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is None:
        if b is None:  # minutes
            secs = int(a) * 60
        elif c is None:  # MM:SS
            secs = int(a) * 60 + int(b)
        else:  # HH:MM:SS
            secs = int(a) * 3600 + int(b) * 60 + int(c)
    else:  # D-HH[:MM[:SS]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    minutes = math.ceil(secs / 60)
    if minutes < 1:
        raise ValueError(f"{text!r} is under a minute")
    return minutes


@dataclass
class SlurmBackend:
    folder: str  # submitit's folder for pickles and job logs; must be on a filesystem the nodes share
    cluster: str | None = None  # None or "slurm": Slurm, which must be there; "local": LocalExecutor (tests)
    gpus_per_node: int = 8
    cpus_per_task: int | None = None  # None: CPUS_PER_GPU per GPU
    mem: str = DEFAULT_MEM
    time_min: int | None = None  # None: the per-seed timeout plus JOB_OVERHEAD_S
    partition: str | None = None
    parallelism: int = 0  # most seeds running at once; 0 = all
    poll_s: float = 5.0
    additional: dict = field(default_factory=dict)  # account, qos, constraint … passed to sbatch
    name: str = "slurm"

    @property
    def cpus(self) -> int:
        return self.cpus_per_task if self.cpus_per_task is not None else max(1, CPUS_PER_GPU * self.gpus_per_node)

    def job_minutes(self, timeout_s: float) -> int:
        return self.time_min if self.time_min is not None else int(math.ceil((timeout_s + JOB_OVERHEAD_S) / 60))

    @property
    def description(self) -> str:
        where = self.cluster or "slurm"
        mem = "all node memory" if self.mem == "0" else f"mem {self.mem}"
        time_ = f"time {self.time_min} min" if self.time_min is not None else "time = timeout + 10 min"
        return (
            f"slurm via submitit (cluster={where}, 1 exclusive node per seed: {self.gpus_per_node} GPUs, "
            f"{self.cpus} CPUs, {mem}, {time_})"
        )

    def check(self) -> None:
        """Raise SlurmUnavailableError (one line) unless this backend can submit."""
        if self.cluster == "local":
            return
        problem = slurm_problem()
        if problem:
            raise SlurmUnavailableError(
                f"--backend slurm: no Slurm here ({problem}); run pgolf-verify on a Slurm login node, or use "
                "--backend local on one 8-GPU node"
            )

    def parameters(self, timeout_s: float) -> dict:
        """submitit's parameters for one seed (what the sbatch script asks for)."""
        params = dict(
            name="pgolf-verify",
            timeout_min=self.job_minutes(timeout_s),
            nodes=1,
            tasks_per_node=1,  # run_seed starts torchrun, which starts one process per GPU
            gpus_per_node=self.gpus_per_node,
            cpus_per_task=self.cpus,
            slurm_exclusive=True,  # never share a node: a neighbour would skew the 600 s timing
        )
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.parallelism:
            params["slurm_array_parallelism"] = self.parallelism
        additional = dict(self.additional)
        if self.mem and self.cluster != "local":
            additional.setdefault("mem", self.mem)  # as given: "0" (all memory) or "512G"; submitit would reparse it
        if additional and self.cluster != "local":
            params["slurm_additional_parameters"] = additional
        return params

    def sbatch_flags(self, timeout_s: float) -> list[str]:
        """The resources each seed's sbatch asks for, as sbatch flags (for --dry-run)."""
        flags = [
            "--nodes=1",
            "--ntasks-per-node=1",
            f"--gpus-per-node={self.gpus_per_node}",
            f"--cpus-per-task={self.cpus}",
            f"--mem={self.mem}",
            f"--time={self.job_minutes(timeout_s)}",
            "--exclusive",
        ]
        if self.partition:
            flags.append(f"--partition={self.partition}")
        flags += [f"--{k.replace('_', '-')}={v}" for k, v in self.additional.items()]
        return flags

    def _executor(self, timeout_s: float):
        self.check()
        try:
            import submitit
        except ImportError:
            raise InputError("the slurm backend needs submitit: pip install 'pgolf[slurm]'") from None
        try:
            ex = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster or "slurm")
        except RuntimeError as e:  # submitit's own srun probe
            raise SlurmUnavailableError(f"--backend slurm: {str(e).strip() or type(e).__name__}") from None
        ex.update_parameters(**self.parameters(timeout_s))
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
            try:
                with ex.batch():  # one job array on Slurm
                    handles = [ex.submit(run_seed, j) for j in fresh]
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - sbatch refused (bad partition, account, controller down)
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                raise SlurmUnavailableError(
                    f"sbatch refused the job array: {lines[-1] if lines else type(e).__name__}"
                ) from None
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
