"""Job specification and the job output folder (docs/design.md §3): validation and layout.

A job folder is written under a temporary sibling (``.<name>.tmp-<pid>-<n>``) and renamed into place, so a
folder named like the job is either complete or absent. ``result.json`` is always the last file written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.core.errors import InputError
from backend.diffusion.restore import sampler_settings
from backend.dynamics.simulate import CLOTH_PRESETS
from backend.motion.motion import Motion, motion_from_arrays
from backend.reconstruct.garment import garment_override

SCHEMA_VERSION = 1
QUALITY_PRESETS = ("preview", "standard", "high")
MAX_GAUSSIANS = 2_000_000
MAX_FRAMES = 100_000
CLOTH_NAME = "cloth.npz"
"""The job's cloth layer: garment mesh per frame and the binding of its Gaussians (``motion.cloth.ClothLayer``)."""
DYNAMICS = ("auto", "cloth", "none")
CLOTH_PRESET_NAMES = tuple(CLOTH_PRESETS)


@dataclass(frozen=True)
class JobSpec:
    """Everything one animation job needs.

    Attributes:
        motion: The motion (world frame).
        body: ``"default"`` or the path of an SMPL/SMPL-X model file.
        gaussians: Number of canonical Gaussians.
        seed: Seed of every random draw.
        quality: Quality preset (``preview`` | ``standard`` | ``high``).
        prior: ``"none"`` (rigid layer only) or a video-prior model id.
        image: Reference image path, or None (then the procedural default subject).
        camera: Reference camera (camera JSON dict, Blender convention) or None.
        reference_frame: Motion frame whose pose matches the reference image, or None.
        import_gaussians: Path of a canonical 3DGS PLY to bind to the body instead of reconstructing, or None.
        renders: Write preview renders (turntable, contact sheet) into ``renders/``.
        sampler: The restoration's sampler preset: ``"paper"`` (γ = σ, steps and strength from ``quality``) or
            ``"released"`` (the released code: 7 steps, strength 0.7, λ 0.05, γ = 1, CFG 5, 81 × 480×832).
        sampler_settings: Per-job overrides of the sampler (``steps``, ``strength``, ``shift``, ``guidance``,
            ``guidance_schedule``, ``gamma``, ``cfg``), over the preset.
        dynamics: Clothing dynamics: ``auto`` (cloth when a loose garment is found), ``cloth`` or ``none``
            (the garment surface skinned rigidly).
        cloth_preset: The fabric of the simulation (``light``, ``medium``, ``heavy``).
        garment: Override of the garment detection: ``type`` (auto, none, skirt, dress), ``waist_height`` and
            ``hem_height`` (metres above the soles in the rest pose).
    """

    motion: Motion
    body: str = "default"
    gaussians: int = 40_000
    seed: int = 0
    quality: str = "preview"
    prior: str = "none"
    image: str | None = None
    camera: dict | None = None
    reference_frame: int | None = None
    import_gaussians: str | None = None
    renders: bool = False
    sampler: str = "paper"
    sampler_settings: dict = field(default_factory=dict)
    dynamics: str = "auto"
    cloth_preset: str = "medium"
    garment: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the first invalid field."""
        if not isinstance(self.gaussians, int) or isinstance(self.gaussians, bool) or not (
                1 <= self.gaussians <= MAX_GAUSSIANS):
            raise InputError(f"gaussians: expected an integer in [1, {MAX_GAUSSIANS}], got {self.gaussians!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not (0 <= self.seed < 2**63):
            raise InputError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if self.quality not in QUALITY_PRESETS:
            raise InputError(f"quality: expected one of {QUALITY_PRESETS}, got {self.quality!r}")
        if not isinstance(self.body, str) or not self.body:
            raise InputError(f"body: expected 'default' or a model file path, got {self.body!r}")
        if not isinstance(self.prior, str) or not self.prior:
            raise InputError(f"prior: expected 'none' or a model id, got {self.prior!r}")
        if self.motion.num_frames > MAX_FRAMES:
            raise InputError(f"motion: {self.motion.num_frames} frames exceeds the limit of {MAX_FRAMES}")
        if self.reference_frame is not None and not (0 <= self.reference_frame < self.motion.num_frames):
            raise InputError(
                f"reference_frame: expected a frame in [0, {self.motion.num_frames - 1}], got {self.reference_frame}")
        if self.camera is not None and not isinstance(self.camera, dict):
            raise InputError(f"camera: expected a camera JSON object, got {type(self.camera).__name__}")
        if not isinstance(self.sampler_settings, dict):
            raise InputError(f"sampler_settings: expected an object, got {type(self.sampler_settings).__name__}")
        sampler_settings(self.sampler, self.sampler_settings, steps=1, strength=0.5)  # raises naming the field
        if self.dynamics not in DYNAMICS:
            raise InputError(f"dynamics: expected one of {DYNAMICS}, got {self.dynamics!r}")
        if self.cloth_preset not in CLOTH_PRESET_NAMES:
            raise InputError(f"cloth_preset: expected one of {CLOTH_PRESET_NAMES}, got {self.cloth_preset!r}")
        garment_override(self.garment)  # raises naming garment.<field>

    # ---- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings; the motion's arrays are under ``"motion"`` as numpy arrays."""
        return {
            "motion": self.motion.arrays(),
            "body": self.body,
            "gaussians": self.gaussians,
            "seed": self.seed,
            "quality": self.quality,
            "prior": self.prior,
            "image": self.image,
            "camera": self.camera,
            "reference_frame": self.reference_frame,
            "import_gaussians": self.import_gaussians,
            "renders": self.renders,
            "sampler": self.sampler,
            "sampler_settings": dict(self.sampler_settings),
            "dynamics": self.dynamics,
            "cloth_preset": self.cloth_preset,
            "garment": dict(self.garment),
            "extras": dict(self.extras),
        }

    def settings_dict(self) -> dict[str, Any]:
        """``to_dict()`` without the motion arrays (for result.json and wire headers)."""
        settings = self.to_dict()
        del settings["motion"]
        return settings

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> JobSpec:
        """Build and validate a spec; ``data["motion"]`` is a mapping of motion arrays (any accepted layout).

        Raises:
            InputError: naming the field.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"job: expected an object, got {type(data).__name__}")
        known = {"motion", "body", "gaussians", "seed", "quality", "prior", "image", "camera", "reference_frame",
                 "import_gaussians", "renders", "sampler", "sampler_settings", "dynamics", "cloth_preset", "garment",
                 "extras"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"job: unknown field(s) {unknown}")
        if "motion" not in data or not isinstance(data["motion"], Mapping):
            raise InputError("motion: required, a mapping of motion arrays")
        motion = data["motion"] if isinstance(data["motion"], Motion) else motion_from_arrays(data["motion"])
        kwargs = {key: data[key] for key in known - {"motion"} if key in data and data[key] is not None}
        for key, kind in (("gaussians", int), ("seed", int), ("reference_frame", int)):
            if key in kwargs and (not isinstance(kwargs[key], (int, np.integer)) or isinstance(kwargs[key], bool)):
                raise InputError(f"{key}: expected an integer, got {kwargs[key]!r}")
            if key in kwargs:
                kwargs[key] = kind(kwargs[key])
        for key in ("body", "quality", "prior", "image", "import_gaussians", "sampler", "dynamics", "cloth_preset"):
            if key in kwargs and not isinstance(kwargs[key], str):
                raise InputError(f"{key}: expected a string, got {type(kwargs[key]).__name__}")
        if "renders" in kwargs and not isinstance(kwargs["renders"], bool):
            raise InputError(f"renders: expected true/false, got {kwargs['renders']!r}")
        return JobSpec(motion=motion, **kwargs)


# ---- output folder ---------------------------------------------------------------------------------------
def frame_filename(index: int) -> str:
    return f"frame_{index:06d}.ply"


def read_result(job_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a job folder's result.json (InputError if absent or invalid)."""
    path = Path(job_dir) / "result.json"
    if not path.is_file():
        raise InputError(f"job: {job_dir} has no result.json (not a finished job folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"job: {path} is not valid JSON ({exc})") from exc
