"""The job runners of the service: in this process (the default, exactly what ``ani3dhuman animate`` does with the
same settings) or on a Ray cluster through ``backend.farm`` (same wire protocol, same job folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from backend.core.progress import ProgressFn
from backend.farm import RayExecutor, RaySettings, connect
from backend.stages.animate import animate
from backend.stages.job import JobSpec


def run_animate_job(spec_dict: dict, out_dir: Path, progress: ProgressFn, device: str) -> Any:
    """The default runner: exactly what ``ani3dhuman animate`` does with the same settings."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    spec = JobSpec.from_dict(spec_dict)
    return animate(spec, out_dir, progress=progress)


def validate_spec(spec_dict: dict) -> None:
    """Validate a job's settings with ``backend.stages.job.JobSpec.from_dict`` (InputError names the field)."""
    JobSpec.from_dict(spec_dict)


def ray_runner(settings: RaySettings, executor: RayExecutor) -> tuple[Any, int, bool]:
    """Join or start the cluster; returns (a runner for ``Server``, the cluster's CPU count, whether this call
    started or joined it — then the server leaves it when it stops)."""
    import ray

    started = connect(settings)["started"]

    def run_on_ray(spec_dict: dict, out_dir: Path, progress: ProgressFn, device: str) -> Any:
        return executor.run(spec_dict, out_dir, progress)

    return run_on_ray, int(ray.cluster_resources().get("CPU", 1)), started
