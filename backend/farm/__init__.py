"""Running many jobs, and a job's restorations, on an executor: in this process, or on a Ray cluster (the
optional extra ``ani3dhuman[ray]``); batches of jobs with resume and a summary. Sits above ``stages`` and below
the service and the CLI."""

from backend.farm.cluster import RaySettings, connect, shutdown
from backend.farm.executor import JobFailed, LocalExecutor, RayExecutor
from backend.farm.restorations import RayRestorer

__all__ = ["JobFailed", "LocalExecutor", "RayExecutor", "RayRestorer", "RaySettings", "connect", "shutdown"]
