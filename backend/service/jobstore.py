"""The service's job folders: one folder per job, every file written atomically, recoverable after a crash.

Layout under the jobs root::

    <root>/<job id>/
        spec.json          job settings without arrays (motion -> inputs/motion.npz, image -> inputs/image.*)
        inputs/motion.npz  motion arrays (root_orient, pose_body, [pose_hand], trans, betas) + fps
        inputs/image.png   reference image bytes as received (optional)
        state.json         {"state", "created", "started", "finished", "stage", "fraction", "message", "error"}
        output/            the pipeline's job output folder (docs/design.md §3); present only when complete

A job folder is built under ``<root>/.tmp-<id>`` and renamed into place, so it is complete or absent.
``state.json`` is replaced atomically. ``output/`` is written by the pipeline to a temporary sibling and
renamed, so "output/ exists" means "the result is complete". ``recover()`` repairs what a killed server left.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backend.core.files import fsync_directory, write_json

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_STATES = frozenset({"done", "failed", "cancelled", "interrupted"})
KNOWN_ENTRIES = frozenset({"spec.json", "state.json", "inputs", "output"})
# The fit stage's resumable state next to output/ (backend.stages.prior_rounds.checkpoint_root): a job killed while
# it exists is queued again at restart and picks up from its last checkpoint.
CHECKPOINT_ENTRY = ".output.checkpoint"
IMAGE_SUFFIXES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (``backend.core.files.write_json``), rejecting NaN/inf."""
    write_json(path, obj, allow_nan=False)


def image_suffix(data: bytes) -> str | None:
    """File suffix for PNG/JPEG bytes (by magic number), None for anything else."""
    for magic, suffix in IMAGE_SUFFIXES.items():
        if data[: len(magic)] == magic:
            return suffix
    return None


class JobStore:
    """Job folders under one root directory. Not thread-safe by itself: the server serialises writes per job.

    Args:
        root: The jobs directory (created if missing).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths
    def job_dir(self, job_id: str) -> Path:
        if not _valid_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output"

    def exists(self, job_id: str) -> bool:
        return _valid_id(job_id) and (self.root / job_id / "state.json").is_file()

    def ids(self) -> list[str]:
        """Ids of all complete job folders, oldest first (ids sort by creation time)."""
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _valid_id(p.name) and (p / "state.json").is_file())

    # -- create / read
    def create(self, spec: Mapping[str, Any], motion: Mapping[str, np.ndarray], fps: float,
               image: bytes | None = None) -> str:
        """Write a new queued job folder atomically and return its id.

        Args:
            spec: JSON job settings without the motion arrays and without the image.
            motion: Motion arrays by name (``root_orient``, ``pose_body``, ``pose_hand``, ``trans``, ``betas``).
            fps: Motion frame rate.
            image: Reference image bytes (PNG or JPEG) or None.
        """
        job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
        tmp = self.root / f".tmp-{job_id}"
        inputs = tmp / "inputs"
        inputs.mkdir(parents=True)
        try:
            with open(inputs / "motion.npz", "wb") as handle:
                np.savez(handle, fps=np.float64(fps), **{k: np.asarray(v) for k, v in motion.items()})
                handle.flush()
                os.fsync(handle.fileno())
            stored = dict(spec)
            stored["motion"] = "inputs/motion.npz"
            if image is not None:
                name = "image" + (image_suffix(image) or ".bin")
                with open(inputs / name, "wb") as handle:
                    handle.write(image)
                    handle.flush()
                    os.fsync(handle.fileno())
                stored["image"] = f"inputs/{name}"
            else:
                stored["image"] = None
            write_json_atomic(tmp / "spec.json", stored)
            write_json_atomic(tmp / "state.json", {"state": "queued", "created": time.time(), "started": None,
                                                   "finished": None, "stage": None, "fraction": 0.0,
                                                   "message": "", "error": None})
            fsync_directory(tmp)
            os.rename(tmp, self.root / job_id)
            fsync_directory(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return job_id

    def spec(self, job_id: str) -> dict:
        """The stored JSON settings (``motion`` and ``image`` as paths relative to the job folder)."""
        return json.loads((self.job_dir(job_id) / "spec.json").read_text(encoding="utf-8"))

    def job_spec_dict(self, job_id: str) -> dict:
        """Settings ready for ``backend.stages.job.JobSpec.from_dict``: motion as an arrays dict (+ fps), the image
        as an absolute path."""
        folder = self.job_dir(job_id)
        spec = self.spec(job_id)
        with np.load(folder / "inputs" / "motion.npz", allow_pickle=False) as data:
            motion = {name: data[name] for name in data.files if name != "fps"}
            motion["fps"] = float(data["fps"])
        spec["motion"] = motion
        if spec.get("image"):
            spec["image"] = str(folder / spec["image"])
        return spec

    def state(self, job_id: str) -> dict:
        return json.loads((self.job_dir(job_id) / "state.json").read_text(encoding="utf-8"))

    def update_state(self, job_id: str, **changes: Any) -> dict:
        """Merge ``changes`` into state.json (atomic replace) and return the new state."""
        state = self.state(job_id)
        state.update(changes)
        if state.get("state") not in STATES:
            raise ValueError(f"state: expected one of {STATES}, got {state.get('state')!r}")
        write_json_atomic(self.job_dir(job_id) / "state.json", state)
        return state

    def is_complete(self, job_id: str) -> bool:
        """True when the job's output folder is complete (it is renamed into place only when finished)."""
        return (self.output_dir(job_id) / "result.json").is_file()

    def result(self, job_id: str) -> dict:
        return json.loads((self.output_dir(job_id) / "result.json").read_text(encoding="utf-8"))

    def frame_paths(self, job_id: str) -> list[Path]:
        return sorted((self.output_dir(job_id) / "frames").glob("frame_*.ply"))

    def discard_partial(self, job_id: str, *, keep_checkpoint: bool = False) -> list[str]:
        """Remove leftovers of an interrupted write in a job folder (temporary siblings of output/ or of
        state.json, and the fit checkpoint unless ``keep_checkpoint``); returns the removed names."""
        removed = []
        for entry in self.job_dir(job_id).iterdir():
            if entry.name in KNOWN_ENTRIES or (keep_checkpoint and entry.name == CHECKPOINT_ENTRY):
                continue
            if entry.name.startswith(".") or entry.name.startswith("output"):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def recover(self) -> tuple[list[str], list[str]]:
        """Repair the folders after an unclean stop. Call once at server start, before any worker runs.

        A job left ``running`` becomes ``done`` when its output is complete (the server died between the
        rename and the state write), is queued again when its fit stage left a checkpoint (it resumes from
        it), else becomes ``interrupted``; partial writes are deleted; a ``done`` job whose output is missing
        becomes ``failed``. Unfinished ``.tmp-*`` job folders are deleted.

        Returns:
            (all job ids, ids still ``queued`` that should be queued again), oldest first.
        """
        for entry in self.root.iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
        queued = []
        ids = self.ids()
        for job_id in ids:
            try:
                state = self.state(job_id)
            except (OSError, ValueError) as exc:
                log.warning("job %s: unreadable state.json (%s); marking interrupted", job_id, exc)
                state = {"state": "running"}
                write_json_atomic(self.job_dir(job_id) / "state.json", state)
            current = state.get("state")
            resumable = (current == "running" and not self.is_complete(job_id)
                         and (self.job_dir(job_id) / CHECKPOINT_ENTRY).is_dir())
            removed = self.discard_partial(job_id, keep_checkpoint=resumable)
            if removed:
                log.info("job %s: removed partial files %s", job_id, removed)
            if current == "running":
                if self.is_complete(job_id):
                    self.update_state(job_id, state="done", finished=time.time(), fraction=1.0,
                                      message="finished (recovered after restart)")
                elif resumable:
                    self.update_state(job_id, state="queued", fraction=0.0,
                                      message="resuming from its checkpoint after a server restart")
                    queued.append(job_id)
                else:
                    self.update_state(job_id, state="interrupted", finished=time.time(),
                                      error="the server stopped while the job was running")
            elif current == "done" and not self.is_complete(job_id):
                self.update_state(job_id, state="failed", error="output folder missing")
            elif current == "queued":
                queued.append(job_id)
            elif current not in STATES:
                self.update_state(job_id, state="interrupted", error=f"unknown state {current!r}")
        return ids, queued


def _valid_id(job_id: Any) -> bool:
    return (isinstance(job_id, str) and 0 < len(job_id) <= 64 and not job_id.startswith(".")
            and all(c.isalnum() or c in "-_" for c in job_id))
