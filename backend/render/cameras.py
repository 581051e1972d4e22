"""Pinhole cameras in the Blender convention, and the camera JSON of docs/design.md §3.

A camera looks down its local −Z axis with +Y up (Blender). ``world_from_camera`` is the camera's object matrix
in the Blender world (Z up, metres). Intrinsics are in pixels with the image origin at the top-left corner and
y pointing down (pixel centres at +0.5, so the image centre is ``(width / 2, height / 2)``).

OpenCV view matrices (x right, y down, z forward), which the rasterizers use, are derived here and nowhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backend.core.errors import InputError

# Blender camera axes (x right, y up, looking down −z) -> OpenCV camera axes (x right, y down, looking down +z).
_CV_FROM_BLENDER_CAMERA = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))

_INTRINSIC_FIELDS = ("fx", "fy", "cx", "cy")


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class Cameras:
    """A batch of C pinhole cameras that share one image size.

    Attributes:
        width: Image width in pixels (shared by the batch).
        height: Image height in pixels (shared by the batch).
        fx: Focal length along x in pixels. [C]
        fy: Focal length along y in pixels. [C]
        cx: Principal point x in pixels from the left edge. [C]
        cy: Principal point y in pixels from the top edge. [C]
        world_from_camera: Blender-convention camera-to-world matrices. [C, 4, 4]
    """

    width: int
    height: int
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    world_from_camera: Tensor

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InputError(f"Cameras.{name}: expected a positive integer, got {value!r}")
        c = self.world_from_camera.shape[0] if self.world_from_camera.ndim == 3 else -1
        if tuple(self.world_from_camera.shape) != (c, 4, 4):
            raise InputError(
                f"Cameras.world_from_camera: expected shape [C, 4, 4], got {list(self.world_from_camera.shape)}")
        for name in _INTRINSIC_FIELDS:
            value = getattr(self, name)
            if tuple(value.shape) != (c,):
                raise InputError(f"Cameras.{name}: expected shape [{c}], got {list(value.shape)}")
        for name in ("fx", "fy"):
            if bool((getattr(self, name) <= 0).any()):
                raise InputError(f"Cameras.{name}: expected positive focal lengths, got {getattr(self, name).tolist()}")

    # ---- construction ------------------------------------------------------------------------------------
    @staticmethod
    def create(
        world_from_camera: Tensor,
        *,
        width: int,
        height: int,
        fx: Tensor | float,
        fy: Tensor | float | None = None,
        cx: Tensor | float | None = None,
        cy: Tensor | float | None = None,
    ) -> Cameras:
        """Build a batch, broadcasting scalar intrinsics; principal point defaults to the image centre.

        Args:
            world_from_camera: Blender-convention camera-to-world matrices. [C, 4, 4] or [4, 4]
            width: Image width in pixels.
            height: Image height in pixels.
            fx: Focal length along x in pixels. [C] or scalar
            fy: Focal length along y (defaults to ``fx``). [C] or scalar
            cx: Principal point x (defaults to ``width / 2``). [C] or scalar
            cy: Principal point y (defaults to ``height / 2``). [C] or scalar
        """
        m = torch.as_tensor(world_from_camera)
        if not m.is_floating_point():
            m = m.to(torch.float32)
        if m.ndim == 2:
            m = m[None]
        n = m.shape[0] if m.ndim == 3 else 0

        def vec(v: Tensor | float) -> Tensor:
            return torch.as_tensor(v, dtype=m.dtype, device=m.device).expand(n).clone()

        return Cameras(
            width=int(width),
            height=int(height),
            fx=vec(fx),
            fy=vec(fx if fy is None else fy),
            cx=vec(width / 2.0 if cx is None else cx),
            cy=vec(height / 2.0 if cy is None else cy),
            world_from_camera=m,
        )

    @staticmethod
    def from_fov(world_from_camera: Tensor, *, width: int, height: int, fov_y_deg: float) -> Cameras:
        """Cameras with square pixels, a centred principal point and the given vertical field of view."""
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
        return Cameras.create(world_from_camera, width=width, height=height, fx=f)

    @staticmethod
    def concatenate(parts: Sequence[Cameras]) -> Cameras:
        """Join batches that share one image size."""
        if not parts:
            raise InputError("Cameras.concatenate: need at least one batch")
        for i, p in enumerate(parts):
            if (p.width, p.height) != (parts[0].width, parts[0].height):
                raise InputError(
                    f"Cameras.concatenate: batch {i} is {p.width}x{p.height}, "
                    f"expected {parts[0].width}x{parts[0].height} like batch 0")
        return Cameras(
            width=parts[0].width,
            height=parts[0].height,
            **{name: torch.cat([getattr(p, name) for p in parts])
               for name in (*_INTRINSIC_FIELDS, "world_from_camera")},
        )

    # ---- batch access ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.world_from_camera.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(
            width=self.width,
            height=self.height,
            **{name: getattr(self, name)[index] for name in (*_INTRINSIC_FIELDS, "world_from_camera")},
        )

    @property
    def device(self) -> torch.device:
        return self.world_from_camera.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        """Move every tensor (and optionally cast them)."""
        return Cameras(
            width=self.width,
            height=self.height,
            **{name: getattr(self, name).to(device=device, dtype=dtype)
               for name in (*_INTRINSIC_FIELDS, "world_from_camera")},
        )

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras for an image of another size (same aspect ratio): intrinsics scaled per axis, so a
        pixel of the new image covers the area of the old ones it replaces (``width/self.width`` of them)."""
        if width < 1 or height < 1:
            raise InputError(f"Cameras.resized: expected a positive size, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        return Cameras(width=int(width), height=int(height), fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx,
                       cy=self.cy * sy, world_from_camera=self.world_from_camera)

    # ---- derived matrices (OpenCV convention lives here only) --------------------------------------------
    def view_matrices(self) -> Tensor:
        """OpenCV world-to-camera matrices (x right, y down, z forward). [C, 4, 4]

        Computed in float64 and cast back, so that near-degenerate rigid matrices invert cleanly.
        """
        m = self.world_from_camera.to(torch.float64)
        flip = _CV_FROM_BLENDER_CAMERA.to(m.device)
        return (flip @ torch.linalg.inv(m)).to(self.world_from_camera.dtype)

    def intrinsics(self) -> Tensor:
        """Pinhole matrices K. [C, 3, 3]"""
        k = torch.zeros(len(self), 3, 3, dtype=self.fx.dtype, device=self.fx.device)
        k[:, 0, 0] = self.fx
        k[:, 1, 1] = self.fy
        k[:, 0, 2] = self.cx
        k[:, 1, 2] = self.cy
        k[:, 2, 2] = 1.0
        return k

    @property
    def positions(self) -> Tensor:
        """Camera centres in the world. [C, 3]"""
        return self.world_from_camera[:, :3, 3]

    def pixels_per_metre(self, point: Tensor) -> Tensor:
        """Image pixels per metre of a surface facing each camera at ``point`` [3]: ``fy / depth``. [C]"""
        depth = (self.positions - point.to(self.fx.dtype).to(self.fx.device)).norm(dim=-1)
        return self.fy / depth.clamp_min(1e-6)

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points to pixel coordinates.

        Args:
            points: World points. [P, 3]

        Returns:
            ``(uv, depth)``: pixel coordinates (x right, y down, pixel centres at +0.5) [C, P, 2] and the
            distance in front of the camera along its viewing axis [C, P].
        """
        view = self.view_matrices().to(points.dtype)
        pc = torch.einsum("cij,pj->cpi", view[:, :3, :3], points) + view[:, None, :3, 3]
        z = pc[..., 2]
        u = self.fx[:, None] * pc[..., 0] / z + self.cx[:, None]
        v = self.fy[:, None] * pc[..., 1] / z + self.cy[:, None]
        return torch.stack([u, v], dim=-1), z

    # ---- JSON (docs/design.md §3) -----------------------------------------------------------------------------
    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-ready dictionary per camera."""
        out = []
        for i in range(len(self)):
            out.append({
                "width": self.width,
                "height": self.height,
                **{name: float(getattr(self, name)[i]) for name in _INTRINSIC_FIELDS},
                "world_from_camera": [[float(v) for v in row] for row in self.world_from_camera[i].tolist()],
            })
        return out

    @staticmethod
    def from_dicts(cameras: Sequence[dict[str, Any]], *, where: str = "frames") -> Cameras:
        """Parse camera dictionaries; errors name the field (e.g. ``frames[3].world_from_camera``)."""
        if len(cameras) == 0:
            raise InputError(f"{where}: expected at least one camera, got none")
        matrices, intr = [], {name: [] for name in _INTRINSIC_FIELDS}
        size = None
        for i, cam in enumerate(cameras):
            prefix = f"{where}[{i}]"
            if not isinstance(cam, dict):
                raise InputError(f"{prefix}: expected an object, got {type(cam).__name__}")
            for name in ("width", "height", *_INTRINSIC_FIELDS, "world_from_camera"):
                if name not in cam:
                    raise InputError(f"{prefix}.{name}: missing")
            wh = []
            for name in ("width", "height"):
                v = cam[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
                    raise InputError(f"{prefix}.{name}: expected a positive integer, got {v!r}")
                wh.append(int(v))
            if size is None:
                size = tuple(wh)
            elif tuple(wh) != size:
                raise InputError(
                    f"{prefix}.width/height: expected {size[0]}x{size[1]} like the first camera, got {wh[0]}x{wh[1]}")
            for name in _INTRINSIC_FIELDS:
                v = cam[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise InputError(f"{prefix}.{name}: expected a finite number, got {v!r}")
                if name in ("fx", "fy") and v <= 0:
                    raise InputError(f"{prefix}.{name}: expected a positive focal length in pixels, got {v!r}")
                intr[name].append(float(v))
            m = cam["world_from_camera"]
            try:
                t = torch.tensor(m, dtype=torch.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{prefix}.world_from_camera: expected a 4x4 array of numbers ({exc})") from None
            if tuple(t.shape) != (4, 4):
                raise InputError(f"{prefix}.world_from_camera: expected shape [4, 4], got {list(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise InputError(f"{prefix}.world_from_camera: contains non-finite values")
            if not torch.allclose(t[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6):
                raise InputError(f"{prefix}.world_from_camera: expected last row [0, 0, 0, 1], got {t[3].tolist()}")
            if abs(float(torch.linalg.det(t[:3, :3]))) < 1e-9:
                raise InputError(f"{prefix}.world_from_camera: rotation part is singular")
            matrices.append(t)
        assert size is not None
        return Cameras(
            width=size[0],
            height=size[1],
            **{name: torch.tensor(values, dtype=torch.float32) for name, values in intr.items()},
            world_from_camera=torch.stack(matrices).to(torch.float32),
        )


def load_cameras(path: str | Path) -> Cameras:
    """Read a camera JSON file: one camera object or ``{"frames": [camera, ...]}`` (docs/design.md §3).

    Raises:
        InputError: the file is not valid JSON or a field is missing or malformed (the message names it).
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "frames" in data:
        if not isinstance(data["frames"], list):
            raise InputError(f"{path}: frames: expected a list of cameras, got {type(data['frames']).__name__}")
        return Cameras.from_dicts(data["frames"], where="frames")
    if isinstance(data, dict):
        return Cameras.from_dicts([data], where="camera")
    raise InputError(f"{path}: expected a camera object or {{\"frames\": [...]}}, got {type(data).__name__}")


def save_cameras(cameras: Cameras, path: str | Path) -> Path:
    """Write cameras as ``{"frames": [camera, ...]}`` (always the sequence form, even for one camera)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"frames": cameras.to_dicts()}, indent=1))
    return path


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Blender-convention camera-to-world matrices that look from ``eye`` at ``target``.

    The camera's −Z points at the target and its +Y is as close to ``up`` (default world +Z) as possible.

    Args:
        eye: Camera centres. [C, 3]
        target: Points to look at. [C, 3] or [3]
        up: World up direction. [3]

    Returns:
        world_from_camera. [C, 4, 4]
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64).expand_as(eye)
    up_t = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up)
    up_t = up_t.to(torch.float64)
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +Z
    right = torch.linalg.cross(up_t.expand_as(back), back)
    degenerate = right.norm(dim=-1) < 1e-9
    if bool(degenerate.any()):  # looking straight along `up`: pick world +Y as a fallback up
        alt = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(back)
        right = torch.where(degenerate[:, None], torch.linalg.cross(alt, back), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(back, right)
    m = torch.zeros(eye.shape[0], 4, 4, dtype=torch.float64)
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, cam_up, back, eye
    m[:, 3, 3] = 1.0
    return m.to(torch.float32)
