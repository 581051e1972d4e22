"""The default job runner of the service: exactly what ``ani3dhuman animate`` does with the same settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from backend.core.progress import ProgressFn
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
