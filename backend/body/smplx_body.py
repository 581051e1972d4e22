"""A user's SMPL / SMPL+H / SMPL-X model file, loaded through ``smplx``, posed by our own torch LBS.

We let ``smplx`` read the file (it knows every variant of the format) and take its buffers: template,
shape and pose blend shapes, joint regressor, weights, kinematic tree. Licensed model files never enter the
repository; the tests build a synthetic SMPL-format file themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from backend.body.model import NUM_BETAS, BodyModel
from backend.body.parts import SMPL_JOINT_NAMES, SMPLH_JOINT_NAMES, SMPLX_JOINT_NAMES
from backend.core.errors import InputError

_LAYOUTS = {
    # joints -> (names, hand joint indices or None)
    24: (SMPL_JOINT_NAMES, None),
    52: (SMPLH_JOINT_NAMES, tuple(range(22, 52))),
    55: (SMPLX_JOINT_NAMES, tuple(range(25, 55))),
}


def _load_smplx_layer(path: Path):
    import smplx

    suffix = path.suffix.lower()
    errors = []
    # Try the richest model first; smplx raises on files of another family.
    kinds = ("smplx", "smplh", "smpl") if suffix == ".npz" else ("smpl", "smplh", "smplx")
    for kind in kinds:
        try:
            if kind == "smpl":
                return smplx.SMPL(model_path=str(path), num_betas=NUM_BETAS)
            if kind == "smplh":
                return smplx.SMPLH(model_path=str(path), num_betas=NUM_BETAS, use_pca=False, flat_hand_mean=True,
                                   ext=suffix.lstrip("."))
            return smplx.SMPLX(model_path=str(path), num_betas=NUM_BETAS, use_pca=False, flat_hand_mean=True,
                               ext=suffix.lstrip("."))
        except Exception as exc:  # smplx raises KeyError/AssertionError/... for a different family
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
    raise InputError(f"body model {path}: not a readable SMPL/SMPL+H/SMPL-X file ({'; '.join(errors)})")


class SmplxBody(BodyModel):
    """SMPL-family model with pose blend shapes, driven with SMPL-X semantics."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"body model file not found: {path}")
        layer = _load_smplx_layer(path)
        parents = [int(p) for p in layer.parents.tolist()]
        parents[0] = -1
        num_joints = len(parents)
        if num_joints not in _LAYOUTS:
            raise InputError(f"body model {path}: {num_joints} joints; expected 24 (SMPL), 52 (SMPL+H) or 55 (SMPL-X)")
        names, hands = _LAYOUTS[num_joints]
        self.name = str(path)
        self.joint_names = names
        self.parents = tuple(parents)
        self.body_joint_index = tuple(range(1, 22))
        self.hand_joint_index = hands
        self.register_buffer("v_template", layer.v_template.detach().to(dtype))
        self.register_buffer("shapedirs", layer.shapedirs.detach().to(dtype))
        self.register_buffer("posedirs", layer.posedirs.detach().to(dtype))
        self.register_buffer("j_regressor", layer.J_regressor.detach().to(dtype))
        self.register_buffer("skin_weights", layer.lbs_weights.detach().to(dtype))
        self.register_buffer("faces", torch.as_tensor(layer.faces.astype("int64")))

    def shaped(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        coefficients = torch.zeros(self.shapedirs.shape[-1], dtype=self.dtype, device=self.device)
        n = min(betas.numel(), coefficients.numel())
        coefficients = torch.cat([betas.reshape(-1)[:n], coefficients[n:]])
        vertices = self.v_template + self.shapedirs @ coefficients
        return vertices, self.j_regressor @ vertices

    def pose_offsets(self, local_rotations: Tensor) -> Tensor:
        frames = local_rotations.shape[0]
        eye = torch.eye(3, dtype=local_rotations.dtype, device=local_rotations.device)
        feature = (local_rotations[:, 1:] - eye).reshape(frames, -1)
        return (feature @ self.posedirs).reshape(frames, -1, 3)
