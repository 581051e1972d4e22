"""The service's settings and what it detects about this machine (devices, supported priors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.progress import ProgressFn
from backend.diffusion.registry import SUPPORTED_MODELS

MiB = 1 << 20

# runner(spec_dict, out_dir, progress, device) -> result dict; raises Cancelled / InputError.
Runner = Callable[[dict, Path, ProgressFn, str], Any]


@dataclass(frozen=True)
class ServerSettings:
    """Service settings.

    Attributes:
        endpoint: ZeroMQ endpoint to bind (``tcp://127.0.0.1:5555``; port ``*`` picks a free one).
        jobs_dir: Root of the job folders.
        curve_secret_key: ZeroMQ certificate file holding the server's key pair (``*.key_secret``).
        curve_allowed_clients: Allowed client public keys: a directory of ``*.key`` certificates, one
            certificate file, or a text file with one Z85 public key per line.
        require_curve: Demand CurveZMQ even on loopback.
        max_message_bytes: Largest accepted request (ZeroMQ MAXMSGSIZE per frame and our check on the sum).
        max_reply_bytes: A result chunk stops adding frames beyond this size.
        max_frames: Most motion frames per job.
        max_gaussians: Most Gaussians per job.
        max_image_bytes: Largest reference image.
        max_queued: Most unfinished jobs at once.
        progress_interval_s: Least time between two pushed progress messages of a job (stage changes and
            state changes are always pushed).
        devices: Worker devices; None detects (every CUDA device, else ``cpu``).
        body_models: Body model names clients may use -> what ``load_body_model`` receives.
        priors: Prior ids clients may use (reported by hello); None: ``none`` and every supported video prior
            (``backend.diffusion.registry``); a job whose prior is not on this machine fails with its message.
        ray: Run jobs on Ray instead of in this process: ``local``, ``auto`` or a cluster address
            (``backend.farm.RaySettings``); None = in this process.
        ray_parallel: Jobs running on the cluster at once (default: the cluster's CPUs).
        ray_cpus: CPUs of a local Ray cluster (default: all of this machine's).
        ray_shared_folder: Ray workers write job folders into ``jobs_dir`` themselves (every node sees it at the
            same path); default: results travel back through Ray's object store.
    """

    endpoint: str = "tcp://127.0.0.1:5555"
    jobs_dir: Path = Path("jobs")
    curve_secret_key: Path | None = None
    curve_allowed_clients: Path | None = None
    require_curve: bool = False
    max_message_bytes: int = 64 * MiB
    max_reply_bytes: int = 256 * MiB
    max_frames: int = 10_000
    max_gaussians: int = 2_000_000
    max_image_bytes: int = 32 * MiB
    max_queued: int = 64
    progress_interval_s: float = 0.1
    devices: tuple[str, ...] | None = None
    body_models: dict = field(default_factory=lambda: {"default": "default"})
    priors: tuple[str, ...] | None = None
    ray: str | None = None
    ray_parallel: int | None = None
    ray_cpus: int | None = None
    ray_shared_folder: bool = False


def detect_devices() -> tuple[str, ...]:
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # torch missing or broken CUDA: run on the CPU
        count = 0
    return tuple(f"cuda:{i}" for i in range(count)) or ("cpu",)


def detect_priors() -> tuple[str, ...]:
    """``none`` plus the ids of the supported video priors."""
    return ("none", *(model.repo_id for model in SUPPORTED_MODELS))
