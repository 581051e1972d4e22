"""Synthetic job result folders (docs/design.md §3 layout) written with numpy only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_3dgs_ply(path: Path, means, quats, log_scales, opacity_logits, sh, extra=None) -> None:
    """Write the standard 3DGS layout (float32, little-endian). sh: [N, K, 3]."""
    n, k = sh.shape[0], sh.shape[1]
    rest = np.transpose(sh[:, 1:], (0, 2, 1)).reshape(n, 3 * (k - 1))
    columns = [means, np.zeros((n, 3)), sh[:, 0], rest, opacity_logits[:, None], log_scales, quats]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    for name, values in (extra or {}).items():
        columns.append(np.asarray(values)[:, None])
        names.append(name)
    data = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())


def make_result(job_dir: Path, num_frames: int = 4, num_points: int = 200, sh_degree: int = 1, seed: int = 0,
                fps: float = 24.0, loose: bool = False) -> dict[str, np.ndarray]:
    """A result folder whose points move along random velocities; returns the per-frame arrays."""
    rng = np.random.default_rng(seed)
    frames_dir = Path(job_dir) / "frames"
    frames_dir.mkdir(parents=True)
    k = (sh_degree + 1) ** 2
    base = rng.normal(size=(num_points, 3)) * 0.3 + np.array([0, 0, 1.0])
    velocity = rng.normal(size=(num_points, 3)) * 0.05
    sh = rng.normal(size=(num_points, k, 3)) * 0.5
    log_scales = rng.normal(size=(num_points, 3)) * 0.3 - 4.5
    opacity = rng.normal(size=num_points)
    part = rng.integers(0, 8, size=num_points).astype(np.float64)
    labels = {"part_id": part}
    if loose:
        labels["loose"] = (rng.random(num_points) < 0.3).astype(np.float64)
    all_means, all_quats = [], []
    for f in range(num_frames):
        means = base + f * velocity + 0.01 * np.sin(f + np.arange(num_points))[:, None]
        quats = rng.normal(size=(num_points, 4))
        write_3dgs_ply(frames_dir / f"frame_{f:06d}.ply", means, quats, log_scales, opacity, sh,
                       extra=labels)
        all_means.append(means.astype(np.float32))
        all_quats.append(quats)
    (Path(job_dir) / "result.json").write_text(json.dumps(
        {"schema_version": 1, "status": "ok", "frames": num_frames, "fps": fps, "gaussians": num_points}))
    return {"means": np.stack(all_means), "quats": np.stack(all_quats), "sh": sh, "log_scales": log_scales,
            "opacity": opacity, "part": part}
