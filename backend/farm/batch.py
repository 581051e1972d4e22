"""Many animate jobs on one executor: each written to its own folder ``OUT/<name>/`` atomically, up to
``max_parallel`` at once, finished jobs skipped on a re-run (resume), a failed job failing alone, and a summary.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backend.core.errors import Cancelled, CapabilityError, InputError
from backend.core.progress import ProgressEvent

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch: a folder name and the job spec dict (``JobSpec.to_dict()``)."""

    name: str
    spec: dict

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name or ""):
            raise InputError(f"job name {self.name!r}: expected letters, digits, '.', '_' or '-' (a folder name)")


@dataclass(frozen=True)
class Outcome:
    """How one job of a batch ended: ``done``, ``skipped`` (finished before), ``failed`` or ``cancelled``."""

    name: str
    status: str
    seconds: float
    where: str
    message: str = ""


Report = Callable[[str], None]


def is_finished(job_dir: Path) -> bool:
    """A complete job folder (what ``animate`` leaves: result.json with status complete)."""
    try:
        return json.loads((job_dir / "result.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def run_batch(jobs: list[BatchJob], out_dir: str | Path, executor, *, max_parallel: int = 1,
              report: Report = log.info) -> list[Outcome]:
    """Run ``jobs`` on ``executor`` (``LocalExecutor`` / ``RayExecutor``) into ``out_dir/<name>/``.

    Args:
        jobs: The jobs, names unique.
        out_dir: Parent of the job folders (created).
        executor: Anything with ``run(spec, out_dir, progress, on_worker)``.
        max_parallel: Jobs running at once (threads on this machine, each waiting for its job).
        report: One line per event (batch progress, each job's stage changes, the end of each job).

    Returns:
        One outcome per job, in the order given.
    """
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"jobs: names must be unique, repeated: {duplicates}")
    if max_parallel < 1:
        raise InputError(f"max_parallel: expected >= 1, got {max_parallel}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    finished = [0]
    total = len(jobs)

    def line(text: str) -> None:
        with lock:
            report(text)

    def one(job: BatchJob) -> Outcome:
        target = out_dir / job.name
        if is_finished(target):
            return _ended(Outcome(job.name, "skipped", 0.0, "-", "finished before"))
        started = time.monotonic()
        where = {"host": executor.name}
        stage = [None]

        def on_worker(info: dict) -> None:
            where["host"] = f"{info.get('host')}:{info.get('pid')}"
            retry = f" (attempt {info['attempt']})" if info.get("attempt", 1) > 1 else ""
            line(f"[{job.name}] running on {where['host']}{retry}")

        def progress(event: ProgressEvent) -> None:
            if event.stage != stage[0]:
                stage[0] = event.stage
                line(f"[{job.name}] {100 * event.fraction:5.1f}% {event.stage}: {event.message}")

        try:
            executor.run(job.spec, target, progress, on_worker)
            return _ended(Outcome(job.name, "done", time.monotonic() - started, where["host"]))
        except Cancelled as exc:
            return _ended(Outcome(job.name, "cancelled", time.monotonic() - started, where["host"], str(exc)))
        except (InputError, CapabilityError, FileNotFoundError, RuntimeError, OSError) as exc:
            return _ended(Outcome(job.name, "failed", time.monotonic() - started, where["host"],
                                  f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001 — one failed job fails alone; the batch goes on
            log.exception("job %s failed", job.name)
            return _ended(Outcome(job.name, "failed", time.monotonic() - started, where["host"],
                                  f"{type(exc).__name__}: {exc}"))

    def _ended(outcome: Outcome) -> Outcome:
        with lock:
            finished[0] += 1
            done = finished[0]
        detail = f" — {outcome.message}" if outcome.message else ""
        line(f"[batch {done}/{total}] {outcome.name}: {outcome.status} in {outcome.seconds:.1f} s{detail}")
        return outcome

    line(f"[batch] {total} jobs on {executor.name}, up to {max_parallel} at once -> {out_dir}")
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="ani3d-batch") as pool:
        return list(pool.map(one, jobs))


def summary_table(outcomes: list[Outcome]) -> str:
    """A plain-text table: job, status, seconds, where (and the message of failed jobs)."""
    rows = [("job", "status", "seconds", "where")] + [
        (o.name, o.status, f"{o.seconds:.1f}", o.where) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{o.name}: {o.message}" for o in outcomes if o.status == "failed"]
    return "\n".join(lines)
