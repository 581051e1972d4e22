"""Orchestration: a job's spec and output folder, ``animate`` (body -> subject -> [prior rounds] -> export ->
renders), the paper's progressive rounds, quality presets, refitting a finished job, previews. The algorithm
packages below never import this one; the service and the CLI call it."""

from backend.stages.animate import animate
from backend.stages.job import JobSpec, read_result
from backend.stages.refit import fit_job_folder

__all__ = ["JobSpec", "animate", "fit_job_folder", "read_result"]
