"""3DGS PLY I/O: the standard layout every splat viewer, Blender's PLY importer and Houdini read.

Vertex properties, float32, binary little-endian:
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3`` — ``f_rest`` channel-major
(all of red's higher-order coefficients, then green's, then blue's), opacity as a logit, scales as logs,
rotation as (w, x, y, z). Optional binding properties after them (ignored by viewers):
``part_id``, ``loose``, ``skin_0..skin_{J-1}``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from backend.gaussians.container import Gaussians


def _vertex_fields(num_rest: int, num_joints: int, binding: bool) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(num_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    if binding:
        names += ["part_id", "loose"] + [f"skin_{j}" for j in range(num_joints)]
    return names


def save_ply(gaussians: Gaussians, path: str | os.PathLike, *, binding: bool = True) -> None:
    """Write ``gaussians`` as a 3DGS PLY (atomically: a temporary file renamed into place).

    Args:
        gaussians: The Gaussians (any device; written as float32).
        path: Output file.
        binding: Also write ``part_id``, ``loose`` and dense ``skin_*`` weights when the Gaussians have them.
    """
    g = gaussians.detach().to("cpu", torch.float32)
    n, k = g.sh.shape[0], g.sh.shape[1]
    has_binding = binding and g.skin_weights is not None
    num_joints = g.skin_weights.shape[1] if has_binding else 0
    columns = [
        g.means.numpy(),
        np.zeros((n, 3), np.float32),
        g.sh[:, 0].numpy(),
        g.sh[:, 1:].transpose(1, 2).reshape(n, 3 * (k - 1)).numpy(),
        g.opacity_logits[:, None].numpy(),
        g.log_scales.numpy(),
        g.quats.numpy(),
    ]
    if has_binding:
        part = g.part_ids if g.part_ids is not None else torch.full((n,), -1)
        loose = g.loose if g.loose is not None else torch.zeros(n, dtype=torch.bool)
        columns += [part.float()[:, None].numpy(), loose.float()[:, None].numpy(), g.skin_weights.numpy()]
    data = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    names = _vertex_fields(3 * (k - 1), num_joints, has_binding)
    structured = data.view([(name, "<f4") for name in names]).reshape(n)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        PlyData([PlyElement.describe(structured, "vertex")], byte_order="<").write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY (ours, LHM's, or any 3DGS tool's) into raw-parameter Gaussians (float32, CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a 3DGS PLY (names the missing properties).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises several types for corrupt files
        raise ValueError(f"{path}: not a readable PLY file ({exc})") from exc
    if "vertex" not in [el.name for el in ply.elements]:
        raise ValueError(f"{path}: PLY has no 'vertex' element")
    vertex = ply["vertex"].data
    names = set(vertex.dtype.names)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")

    def stack(keys: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[key], dtype=np.float32) for key in keys], axis=1))

    n = len(vertex)
    rest_keys = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k[7:]))
    if len(rest_keys) % 3:
        raise ValueError(f"{path}: f_rest_* count {len(rest_keys)} is not a multiple of 3")
    sh_dc = stack(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :]
    if rest_keys:
        rest = stack(rest_keys).reshape(n, 3, len(rest_keys) // 3).transpose(1, 2)
        sh = torch.cat([sh_dc, rest], dim=1)
    else:
        sh = sh_dc
    skin_keys = sorted((k for k in names if k.startswith("skin_")), key=lambda k: int(k[5:]))
    return Gaussians(
        means=stack(["x", "y", "z"]),
        quats=stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=stack(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=torch.from_numpy(np.asarray(vertex["opacity"], dtype=np.float32)),
        sh=sh.contiguous(),
        skin_weights=stack(skin_keys) if skin_keys else None,
        part_ids=torch.from_numpy(np.asarray(vertex["part_id"]).astype(np.int64)) if "part_id" in names else None,
        loose=torch.from_numpy(np.asarray(vertex["loose"]) > 0.5) if "loose" in names else None,
    )
