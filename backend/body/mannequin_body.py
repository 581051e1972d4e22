"""The embedded default body: mannequin-x's skinned 'wooden' mannequin (Apache-2.0, no licensed files).

Its skeleton has SMPL-X joint names (54 joints: no jaw/eyes, zero-length L_Hand/R_Hand), ten SMPL-X shape
coefficients and four skinning influences per vertex. The shape-dependent rest geometry is prepared once per
``betas`` with mannequin-x's own numpy code (not differentiable in betas); posing is our batched torch LBS,
differentiable in the pose. Hands use the flat hand mean (zero ``pose_hand`` = open flat hands), so zero
pose = the rest pose that ``canonical.ply`` lives in. mannequin-x's ``Mannequin.vertices()`` is the reference
in the tests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from backend.body.model import NUM_BETAS, BodyModel

# mannequin-x's SMPL-X body order: actuated joint k (k < 23) is driven by pose_body[:, ORDER[k]]
# (indices 21, 22 are its two zero-padding entries: the zero-length L_Hand/R_Hand joints).
_SMPLX_BODY_ORDER = (0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, 14, 12, 15, 17, 19, 21, 13, 16, 18, 20, 22)


class MannequinBody(BodyModel):
    """The 'wooden' mannequin as a torch body model."""

    name = "default"

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from mannequin import Mannequin

        self._mannequin = Mannequin("wooden", flat_hand_mean=True)
        m = self._mannequin
        self.joint_names = m.joint_names
        self.parents = tuple(m.parents)
        actuated = list(m._weights.actuated_joint_indices)
        body_index = [0] * 21
        for k, source in enumerate(_SMPLX_BODY_ORDER):
            if source < 21:
                body_index[source] = actuated[k]
        self.body_joint_index = tuple(body_index)
        self.hand_joint_index = tuple(actuated[23:])
        joint_index = m._skin_joint_indices
        weights = np.zeros((m.num_vertices, self.num_joints), np.float64)
        np.add.at(weights, (np.arange(m.num_vertices)[:, None], joint_index), m._skin_weights)
        self.register_buffer("skin_weights", torch.as_tensor(weights, dtype=dtype))
        self.register_buffer("faces", torch.as_tensor(np.asarray(m.faces), dtype=torch.int64))
        self._cache: dict[bytes, tuple[Tensor, Tensor]] = {}

    def shaped(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        coefficients = np.zeros(NUM_BETAS, np.float32)
        values = betas.detach().cpu().numpy().astype(np.float32).reshape(-1)[:NUM_BETAS]
        coefficients[: values.size] = values
        key = coefficients.tobytes()
        if key not in self._cache:
            self._mannequin.reshape(coefficients)
            identity = self._mannequin._identity
            vertices = torch.as_tensor(identity["skin_vertices"], dtype=self.dtype)
            joints = torch.as_tensor(identity["skin_bind_positions"], dtype=self.dtype)
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (vertices, joints)
        vertices, joints = self._cache[key]
        return vertices.to(self.device), joints.to(self.device)
