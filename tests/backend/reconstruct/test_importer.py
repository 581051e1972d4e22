"""3DGS PLY import: closest-point binding, rest/A-pose detection, labels, errors."""

from __future__ import annotations

import pytest
import torch

from backend.core.errors import InputError
from backend.gaussians import load_ply, save_ply
from backend.stages.job import JobSpec
from backend.motion.builtin import builtin_motion
from backend.motion.skinning import skin_gaussians
from backend.stages.animate import animate
from backend.reconstruct import sample_body_gaussians
from backend.core.meshes import closest_point_barycentric, nearest_on_mesh
from backend.reconstruct.importer import ImportSettings, a_pose_body, import_gaussians

pytestmark = pytest.mark.unit


def test_closest_point_matches_brute_force(generator):
    tri = torch.randn(200, 3, 3, generator=generator)
    p = 1.5 * torch.randn(200, 3, generator=generator)
    bary = closest_point_barycentric(p, tri[:, 0], tri[:, 1], tri[:, 2])
    assert float(bary.min()) >= -1e-5 and torch.allclose(bary.sum(-1), torch.ones(200), atol=1e-5)
    closest = (bary[..., None] * tri).sum(1)
    # Brute force over a dense barycentric grid.
    k = 120
    u, v = torch.meshgrid(torch.linspace(0, 1, k), torch.linspace(0, 1, k), indexing="ij")
    keep = (u + v) <= 1
    grid = torch.stack([1 - u[keep] - v[keep], u[keep], v[keep]], -1)  # [G, 3]
    samples = torch.einsum("gk,tkc->tgc", grid, tri)
    brute = (samples - p[:, None]).norm(dim=-1).min(dim=1).values
    exact = (closest - p).norm(dim=-1)
    assert float((exact - brute).max()) < 1e-5  # never farther than any sampled point
    assert float((brute - exact).max()) < 0.05  # and the grid gets close to it


def _subject(body, n=1500):
    return sample_body_gaussians(body, None, n, torch.Generator().manual_seed(3))


def test_rest_pose_import_recovers_binding(default_body, tmp_path):
    subject = _subject(default_body)
    path = tmp_path / "rest.ply"
    save_ply(subject, path, binding=False)
    warnings = []
    canonical = import_gaussians(path, default_body, None, ImportSettings(), warnings)
    assert warnings == []
    assert torch.allclose(canonical.means, subject.means)
    err = (canonical.skin_weights - subject.skin_weights).abs().sum(dim=1)
    assert float(err.median()) < 1e-3 and float((err < 0.05).float().mean()) > 0.97
    assert float((canonical.part_ids == subject.part_ids).float().mean()) > 0.98
    assert not bool(canonical.loose.any())


def test_a_pose_detected_and_carried_to_rest(default_body, tmp_path):
    subject = _subject(default_body)
    zeros = torch.zeros(1, 3)
    with torch.no_grad():
        out = default_body(None, zeros, a_pose_body(45.0), zeros)
    means, quats = skin_gaussians(subject, None, out.joint_transforms)
    left_hand = out.joints[0, default_body.joint_names.index("L_Wrist")]
    left_shoulder = out.joints[0, default_body.joint_names.index("L_Shoulder")]
    assert float(left_hand[1]) < float(left_shoulder[1]) - 0.2  # the A-pose really lowers the arms
    posed = subject.replace(means=means[0], quats=quats[0])
    path = tmp_path / "apose.ply"
    save_ply(posed, path, binding=False)
    canonical = import_gaussians(path, default_body, None, ImportSettings())
    moved = (canonical.means - subject.means).norm(dim=-1)
    assert float(moved.median()) < 2e-3 and float((moved < 0.01).float().mean()) > 0.97
    assert float((canonical.part_ids == subject.part_ids).float().mean()) > 0.97
    with pytest.raises(InputError, match="import pose: expected one of"):
        ImportSettings(pose="tpose")


def test_loose_label_from_distance(default_body):
    verts = default_body.rest_vertices().detach()
    faces = default_body.faces
    top = verts[verts[:, 1].argmax()]
    _, _, dist = nearest_on_mesh(torch.stack([top + torch.tensor([0.0, 0.1, 0.0]), top]), verts, faces)
    assert float(dist[0]) == pytest.approx(0.1, abs=0.01) and float(dist[1]) < 1e-5


def test_bad_ply_is_an_input_error(default_body, tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(InputError, match="import_gaussians: bad.ply is not a 3DGS PLY"):
        import_gaussians(bad, default_body)
    with pytest.raises(InputError, match="import_gaussians: file not found"):
        import_gaussians(tmp_path / "none.ply", default_body)


def test_pipeline_imports_a_ply(default_body, tmp_path):
    subject = _subject(default_body, 800)
    path = tmp_path / "avatar.ply"
    save_ply(subject, path, binding=False)
    spec = JobSpec(motion=builtin_motion("walk", default_body, frames=3), import_gaussians=str(path),
                   extras={"import_pose": "rest"})
    result = animate(spec, tmp_path / "job")
    assert result["gaussians"] == 800 and result["warnings"] == []
    canonical = load_ply(tmp_path / "job" / "canonical.ply")
    assert canonical.skin_weights.shape == (800, default_body.num_joints)
    assert torch.allclose(canonical.means, subject.means, atol=1e-6)


def test_import_extras_are_checked(default_body, tmp_path):
    path = tmp_path / "avatar.ply"
    save_ply(_subject(default_body, 200), path, binding=False)
    motion = builtin_motion("walk", default_body, frames=2)
    for extras, message in (({"import_pose": "tpose"}, "import pose: expected one of"),
                            ({"import_a_pose_degrees": "wide"}, "import_a_pose_degrees: expected a number")):
        spec = JobSpec(motion=motion, import_gaussians=str(path), extras=extras)
        with pytest.raises(InputError, match=message):
            animate(spec, tmp_path / "job")
