"""The ledger: `<out>/ledger.json`, rewritten atomically after every state change.

A re-run with the same `--out` reads it back: finished seeds are skipped, seeds left `running` by a killed
verifier are adopted from the `result.json` their run wrote (if it finished) or started again. A finished
result is never overwritten by a different plan: that is a usage error, not a silent re-run.
"""

from __future__ import annotations

import fcntl
import json
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from audit.errors import InputError

from .launch import RunResult, read_result, write_json_atomic
from .plan import Plan, SeedJob

SCHEMA_VERSION = 1
LEDGER_FILE = "ledger.json"
FINAL = ("ok", "crashed", "timed_out", "launch_error")  # a result; `interrupted` is not one


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fits(value, hint) -> bool:
    """`value` against a type hint of RunResult: plain types, `X | None`, list[...] and dict[...]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (typing.Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(hint) or (typing.Any, typing.Any)
        return isinstance(value, dict) and all(_fits(a, k) and _fits(b, v) for a, b in value.items())
    if hint is typing.Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _shape_problem(data) -> str:
    """ "" when `data` has the shape this code writes, else what is wrong (for a one-line message)."""
    if not isinstance(data, dict):
        return f"the top level is a JSON {type(data).__name__}, not an object"
    if "schema_version" not in data:
        return "no schema_version"
    if data["schema_version"] != SCHEMA_VERSION:
        return f"schema_version {data['schema_version']!r}; this pgolf-verify reads {SCHEMA_VERSION}"
    if not isinstance(data.get("seeds"), dict):
        return "'seeds' is missing or not an object"
    if not isinstance(data.get("events", []), list):
        return "'events' is not a list"
    hints = typing.get_type_hints(RunResult)
    for seed, e in data["seeds"].items():
        if not isinstance(e, dict):
            return f"seed {seed}: not an object"
        for key, want in (("state", str), ("fingerprint", str), ("attempts", int), ("updated_at", str)):
            if key in e and not _fits(e[key], want):
                return f"seed {seed}: {key!r} is not a {want.__name__}"
        if "job_id" in e and not isinstance(e["job_id"], (str, int, type(None))):
            return f"seed {seed}: 'job_id' is not a string"
        r = e.get("result")
        if r is None:
            continue
        if not isinstance(r, dict):
            return f"seed {seed}: 'result' is not an object"
        for key in ("seed", "fingerprint", "status"):
            if key not in r:
                return f"seed {seed}: the result has no {key!r}"
        for key, value in r.items():
            if key in hints and not _fits(value, hints[key]):
                return f"seed {seed}: the result's {key!r} has the wrong type"
    return ""


@dataclass
class Ledger:
    path: Path
    data: dict
    _lock_fh: object = None

    # --- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, plan: Plan) -> "Ledger":
        out = Path(plan.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = open(out / ".ledger.lock", "w")
        except OSError as e:
            raise InputError(f"{out}: cannot use it as --out ({e.strerror or e})") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise InputError(f"{out}: another pgolf-verify is using this --out") from None
        path = out / LEDGER_FILE
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                lock.close()
                raise InputError(f"{path}: unreadable ledger ({e}); move it away or pick another --out") from None
            why = _shape_problem(data)
            if why:
                lock.close()
                raise InputError(f"{path}: not a pgolf-verify ledger ({why}); move it away or pick another --out")
        else:
            data = {"schema_version": SCHEMA_VERSION, "created_at": _now(), "seeds": {}, "events": []}
        led = cls(path=path, data=data, _lock_fh=lock)
        try:
            led._merge_plan(plan)
        except InputError:
            led.close()
            raise
        led.save()
        return led

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _merge_plan(self, plan: Plan) -> None:
        seeds = self.data.setdefault("seeds", {})
        for job in plan.jobs:
            e = seeds.get(str(job.seed))
            if e and e.get("state") == "done" and e.get("fingerprint") != job.fingerprint:
                raise InputError(
                    f"{self.path}: seed {job.seed} finished under a different plan (code, env or command changed); "
                    "use another --out to keep both"
                )
            if not e or e.get("fingerprint") != job.fingerprint:
                seeds[str(job.seed)] = {
                    "state": "planned",
                    "fingerprint": job.fingerprint,
                    "attempts": 0,
                    "updated_at": _now(),
                }
        self.data["plan"] = {k: v for k, v in plan.to_dict().items() if k != "jobs"}
        self.data["updated_at"] = _now()

    # --- state --------------------------------------------------------------------------------------
    def save(self) -> None:
        self.data["updated_at"] = _now()
        write_json_atomic(self.path, self.data)

    def entry(self, seed: int) -> dict:
        return self.data["seeds"][str(seed)]

    def event(self, seed: int, what: str) -> None:
        self.data.setdefault("events", []).append({"at": _now(), "seed": seed, "event": what})

    def result(self, seed: int) -> RunResult | None:
        e = self.data["seeds"].get(str(seed))
        return RunResult.from_dict(e["result"]) if e and e.get("result") else None

    def mark_running(self, job: SeedJob, job_id: str | None = None) -> None:
        e = self.entry(job.seed)
        e.update(state="running", attempts=e.get("attempts", 0) + 1, updated_at=_now())
        if job_id is not None:
            e["job_id"] = job_id
        self.event(job.seed, f"started attempt {e['attempts']}" + (f" as job {job_id}" if job_id else ""))
        self.save()

    def record(self, result: RunResult) -> None:
        e = self.entry(result.seed)
        if result.fingerprint != e.get("fingerprint"):
            return  # a stale run of an older plan: keep the ledger as it is
        e["result"] = result.to_dict()
        e["state"] = "done" if result.status in FINAL else result.status
        e["updated_at"] = _now()
        self.event(
            result.seed, f"{result.status}" + (f" (exit {result.exit_code})" if result.exit_code is not None else "")
        )
        self.save()

    def mark_interrupted(self, seed: int) -> None:
        e = self.entry(seed)
        if e.get("state") == "running":
            e.update(state="interrupted", updated_at=_now())
            self.event(seed, "interrupted; will run again on resume")
            self.save()

    # --- resume -------------------------------------------------------------------------------------
    def pending(self, jobs: list[SeedJob], *, retry_failed: bool = False) -> list[SeedJob]:
        """Jobs still to run. Seeds left `running` by a dead verifier are adopted when their run finished."""
        todo = []
        for job in jobs:
            e = self.entry(job.seed)
            if e.get("state") in ("running", "interrupted"):
                written = read_result(job.seed_dir)
                if written and written.fingerprint == job.fingerprint and written.status in FINAL:
                    self.event(job.seed, "adopted the result its run wrote after the verifier stopped")
                    self.record(written)
            if e.get("state") == "done":
                status = (e.get("result") or {}).get("status")
                if status == "ok" or not retry_failed:
                    continue
            todo.append(job)
        self.save()
        return todo

    def results(self, jobs: list[SeedJob]) -> dict[int, RunResult]:
        return {
            j.seed: r
            for j in jobs
            if (r := self.result(j.seed)) is not None and self.entry(j.seed).get("state") == "done"
        }
