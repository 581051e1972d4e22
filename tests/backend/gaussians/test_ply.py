"""3DGS PLY: exact round trip, the standard property layout, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData

from backend.gaussians import Gaussians, load_ply, save_ply

pytestmark = pytest.mark.unit


def random_gaussians(generator, n=100, k=4, joints=6):
    w = torch.rand(n, joints, generator=generator)
    return Gaussians(
        means=torch.randn(n, 3, generator=generator),
        quats=torch.randn(n, 4, generator=generator),
        log_scales=torch.randn(n, 3, generator=generator),
        opacity_logits=torch.randn(n, generator=generator),
        sh=torch.randn(n, k, 3, generator=generator),
        skin_weights=w / w.sum(1, keepdim=True),
        part_ids=torch.randint(0, 10, (n,), generator=generator),
        loose=torch.rand(n, generator=generator) > 0.5,
    )


def test_round_trip_is_exact(tmp_path, generator):
    g = random_gaussians(generator)
    save_ply(g, tmp_path / "g.ply")
    back = load_ply(tmp_path / "g.ply")
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh", "skin_weights", "part_ids", "loose"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name


def test_standard_3dgs_layout(tmp_path, generator):
    g = random_gaussians(generator, k=4)
    save_ply(g, tmp_path / "g.ply", binding=False)
    ply = PlyData.read(str(tmp_path / "g.ply"))
    names = list(ply["vertex"].data.dtype.names)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:18] == [f"f_rest_{i}" for i in range(9)]
    assert names[18:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert ply.elements[0].data.dtype["x"] == np.dtype("<f4") and ply.text is False
    # f_rest is channel-major: red's 3 higher coefficients first
    np.testing.assert_array_equal(ply["vertex"]["f_rest_1"], g.sh[:, 2, 0].numpy())
    np.testing.assert_array_equal(ply["vertex"]["f_rest_3"], g.sh[:, 1, 1].numpy())


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.ply"):
        load_ply(tmp_path / "junk.ply")
    from plyfile import PlyElement

    arr = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(ValueError, match="missing vertex properties"):
        load_ply(tmp_path / "points.ply")


def test_container_validates_shapes():
    with pytest.raises(ValueError, match="quats"):
        Gaussians(torch.zeros(3, 3), torch.zeros(2, 4), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3, 1, 3))
