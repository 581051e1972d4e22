"""The executor seam: a job runs in this process (``LocalExecutor``, the default) or as a Ray task
(``RayExecutor``). Both take a job spec dict (``JobSpec.to_dict()``) and write the job folder at ``out_dir``
atomically; the stages themselves do not know which one runs them.

A Ray task gets its input files with it and sends the finished job folder back through the object store, so
workers need not share the driver's disk; with ``shared_folder=True`` the worker writes the folder itself
(every node must see ``out_dir`` at the same path). Progress comes back through a queue actor; cancel is
``ray.cancel(force=True)`` (the worker is killed; nothing was written on the driver); a task whose worker dies
is run once more, then the job fails. Either way a job folder is complete or absent.
"""

from __future__ import annotations

import os
import queue
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.core.errors import Cancelled, CapabilityError, InputError
from backend.core.progress import ProgressEvent, ProgressFn, no_progress
from backend.farm import transfer
from backend.farm.cluster import require_ray
from backend.stages import JobSpec, animate

WorkerFn = Callable[[dict], None]
"""``on_worker({"host", "pid", "attempt"})``: called when a job starts on a worker (again after a retry)."""


class JobFailed(RuntimeError):
    """A job could not finish (its worker died twice, or an unexpected error); the message says why."""


@dataclass(frozen=True)
class LocalExecutor:
    """Runs jobs in this process, one after the other per calling thread: exactly ``ani3dhuman animate``."""

    name: str = "local"

    def run(self, spec: dict, out_dir: str | os.PathLike, progress: ProgressFn = no_progress,
            on_worker: WorkerFn | None = None) -> dict:
        if on_worker is not None:
            on_worker({"host": socket.gethostname(), "pid": os.getpid(), "attempt": 1})
        return animate(JobSpec.from_dict(spec), out_dir, progress)


def _run_job_task(run_id: str, spec: dict, inputs: dict, shared_out: str | None, threads: int, events) -> dict:
    """Body of the Ray task (runs on a worker)."""
    import torch

    torch.set_num_threads(threads)  # the same floats whatever the node's core count
    host = socket.gethostname()
    events.put((run_id, "worker", {"host": host, "pid": os.getpid()}))

    def progress(event: ProgressEvent) -> None:
        events.put((run_id, "progress", {"stage": event.stage, "fraction": event.fraction, "message": event.message,
                                         "eta_s": event.eta_s}))

    with tempfile.TemporaryDirectory(prefix="ani3d-job-") as tmp:
        job = JobSpec.from_dict(transfer.unpack_inputs(spec, inputs, Path(tmp) / "inputs"))
        if shared_out is not None:
            result = animate(job, shared_out, progress)
            return {"host": host, "result": result, "files": None}
        out = Path(tmp) / "job"
        result = animate(job, out, progress)
        return {"host": host, "result": result, "files": transfer.pack_folder(out)}


def task_result(ref, what: str):
    """``ray.get(ref)`` with Ray's failures as this project's errors: a cancelled task is ``Cancelled``; the task's
    own ``InputError`` / ``CapabilityError`` / ``Cancelled`` is raised as it is; any other error, or a worker that
    died on every attempt, is ``JobFailed`` naming ``what`` ("job", "restoration")."""
    ray = require_ray()
    from ray import exceptions

    try:
        return ray.get(ref)
    except exceptions.TaskCancelledError as exc:
        raise Cancelled("cancelled on the Ray cluster") from exc
    except exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (InputError, CapabilityError, Cancelled)):
            raise cause from None
        raise JobFailed(f"{what} failed on its Ray worker: {cause!r}") from None
    except (exceptions.WorkerCrashedError, exceptions.NodeDiedError) as exc:
        raise JobFailed(f"the Ray worker running the {what} died and its retry too ({type(exc).__name__})") from None


_REMOTE: dict[str, Any] = {}
_REMOTE_LOCK = threading.Lock()


def _remote(fn: Callable) -> Any:
    """``ray.remote(fn)``, made once per process (after Ray is imported)."""
    with _REMOTE_LOCK:
        if fn.__name__ not in _REMOTE:
            _REMOTE[fn.__name__] = require_ray().remote(fn)
        return _REMOTE[fn.__name__]


class RayExecutor:
    """Runs each job as a Ray task (``RaySettings`` / ``cluster.connect`` first); safe to call from many threads.

    Args:
        cpus_per_job: CPUs a job asks for (and its torch threads).
        gpus_per_prior_job: GPUs a job with a video prior asks for (on a cluster that has GPUs).
        shared_folder: Workers write job folders themselves (all nodes see ``out_dir``); else they travel back.
        max_retries: Runs again after a worker died (Ray's system-failure retries).
        poll_s: How often the driver looks at the task and its progress.
    """

    name = "ray"

    def __init__(self, cpus_per_job: int = 1, gpus_per_prior_job: float = 1.0, shared_folder: bool = False,
                 max_retries: int = 1, poll_s: float = 0.1):
        if cpus_per_job < 1:
            raise InputError(f"cpus_per_job: expected >= 1, got {cpus_per_job}")
        self.cpus_per_job, self.gpus_per_prior_job = cpus_per_job, gpus_per_prior_job
        self.shared_folder, self.max_retries, self.poll_s = shared_folder, max_retries, poll_s
        self._events = None  # one queue actor carries every job's events, tagged with its run id
        self._inboxes: dict[str, queue.SimpleQueue] = {}
        self._lock = threading.Lock()

    def _inbox(self, run_id: str) -> queue.SimpleQueue:
        from ray.util.queue import Queue

        with self._lock:
            if self._events is None:
                self._events = Queue(actor_options={"num_cpus": 0})
            self._inboxes[run_id] = queue.SimpleQueue()
            return self._inboxes[run_id]

    def _pump(self) -> None:
        """Move whatever the workers sent into the inboxes of the runs it belongs to."""
        from ray.util.queue import Empty

        with self._lock:
            while True:
                try:
                    run_id, kind, payload = self._events.get_nowait()
                except Empty:
                    return
                inbox = self._inboxes.get(run_id)
                if inbox is not None:
                    inbox.put((kind, payload))

    def run(self, spec: dict, out_dir: str | os.PathLike, progress: ProgressFn = no_progress,
            on_worker: WorkerFn | None = None) -> dict:
        """Run one job on the cluster and leave its complete folder at ``out_dir``; returns its result.json.

        Raises:
            Cancelled: ``progress`` raised it (the task is killed, nothing is written).
            InputError, CapabilityError: the job's own error, as ``animate`` raises it.
            JobFailed: the worker died ``max_retries + 1`` times, or another error.
        """
        ray = require_ray()

        JobSpec.from_dict(spec)  # a bad spec fails here, before any task
        out_dir = Path(out_dir).resolve()
        inputs = transfer.pack_inputs(spec)
        run_id = uuid.uuid4().hex
        inbox = self._inbox(run_id)
        # A video-prior job asks for a GPU where the cluster has any (on a CPU-only cluster it runs on CPUs).
        wants_gpu = spec.get("prior", "none") != "none" and ray.cluster_resources().get("GPU", 0) > 0
        task = _remote(_run_job_task).options(
            num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_prior_job if wants_gpu else 0,
            max_retries=self.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.cpus_per_job)}})
        ref = task.remote(run_id, spec, inputs, str(out_dir) if self.shared_folder else None, self.cpus_per_job,
                          self._events)
        last = ProgressEvent("queued", 0.0, "waiting for a Ray worker")
        last_call, attempt = 0.0, 0
        try:
            while True:
                done, _ = ray.wait([ref], timeout=self.poll_s)
                self._pump()
                while not inbox.empty():
                    kind, payload = inbox.get()
                    if kind == "worker":
                        attempt += 1
                        if on_worker is not None:
                            on_worker({**payload, "attempt": attempt})
                    else:
                        last = ProgressEvent(**payload)
                        progress(last)
                        last_call = time.monotonic()
                if done:
                    break
                if time.monotonic() - last_call >= 1.0:  # lets the caller cancel while the task is quiet
                    progress(last)
                    last_call = time.monotonic()
        except BaseException:
            ray.cancel(ref, force=True)
            raise
        finally:
            with self._lock:
                self._inboxes.pop(run_id, None)
        reply = task_result(ref, "job")
        if reply["files"] is not None:
            transfer.unpack_folder(reply["files"], out_dir)
        return reply["result"]
