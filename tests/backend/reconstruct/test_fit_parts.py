"""Pieces of the image fit: inverse skinning, losses, crop camera, visibility, the back-fill rule."""

from __future__ import annotations

import math

import pytest
import torch

from backend.gaussians import Gaussians
from backend.motion.skinning import skin_means_quats
from backend.reconstruct.backfill import BackfillSettings, fill_unseen
from backend.reconstruct.photo_fit import (
    crop_view,
    gaussian_visibility,
    knn,
    sample_anchors,
    unpose,
)
from backend.render.metrics import masked_psnr, silhouette_iou, ssim
from backend.reconstruct.inputs import ReferencePose, ReferenceView
from backend.render.cameras import Cameras, look_at

pytestmark = pytest.mark.unit


def test_unpose_inverts_skinning(default_body, reference_pose_out, generator):
    n = 500
    anchors = sample_anchors(default_body, None, reference_pose_out.vertices[0], n, generator)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=-1)
    posed = Gaussians.from_colors(anchors.posed_points + 0.05 * torch.randn(n, 3, generator=generator),
                                  torch.rand(n, 3, generator=generator), quats=quats,
                                  skin_weights=anchors.skin_weights)
    transforms = reference_pose_out.joint_transforms[0]
    rest = unpose(posed, transforms)
    means, q = skin_means_quats(rest.means, rest.quats, rest.skin_weights, transforms[None])
    assert float((means[0] - posed.means).abs().max()) < 1e-4
    same = torch.minimum((q[0] - quats).abs().amax(-1), (q[0] + quats).abs().amax(-1))
    assert float(same.max()) < 1e-4
    # Anchors themselves map back onto the rest surface (up to LBS's non-linearity inside a triangle).
    back = unpose(posed.replace(means=anchors.posed_points), transforms).means
    assert float((back - anchors.rest_points).norm(dim=-1).median()) < 2e-3


def test_ssim_psnr_iou_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 32, 3, generator=g)
    assert float(ssim(x[None], x[None])) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(x[None], torch.rand(1, 32, 32, 3, generator=g))) < 0.2
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    y = x.clone()
    y[mask > 0.5] += 0.1
    y[0, 0] = 5.0  # outside the mask: ignored
    assert masked_psnr(y, x, mask) == pytest.approx(20.0, abs=1e-3)
    alpha = torch.zeros(32, 32)
    alpha[8:24, 8:16] = 1
    assert silhouette_iou(alpha, mask) == pytest.approx(0.5)


def test_knn_excludes_self_and_is_sorted():
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0.4, 0, 0]])
    nb = knn(pts, 2, chunk=2)
    assert nb.tolist() == [[3, 1], [3, 0], [1, 3], [0, 1]]


def test_crop_view_keeps_projection(scene, reference_pose_out):
    verts = reference_pose_out.vertices[0]
    view = ReferenceView(rgb=torch.rand(96, 72, 3), mask=scene["views"].alpha[0, ..., 0], camera=scene["cameras"][0],
                         pose=ReferencePose(scene["transforms"], verts, 0))
    fv = crop_view(view, verts, 40, 0.1)
    assert max(fv.camera.width, fv.camera.height) <= 40
    uv_full, _ = view.camera.project(verts)
    uv_crop, _ = fv.camera.project(verts)
    # A point's crop coordinates are an affine map of its full-image coordinates.
    sx = fv.camera.fx[0] / view.camera.fx[0]
    sy = fv.camera.fy[0] / view.camera.fy[0]
    assert float(sx) == pytest.approx(float(sy), rel=0.05)
    offset = uv_crop[0] - uv_full[0] * torch.stack([sx, sy])
    assert float((offset - offset.mean(0)).abs().max()) < 1e-3
    assert float(fv.mask.sum() / (sx * sy)) == pytest.approx(float(view.mask.sum()), rel=0.03)


def _wall(z: float, color: float, n_side: int = 12) -> Gaussians:
    xs = torch.linspace(-0.5, 0.5, n_side)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    means = torch.cat([grid[:, :1], grid[:, 1:], torch.full((grid.shape[0], 1), z)], dim=1)
    scales = torch.tensor([0.06, 0.06, 0.005]).expand(means.shape[0], 3)
    return Gaussians.from_colors(means, torch.full_like(means, color), scales=scales,
                                 opacities=0.99)


def test_visibility_front_wall_seen_back_wall_hidden():
    front, back = _wall(0.3, 0.9), _wall(-0.3, 0.1)
    both = Gaussians.concatenate([front, back])
    cam = Cameras.from_fov(look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])),
                           width=48, height=48, fov_y_deg=40)
    vis = gaussian_visibility(both, cam, 0.02)
    n = front.num_gaussians
    assert float(vis[:n].mean()) > 0.9
    assert float(vis[n:].max()) < 0.1


def test_backfill_takes_nearest_seen_same_part():
    points = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [1.0, 0, 0], [1.1, 0, 0], [5.0, 0, 0]])
    parts = torch.tensor([0, 0, 1, 1, 1, 2])
    visibility = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.05, 0.0])
    colors = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 1.0], [0.5, 0.5, 0.5],
                           [0.5, 0.5, 0.5]])
    offsets = torch.tensor([0.08, 0.0, 0.0, 0.01, 0.0, 0.0])
    out_c, out_o, seen = fill_unseen(points, parts, visibility, colors, offsets, BackfillSettings(k=1))
    assert seen.tolist() == [True, False, False, True, False, False]
    assert out_c[1].tolist() == [1.0, 0, 0] and out_o[1] == pytest.approx(0.08)  # part 0 from point 0
    assert out_c[2].tolist() == [0, 0, 1.0]  # part 1 from point 3, although point 0 (another part) is closer
    assert out_c[4].tolist() == [0, 0, 1.0] and out_o[4] == pytest.approx(0.01)
    assert out_c[5].tolist() == [0, 0, 1.0]  # part 2 has nothing seen: nearest seen of any part (point 3)
    assert out_c[0].tolist() == [1.0, 0, 0] and out_c[3].tolist() == [0, 0, 1.0]  # seen ones unchanged
    assert math.isclose(float(out_o[0]), 0.08, abs_tol=1e-7)
