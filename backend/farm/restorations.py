"""A round's restorations as parallel Ray tasks, one per trajectory, each on its own GPU where the cluster has
GPUs: the fit waits for all of them, and the result does not depend on how many workers there were (each
restoration has its own seed; the tasks run with the driver's torch thread count)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from backend.core.progress import StageProgress
from backend.farm.cluster import require_ray
from backend.farm.executor import _remote, task_result
from backend.stages.prior_rounds import RestoreJob

_PRIORS: dict[str, object] = {}  # per worker process: a loaded prior is reused by the next task there
_PRIORS_LOCK = threading.Lock()


def _restore_task(prior_id: str, job: RestoreJob, threads: int) -> np.ndarray:
    """Body of the Ray task: load the prior once per worker, restore one video."""
    from backend.diffusion.restore import restore
    from backend.diffusion.wan import WanPrior

    torch.set_num_threads(threads)
    with _PRIORS_LOCK:
        if prior_id not in _PRIORS:
            _PRIORS[prior_id] = WanPrior.from_pretrained(prior_id)
        prior = _PRIORS[prior_id]
    return restore(job.coarse, job.cameras, job.conditions, job.settings, None, prior=prior).numpy()


@dataclass
class RayRestorer:
    """Restores each job of a round as its own Ray task (``cluster.connect`` first).

    Attributes:
        prior_id: The video prior every worker loads (a model id its node has, or a folder all nodes see).
        gpus_per_restoration: GPUs a task asks for where the cluster has GPUs (else one CPU).
        threads: torch threads per task (default: this process's, so floats match a serial run).
        max_retries: Runs again after a worker died.
    """

    prior_id: str
    gpus_per_restoration: float = 1.0
    threads: int | None = None
    max_retries: int = 1
    name: str = "Ray tasks"

    @property
    def device(self) -> torch.device:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

    def restore_all(self, jobs: list[RestoreJob], report_for: Callable[[int], StageProgress]) -> list[Tensor]:
        ray = require_ray()
        gpu = ray.cluster_resources().get("GPU", 0) > 0
        task = _remote(_restore_task).options(num_cpus=0 if gpu else 1,
                                              num_gpus=self.gpus_per_restoration if gpu else 0,
                                              max_retries=self.max_retries)
        threads = self.threads or torch.get_num_threads()
        # The cache file is the driver's; workers compute the prompt embedding themselves (same values).
        refs = [task.remote(self.prior_id, dataclasses.replace(
            job, conditions=dataclasses.replace(job.conditions, prompt_cache=None)), threads) for job in jobs]
        reports = [report_for(i) for i in range(len(jobs))]
        for report, job in zip(reports, jobs):
            report(0.0, f"restoring {job.name} as a Ray task")
        results: dict[int, np.ndarray] = {}
        try:
            while len(results) < len(refs):
                waiting = [ref for i, ref in enumerate(refs) if i not in results]
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
                for ref in done:
                    i = refs.index(ref)
                    results[i] = task_result(ref, "restoration")
                    reports[i](1.0, f"restored {jobs[i].name}")
                if not done:
                    for i, report in enumerate(reports):  # lets a cancel through while the tasks run
                        if i not in results:
                            report(0.0, f"restoring {jobs[i].name} as a Ray task")
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        return [torch.from_numpy(np.array(results[i])) for i in range(len(refs))]  # a writable copy

    def release(self) -> None:
        """Nothing is held here; workers keep their prior until Ray stops them."""
