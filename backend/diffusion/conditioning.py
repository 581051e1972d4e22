"""Conditions for the video prior, rendered exactly from our own 3D state instead of estimated from pixels.

* Pose video: the body's 3D joints -> the 18 OpenPose/COCO body keypoints -> projected with the trajectory's
  cameras -> drawn as the DWPose annotator draws them (OpenPose limb colours, limbs filled then dimmed to 60 %,
  keypoint discs on top, black background). The paper runs DWPose on the coarse rendering; projecting known
  joints is exact and free.
* Preserve mask: per-Gaussian label "identity-critical part and not loose" (face/hair, hands, feet minus loose
  garments), rendered as an extra feature channel through ``backend.render.render`` and thresholded, then
  brought to the latent grid with ``mask_to_latent`` (max-pool ×8 spatially, first frame alone then groups of 4).
* Reference image: padded to the video's aspect ratio, never stretched (``backend.diffusion.wan.pad_reference_image``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.errors import InputError

# COCO-18 keypoints in OpenPose order.
OPENPOSE_KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
# OpenPose limbs (0-based keypoint pairs); DWPose/ControlNet draw the first 17.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
NUM_DRAWN_LIMBS = 17
# The standard OpenPose colours (RGB), one per keypoint and per limb.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_DIM = 0.6  # DWPose multiplies the limb layer by 0.6 before drawing the keypoints

# Keypoints taken directly from SMPL-family joints (the person's own left/right, as OpenPose).
_DIRECT_JOINTS = {
    2: "R_Shoulder", 3: "R_Elbow", 4: "R_Wrist", 5: "L_Shoulder", 6: "L_Elbow", 7: "L_Wrist",
    8: "R_Hip", 9: "R_Knee", 10: "R_Ankle", 11: "L_Hip", 12: "L_Knee", 13: "L_Ankle",
}
# Face keypoints as offsets from the Head joint in the body's rest frame (SMPL: +Y up, +Z forward, +X = the
# person's left), metres; carried by the Head joint's rotation. Calibrated on the default body (nose tip
# 0.12 m in front of the head joint); ears on the skull's sides.
FACE_OFFSETS = {
    0: (0.0, 0.02, 0.11),  # nose
    14: (-0.032, 0.055, 0.085),  # right eye
    15: (0.032, 0.055, 0.085),  # left eye
    16: (-0.075, 0.035, 0.0),  # right ear
    17: (0.075, 0.035, 0.0),  # left ear
}


@dataclass(frozen=True)
class PoseStyle:
    """How skeletons are drawn (DWPose's defaults: 4-pixel limb half-width and keypoint radius)."""

    stick_width: float = 4.0
    radius: float = 4.0


def openpose_keypoints(joints: Tensor, joint_transforms: Tensor, joint_names: Sequence[str]) -> Tensor:
    """The 18 OpenPose body keypoints from posed SMPL-family joints.

    Body keypoints are the joints themselves; the neck is the shoulders' midpoint (as DWPose defines it); the
    nose, eyes and ears are ``FACE_OFFSETS`` from the Head joint, rotated with it.

    Args:
        joints: Posed joint positions, world. [F, J, 3]
        joint_transforms: Rest -> posed world transforms of the joints. [F, J, 4, 4]
        joint_names: SMPL-family joint names (``backend.body.parts``), length J.

    Returns:
        World keypoints in OpenPose order. [F, 18, 3]
    """
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise InputError(f"joints: expected [F, J, 3], got {list(joints.shape)}")
    if tuple(joint_transforms.shape) != (*joints.shape[:2], 4, 4):
        raise InputError(
            f"joint_transforms: expected [{joints.shape[0]}, {joints.shape[1]}, 4, 4], "
            f"got {list(joint_transforms.shape)}"
        )
    names = list(joint_names)
    needed = set(_DIRECT_JOINTS.values()) | {"Head"}
    missing = sorted(needed - set(names))
    if missing:
        raise InputError(f"joint_names: missing {', '.join(missing)} (need SMPL-family joint names)")
    if len(names) != joints.shape[1]:
        raise InputError(f"joint_names: expected {joints.shape[1]} names, got {len(names)}")
    out = joints.new_zeros(joints.shape[0], len(OPENPOSE_KEYPOINTS), 3)
    for k, name in _DIRECT_JOINTS.items():
        out[:, k] = joints[:, names.index(name)]
    out[:, 1] = 0.5 * (out[:, 2] + out[:, 5])
    head = names.index("Head")
    rot = joint_transforms[:, head, :3, :3]
    for k, offset in FACE_OFFSETS.items():
        off = torch.tensor(offset, dtype=joints.dtype, device=joints.device)
        out[:, k] = joints[:, head] + rot @ off
    return out


def project_keypoints(keypoints: Tensor, cameras) -> tuple[Tensor, Tensor]:
    """Project per-frame keypoints with per-frame cameras.

    Args:
        keypoints: World points. [F, K, 3]
        cameras: ``backend.render.Cameras`` with F cameras.

    Returns:
        ``(uv [F, K, 2] pixels, x right, y down, pixel centres at +0.5; visible [F, K] bool)``, visible = in
        front of the camera and inside the image.
    """
    if len(cameras) != keypoints.shape[0]:
        raise InputError(f"cameras: expected {keypoints.shape[0]} (one per frame), got {len(cameras)}")
    uvs, depths = [], []
    for f in range(keypoints.shape[0]):
        uv, depth = cameras[f].project(keypoints[f].to(cameras.world_from_camera.dtype))
        uvs.append(uv[0])
        depths.append(depth[0])
    uv, depth = torch.stack(uvs), torch.stack(depths)
    visible = (depth > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < cameras.width) & (uv[..., 1] >= 0) & (
        uv[..., 1] < cameras.height)
    return uv, visible


def _ellipse_polygon(center: np.ndarray, half_length: float, half_width: float, angle_deg: float) -> list:
    """The outline of a rotated ellipse, one vertex per degree (OpenCV's ellipse2Poly)."""
    t = np.deg2rad(np.arange(0, 361, 1.0))
    a = math.radians(angle_deg)
    x = half_length * np.cos(t)
    y = half_width * np.sin(t)
    px = center[0] + x * math.cos(a) - y * math.sin(a)
    py = center[1] + x * math.sin(a) + y * math.cos(a)
    return [(float(u), float(v)) for u, v in zip(px, py)]


def draw_pose_frame(uv: np.ndarray, visible: np.ndarray, height: int, width: int,
                    style: PoseStyle = PoseStyle()) -> np.ndarray:
    """Draw one OpenPose body skeleton like the DWPose annotator.

    Args:
        uv: Keypoint pixel coordinates (x right, y down, pixel centres at +0.5). [18, 2]
        visible: Which keypoints to draw. [18] bool
        height, width: Image size.
        style: Limb half-width and keypoint radius in pixels.

    Returns:
        uint8 RGB image, black background. [height, width, 3]
    """
    from PIL import Image, ImageDraw

    # PIL's integer pixel grid has pixel centres at integers; ours at +0.5.
    pts = np.asarray(uv, dtype=np.float64) - 0.5
    vis = np.asarray(visible, dtype=bool)
    limbs = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(limbs)
    for i in range(NUM_DRAWN_LIMBS):
        a, b = OPENPOSE_LIMBS[i]
        if not (vis[a] and vis[b]):
            continue
        center = 0.5 * (pts[a] + pts[b])
        d = pts[a] - pts[b]
        length = float(np.hypot(d[0], d[1]))
        angle = math.degrees(math.atan2(d[1], d[0]))
        draw.polygon(_ellipse_polygon(center, length / 2, style.stick_width, angle), fill=OPENPOSE_COLORS[i])
    canvas = Image.fromarray((np.asarray(limbs, dtype=np.float32) * LIMB_DIM).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    r = style.radius
    for k in range(len(OPENPOSE_KEYPOINTS)):
        if vis[k]:
            x, y = pts[k]
            draw.ellipse([x - r, y - r, x + r, y + r], fill=OPENPOSE_COLORS[k])
    return np.asarray(canvas)


def render_pose_video(joints: Tensor, joint_transforms: Tensor, joint_names: Sequence[str], cameras,
                      style: PoseStyle = PoseStyle()) -> Tensor:
    """OpenPose skeleton video of the posed body, one frame per camera.

    Args:
        joints: Posed joints, world, one pose per video frame. [F, J, 3]
        joint_transforms: Rest -> posed world joint transforms. [F, J, 4, 4]
        joint_names: SMPL-family joint names (J).
        cameras: ``backend.render.Cameras``, F cameras.
        style: Drawing sizes.

    Returns:
        RGB in [0, 1], float32. [F, H, W, 3]
    """
    keypoints = openpose_keypoints(joints, joint_transforms, joint_names)
    uv, visible = project_keypoints(keypoints, cameras)
    frames = [
        draw_pose_frame(uv[f].detach().cpu().numpy(), visible[f].cpu().numpy(), cameras.height, cameras.width,
                        style)
        for f in range(uv.shape[0])
    ]
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def preserve_labels(part_ids: Tensor, loose: Tensor | None) -> Tensor:
    """1 for Gaussians the sampler must keep (identity-critical part and not loose garment), else 0. [N] float"""
    from backend.body.parts import identity_critical

    keep = identity_critical(part_ids)
    if loose is not None:
        keep = keep & ~loose.bool()
    return keep.float()


def render_preserve_mask(gaussians, cameras, *, threshold: float = 0.5, settings=None) -> Tensor:
    """Render the pixel preserve mask of labelled Gaussians.

    Args:
        gaussians: One ``Gaussians`` (static) or a sequence with one posed ``Gaussians`` per frame, each with
            ``part_ids`` (and optionally ``loose``).
        cameras: ``backend.render.Cameras``, one per frame.
        threshold: A pixel is preserved where the composited label exceeds this.
        settings: ``backend.render.RenderSettings`` (backend choice, clipping).

    Returns:
        Binary mask, 1 = preserve. [F, H, W] float32
    """
    from backend.render.render import render

    frames = [gaussians] * len(cameras) if not isinstance(gaussians, (list, tuple)) else list(gaussians)
    if len(frames) != len(cameras):
        raise InputError(f"gaussians: expected {len(cameras)} posed sets (one per camera), got {len(frames)}")
    masks = []
    for f, g in enumerate(frames):
        if g.part_ids is None:
            raise InputError(f"gaussians[{f}].part_ids: the preserve mask needs per-Gaussian part labels")
        labels = preserve_labels(g.part_ids, g.loose)[:, None].to(g.means.dtype)
        with torch.no_grad():
            out = render(g, cameras[f], features=labels, settings=settings)
        masks.append((out.features[0, ..., 0] > threshold).float().cpu())
    return torch.stack(masks)


def mask_to_latent(mask: Tensor, spatial: int = 8, temporal: int = 4) -> Tensor:
    """Bring a pixel mask to the Wan latent grid: max-pool ×8 spatially, first frame alone then groups of 4.

    A latent cell is preserved if any pixel it covers is (max), matching the causal VAE's frame grouping.

    Args:
        mask: Pixel mask in [0, 1]. [F, H, W], F = 4k + 1, H and W multiples of 8.

    Returns:
        [(F - 1) / 4 + 1, H / 8, W / 8]
    """
    if mask.ndim != 3:
        raise InputError(f"mask: expected [F, H, W], got {list(mask.shape)}")
    num_frames, height, width = mask.shape
    if (num_frames - 1) % temporal or height % spatial or width % spatial:
        raise InputError(
            f"mask: expected F = {temporal}k+1 frames and H, W multiples of {spatial}, got {list(mask.shape)}")
    pooled = F.max_pool2d(mask.float()[:, None], kernel_size=spatial)[:, 0]
    first = pooled[:1]
    rest = pooled[1:].reshape(-1, temporal, *pooled.shape[1:]).amax(dim=1)
    return torch.cat([first, rest], dim=0)
