"""The one progress contract shared by every stage, the CLI, the server and the add-on.

A stage reports through ``progress(ProgressEvent)``; the callable may raise ``backend.core.errors.Cancelled`` to
stop the stage at its next safe point (every stage calls it between units of work).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        stage: Stage name (``body``, ``reconstruct``, ``skin``, ``render``, ``restore``, ``fit``, ``export``...).
        fraction: Progress of the whole job in [0, 1].
        message: Short human-readable text.
        eta_s: Estimated seconds until the job ends, or None when unknown.
        preview: Optional small RGB preview, uint8 [H, W, 3].
    """

    stage: str
    fraction: float
    message: str = ""
    eta_s: float | None = None
    preview: np.ndarray | None = None


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""


@dataclass
class StageProgress:
    """Maps a stage's own [0, 1] progress into a slice [start, end] of the job and estimates the ETA.

    Usage: ``report = StageProgress(progress, "fit", 0.4, 0.9); report(0.5, "iteration 500")``.
    """

    sink: ProgressFn
    stage: str
    start: float
    end: float
    job_started: float = field(default_factory=time.monotonic)

    def __call__(self, fraction: float, message: str = "", preview: np.ndarray | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        overall = self.start + (self.end - self.start) * fraction
        elapsed = time.monotonic() - self.job_started
        eta = elapsed * (1.0 - overall) / overall if overall > 1e-3 else None
        self.sink(ProgressEvent(self.stage, overall, message, eta, preview))


class StageTimer:
    """Collects wall-clock seconds per stage for result.json: ``with timer.stage(name): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)
