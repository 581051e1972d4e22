"""Connecting to Ray: a local cluster on this machine (bound to loopback), or a cluster the user names.

Ray is an optional extra (``pip install 'ani3dhuman[ray]'``); without it every entry point here raises a
``CapabilityError`` that says so. Remote addresses come only from the user (``--ray ADDRESS``), never from a
default.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

from backend.core.errors import CapabilityError, InputError

log = logging.getLogger(__name__)

LOCAL_MODES = ("auto", "local")


@dataclass(frozen=True)
class RaySettings:
    """Where jobs run.

    Attributes:
        address: ``"local"`` starts a private Ray on this machine, bound to 127.0.0.1 (no dashboard); ``"auto"``
            joins the cluster of ``RAY_ADDRESS`` / a running ``ray start`` on this machine, else starts a local
            one; anything else is a cluster address (``HOST:6379``, or ``ray://HOST:10001`` with Ray Client).
        num_cpus: CPUs of a local cluster (default: this machine's).
        num_gpus: GPUs of a local cluster (default: what Ray detects).
        temp_dir: Ray's session folder for a local cluster (default: a new temporary folder).
        object_store_mb: Object store of a local cluster, MiB (Ray's minimum is 75).
    """

    address: str = "local"
    num_cpus: int | None = None
    num_gpus: int | None = None
    temp_dir: str | None = None
    object_store_mb: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise InputError(f"ray address: expected 'local', 'auto' or HOST:PORT, got {self.address!r}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise InputError(f"ray num_cpus: expected >= 1, got {self.num_cpus}")
        if self.object_store_mb < 75:
            raise InputError(f"ray object store: Ray needs at least 75 MiB, got {self.object_store_mb}")


def require_ray():
    """The ``ray`` module, or a CapabilityError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise CapabilityError("Ray is not installed: pip install 'ani3dhuman[ray]' (Ray >= 2.60) on this machine "
                              "and on every node of the cluster") from None
    return ray


def _pin_local_cluster_to_loopback() -> None:
    # Ray otherwise binds a local cluster to this machine's outward address. With this setting a Linux node is
    # a single-machine cluster whose services listen on 127.0.0.1 only (it must be set before Ray is imported,
    # and such a node accepts no other nodes, which a private local cluster never wants).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster: no token file in the user's home
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray was imported before: its constant is read at call time
        constants.ENABLE_RAY_CLUSTER = False


def connect(settings: RaySettings) -> dict:
    """Start or join Ray (no-op if this process is already connected); returns what was started/joined.

    Raises:
        CapabilityError: Ray missing, or the cluster cannot be reached.
    """
    local = settings.address == "local" or (settings.address == "auto" and not os.environ.get("RAY_ADDRESS"))
    if local:
        _pin_local_cluster_to_loopback()
    ray = require_ray()
    if ray.is_initialized():
        return {"address": settings.address, "started": False}
    try:
        if local:
            temp = settings.temp_dir or tempfile.mkdtemp(prefix="ani3d-ray-")
            ray.init(address="local", num_cpus=settings.num_cpus or os.cpu_count() or 1, num_gpus=settings.num_gpus,
                     include_dashboard=False, _temp_dir=os.path.abspath(temp),
                     object_store_memory=settings.object_store_mb << 20, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=None if settings.address == "auto" else settings.address, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CapabilityError(f"ray: cannot start or join a cluster at {settings.address!r} ({exc})") from exc
    if local:
        address = ray.nodes()[0]["NodeManagerAddress"]
        if address != "127.0.0.1":
            ray.shutdown()
            raise CapabilityError(f"ray: the local cluster listens on {address}, not on loopback; refusing to run")
    resources = ray.cluster_resources()
    log.info("ray: %s cluster, %s CPUs, %s GPUs", "local" if local else settings.address,
             resources.get("CPU", 0), resources.get("GPU", 0))
    return {"address": settings.address, "started": True, "local": local, "resources": resources}


def shutdown() -> None:
    """Leave (and for a local cluster, stop) Ray, if connected."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
