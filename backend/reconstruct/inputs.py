"""The reference view: image + mask, camera and the body posed like the photo; validated at the boundary.

Every problem a user can cause here (missing/unreadable image, camera missing or malformed, image size that
does not fit the camera, empty silhouette, a camera that does not see the body) raises ``InputError`` with one
line naming the field, the expected and the actual value (the CLI turns it into exit status 2).

Background: an image with a meaningful alpha channel is used as is (alpha = silhouette). An RGB image (or an
RGBA whose alpha is fully opaque) gets a simple border-colour removal: the median colour of a thin border is
the background, pixels farther than a tolerance from it are the person; a warning says so, because this only
works on plain backgrounds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.core.errors import InputError
from backend.render.cameras import Cameras

log = logging.getLogger(__name__)

MIN_MASK_PIXELS = 64
"""A silhouette with fewer pixels than this is "empty"."""
ASPECT_TOLERANCE = 0.01
"""Relative aspect-ratio difference accepted between image and camera (the image is then rescaled)."""


@dataclass(frozen=True)
class ReferencePose:
    """The body posed like the photo.

    Attributes:
        joint_transforms: Rest->posed transforms of the body's joints (world frame). [J, 4, 4]
        vertices: Posed body vertices (world frame). [V, 3]
        frame: Motion frame the pose came from, or None for a separate pose.
    """

    joint_transforms: Tensor
    vertices: Tensor
    frame: int | None


@dataclass(frozen=True)
class ReferenceView:
    """One photo of the person, its camera and the matching body pose.

    Attributes:
        rgb: Straight (not premultiplied) colour in [0, 1]. [H, W, 3]
        mask: Person silhouette in [0, 1]. [H, W]
        camera: The reference camera (one camera, image size H x W).
        pose: The body posed like the photo.
    """

    rgb: Tensor
    mask: Tensor
    camera: Cameras
    pose: ReferencePose


def load_reference_image(path: str | Path, warnings: list[str]) -> tuple[Tensor, Tensor]:
    """Read an image file and its silhouette.

    Args:
        path: PNG/JPEG/... file; RGBA preferred.
        warnings: Human-readable warnings are appended here (RGB input -> background removal).

    Returns:
        ``(rgb [H, W, 3], mask [H, W])`` float32 in [0, 1].

    Raises:
        InputError: the file is missing or not a readable image, or the silhouette is empty.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image: file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            has_alpha = "A" in img.getbands() or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"image: {path} is not a readable image ({exc})") from None
    rgb = torch.from_numpy(array[..., :3].copy())
    mask = torch.from_numpy(array[..., 3].copy()) if has_alpha else None
    if mask is not None and float(mask.min()) >= 1.0:
        warnings.append(f"image: {path.name} has an alpha channel that is fully opaque; removing the background "
                        "by border colour instead")
        mask = None
    if mask is None:
        mask = remove_border_background(rgb)
        warnings.append(f"image: {path.name} has no transparency; the background was removed by border colour "
                        "(works on plain backgrounds only — an RGBA cut-out is more reliable)")
    if int((mask > 0.5).sum()) < MIN_MASK_PIXELS:
        raise InputError(f"image: the person's silhouette is empty (fewer than {MIN_MASK_PIXELS} pixels with "
                         f"alpha > 0.5 in {path.name})")
    return rgb, mask


def remove_border_background(rgb: Tensor, *, border: float = 0.02, min_tolerance: float = 0.1) -> Tensor:
    """Silhouette of an RGB image on a plain background: pixels unlike the border colour.

    The background colour is the median of a border ``border`` x the shorter side wide; a pixel is foreground
    where its distance to that colour exceeds ``max(min_tolerance, 4 x the border's spread)``. The mask is
    cleaned by a 3 x 3 opening and softened to one-pixel anti-aliased edges.

    Args:
        rgb: Colour in [0, 1]. [H, W, 3]
        border: Border width as a fraction of the shorter side (at least one pixel).
        min_tolerance: Smallest colour distance counted as foreground.

    Returns:
        Mask in [0, 1]. [H, W]
    """
    h, w, _ = rgb.shape
    b = max(1, int(round(border * min(h, w))))
    edge = torch.cat([rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3), rgb[:, :b].reshape(-1, 3),
                      rgb[:, -b:].reshape(-1, 3)])
    background = edge.median(dim=0).values
    spread = (edge - background).norm(dim=-1).median()
    tolerance = max(min_tolerance, 4.0 * float(spread))
    distance = (rgb - background).norm(dim=-1)
    hard = (distance > tolerance).float()[None, None]
    # Opening removes isolated speckles, then a 3x3 average softens the edge.
    opened = -torch.nn.functional.max_pool2d(-hard, 3, 1, 1)
    opened = torch.nn.functional.max_pool2d(opened, 3, 1, 1)
    soft = torch.nn.functional.avg_pool2d(opened, 3, 1, 1, count_include_pad=False)
    return soft[0, 0].clamp(0.0, 1.0)


def reference_camera(camera: dict | Cameras | None, image_size: tuple[int, int]) -> Cameras:
    """Parse and check the reference camera against the image size (width, height).

    An image with the camera's aspect ratio but another resolution is accepted: the intrinsics are rescaled.

    Raises:
        InputError: no camera, malformed camera JSON, several cameras, or a different aspect ratio.
    """
    if camera is None:
        raise InputError("camera: required with an image (camera JSON, Blender convention: the camera the "
                         "photo was lined up with)")
    cams = camera if isinstance(camera, Cameras) else _parse_camera(camera)
    if len(cams) != 1:
        raise InputError(f"camera: expected one reference camera, got {len(cams)}")
    width, height = image_size
    if (cams.width, cams.height) == (width, height):
        return cams
    cam_aspect, img_aspect = cams.width / cams.height, width / height
    if abs(cam_aspect / img_aspect - 1.0) > ASPECT_TOLERANCE:
        raise InputError(f"image: size {width}x{height} does not match the camera's {cams.width}x{cams.height} "
                         f"(aspect {img_aspect:.3f} vs {cam_aspect:.3f})")
    sx, sy = width / cams.width, height / cams.height
    return Cameras(width=width, height=height, fx=cams.fx * sx, fy=cams.fy * sy, cx=cams.cx * sx, cy=cams.cy * sy,
                   world_from_camera=cams.world_from_camera)


def _parse_camera(data: dict) -> Cameras:
    if not isinstance(data, dict):
        raise InputError(f"camera: expected a camera JSON object, got {type(data).__name__}")
    if "frames" in data:
        frames = data["frames"]
        if not isinstance(frames, list):
            raise InputError(f"camera.frames: expected a list of cameras, got {type(frames).__name__}")
        return Cameras.from_dicts(frames, where="camera.frames")
    return Cameras.from_dicts([data], where="camera")


def reference_pose(body: BodyModel, motion, frame: int | None) -> ReferencePose:
    """The body posed at ``frame`` of ``motion`` (a ``backend.motion.Motion``).

    Raises:
        InputError: ``frame`` is outside the motion.
    """
    if frame is None:
        frame = 0
    if not 0 <= frame < motion.num_frames:
        raise InputError(f"reference_frame: expected a frame in [0, {motion.num_frames - 1}], got {frame}")
    as_t = lambda a: torch.as_tensor(np.asarray(a)[frame:frame + 1], dtype=body.dtype)  # noqa: E731
    hand = None if motion.pose_hand is None else as_t(motion.pose_hand)
    with torch.no_grad():
        out = body(torch.as_tensor(motion.betas, dtype=body.dtype), as_t(motion.root_orient),
                   as_t(motion.pose_body), as_t(motion.trans), hand)
    return ReferencePose(out.joint_transforms[0].float(), out.vertices[0].float(), frame)


def check_body_in_view(camera: Cameras, vertices: Tensor, mask: Tensor, warnings: list[str]) -> None:
    """Fail when the camera does not see the posed body; warn when body and silhouette barely overlap.

    Args:
        camera: One camera.
        vertices: Posed body vertices. [V, 3]
        mask: Silhouette. [H, W]
        warnings: Appended to when the overlap is poor.

    Raises:
        InputError: the body is behind the camera or projects outside the image.
    """
    uv, depth = camera.project(vertices.to(camera.fx.dtype))
    uv, depth = uv[0], depth[0]
    if float(depth.median()) <= 0.0:
        raise InputError("camera: faces away from the body (the posed body is behind the camera; check the "
                         "camera's world_from_camera and the reference frame)")
    front = depth > 0
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
    if not bool(inside.any()):
        raise InputError(f"camera: the posed body projects outside the {camera.width}x{camera.height} image "
                         "(check the camera and the reference frame)")
    px = uv[inside].long()
    on_mask = mask[px[:, 1].clamp(0, camera.height - 1), px[:, 0].clamp(0, camera.width - 1)] > 0.5
    fraction = float(on_mask.float().mean())
    if fraction < 0.5:
        warnings.append(f"reference view: only {100 * fraction:.0f}% of the posed body falls on the photo's "
                        "silhouette; line the body up with the photo (or enable auto-alignment)")


def load_reference_view(
    image: str | Path,
    camera: dict | Cameras | None,
    body: BodyModel,
    motion,
    frame: int | None,
    warnings: list[str],
) -> ReferenceView:
    """Everything the fit needs about the photo, validated.

    Args:
        image: Image path.
        camera: Camera JSON dict (or Cameras).
        body: The body model.
        motion: The job's motion (its betas shape the body; ``frame`` picks the pose).
        frame: Motion frame matching the photo (None: frame 0, with a warning).
        warnings: Human-readable warnings are appended here.
    """
    if camera is None:
        raise InputError("camera: required with an image (camera JSON, Blender convention: the camera the "
                         "photo was lined up with)")
    rgb, mask = load_reference_image(image, warnings)
    cams = reference_camera(camera, (rgb.shape[1], rgb.shape[0]))
    if frame is None:
        warnings.append("reference_frame: not given; using motion frame 0 as the pose of the photo")
    pose = reference_pose(body, motion, frame)
    check_body_in_view(cams, pose.vertices, mask, warnings)
    return ReferenceView(rgb=rgb, mask=mask, camera=cams, pose=pose)
