"""Layered motion (docs/method.md §1, §6): canonical Gaussians + residual field at time t -> skinning -> posed frame.

Garment Gaussians bound to a cloth layer (``motion/cloth.py``) take their triangle's transform in place of the
blended bone transforms: rigid LBS + cloth + residual.

``mu(t) = LBS_t(mu_c + Δp(mu_c, t))``, ``r(t) = q_blend(t) ⊗ Δq ⊗ r_c``, scale ``s_c + Δs`` (canonical space,
the default), or with ``FieldConfig.space == "posed"`` the residual is added after skinning. Without a field
(or with a freshly initialised one) this is exactly the rigid layer of ``backend.motion.skinning``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.motion.cloth import ClothFrame, ClothLayer
from backend.motion.residual import Residual, ResidualField, apply_residual, normalized_time, query_field
from backend.motion.skinning import blend_transforms, posed_frame, skin_means_quats, transform_means_quats


def layered_frame(
    canonical: Gaussians,
    field_: ResidualField | None,
    joint_transforms: Tensor,
    time: Tensor | float,
    *,
    residual: Residual | None = None,
    cloth: ClothFrame | None = None,
) -> Gaussians:
    """One posed frame of the layered motion (differentiable w.r.t. the field).

    Args:
        canonical: Rest-pose Gaussians with skin_weights [N, J].
        field_: The residual field, or None for the rigid layer.
        joint_transforms: Rest->posed transforms of this frame. [J, 4, 4]
        time: Normalised time of this frame in [−1, 1].
        residual: A precomputed ``query_field(field_, canonical.means, time)`` (skips the query).
        cloth: The cloth layer's transforms of this frame (``ClothLayer.frame``): the bound Gaussians ride
            their garment triangle instead of the blended bones.

    Returns:
        Gaussians in world coordinates.
    """
    if canonical.skin_weights is None:
        raise ValueError("layered_frame: canonical Gaussians carry no skin_weights")
    if joint_transforms.ndim != 3 or joint_transforms.shape[-2:] != (4, 4):
        raise ValueError(f"layered_frame: joint_transforms: expected [J, 4, 4], got {list(joint_transforms.shape)}")
    weights = canonical.skin_weights.to(canonical.means.dtype)
    if cloth is None:
        def pose(means: Tensor, quats: Tensor) -> tuple[Tensor, Tensor]:
            posed_means, posed_quats = skin_means_quats(means, quats, weights, joint_transforms[None])
            return posed_means[0], posed_quats[0]
    else:  # the bound rows' blended bone transforms replaced by their cloth transforms
        transforms = blend_transforms(weights, joint_transforms[None])[0].index_copy(
            0, cloth.index.to(weights.device), cloth.transforms.to(weights.device, weights.dtype))  # [N, 3, 4]

        def pose(means: Tensor, quats: Tensor) -> tuple[Tensor, Tensor]:
            return transform_means_quats(means, quats, transforms)

    if field_ is None and residual is None:
        return posed_frame(canonical, *pose(canonical.means, canonical.quats))
    if residual is None:
        residual = query_field(field_, canonical.means, time)
    space = field_.config.space if field_ is not None else "canonical"
    if space == "canonical":
        c_means, c_quats, c_scales = apply_residual(canonical.means, canonical.quats, canonical.log_scales, residual)
        means, quats = pose(c_means, c_quats)
        return canonical.replace(means=means, quats=quats, log_scales=c_scales)
    means, quats = pose(canonical.means, canonical.quats)
    p_means, p_quats, p_scales = apply_residual(means, quats, canonical.log_scales, residual)
    return canonical.replace(means=p_means, quats=p_quats, log_scales=p_scales)


def layered_frames(
    canonical: Gaussians,
    field_: ResidualField | None,
    joint_transforms: Tensor,
    frame_indices: Tensor | range | list[int],
    num_frames: int,
    cloth: ClothLayer | None = None,
) -> list[Gaussians]:
    """Posed frames for motion frames ``frame_indices`` (joint_transforms [len, J, 4, 4] in the same order),
    with the cloth layer's garment when given."""
    indices = list(frame_indices)
    if joint_transforms.shape[0] != len(indices):
        raise ValueError(
            f"layered_frames: joint_transforms: expected {len(indices)} frames, got {joint_transforms.shape[0]}")
    device, dtype = canonical.means.device, canonical.means.dtype
    return [
        layered_frame(canonical, field_, joint_transforms[k], normalized_time(int(i), num_frames).item(),
                      cloth=None if cloth is None else cloth.frame(int(i), device, dtype))
        for k, i in enumerate(indices)
    ]


@dataclass
class LayeredMotion:
    """The object the pipeline's export stage asks for frames (``run_prior_stages`` returns one).

    Attributes:
        field: The fitted residual field (None = no residual).
        cloth: The cloth layer (garment Gaussians ride the simulated or skinned garment), or None.
    """

    field: ResidualField | None
    cloth: ClothLayer | None = None

    def posed_frames(
        self, canonical: Gaussians, joint_transforms: Tensor, frame_slice: slice, num_frames: int
    ) -> list[Gaussians]:
        """Final per-frame Gaussians (world coordinates, detached) for the motion frames in ``frame_slice``.

        Args:
            canonical: Rest-pose Gaussians.
            joint_transforms: Rest->posed transforms of the frames in the slice. [Fc, J, 4, 4]
            frame_slice: Which motion frames (``start``/``stop``; step 1).
            num_frames: Frames in the whole motion (sets the normalised time).
        """
        indices = range(*frame_slice.indices(num_frames))
        field_ = self.field
        device = canonical.means.device
        if field_ is not None:
            field_ = field_.to(device)
        with torch.no_grad():
            frames = layered_frames(canonical, field_, joint_transforms.to(device, canonical.means.dtype),
                                    indices, num_frames, self.cloth)
        return [frame.detach() for frame in frames]
