"""Auto-alignment: a mis-scaled, shifted body is pulled back onto the photo's silhouette."""

from __future__ import annotations

import pytest
import torch

from backend.reconstruct.align import AlignSettings, align_to_silhouette, similarity
from backend.reconstruct.inputs import ReferencePose, load_reference_view


def test_similarity_matrix():
    m = similarity(torch.tensor(2.0), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    p = torch.tensor([2.0, 0.0, 0.0, 1.0])
    assert (m @ p).tolist() == [3.0, 1.0, 0.0, 1.0]
    assert (m @ torch.tensor([1.0, 0.0, 0.0, 1.0])).tolist() == [1.0, 1.0, 0.0, 1.0]  # centre stays, then moves


@pytest.mark.slow
def test_alignment_recovers_scale_and_shift(scene, default_body, walk):
    view = load_reference_view(scene["image"], scene["camera"], default_body, walk, 0, [])
    verts = view.pose.vertices
    wrong = similarity(torch.tensor(1.07), torch.tensor([0.04, 0.0, -0.03]), verts.mean(0))
    bad_pose = ReferencePose(wrong @ view.pose.joint_transforms, verts @ wrong[:3, :3].T + wrong[:3, 3], 0)
    bad = type(view)(rgb=view.rgb, mask=view.mask, camera=view.camera, pose=bad_pose)
    settings = AlignSettings(iterations=20, resolution=64, points=1000)
    aligned, info = align_to_silhouette(bad, default_body.faces, settings)
    assert info["applied"] and info["iou_after"] > info["iou_before"] + 0.05
    before = (bad_pose.vertices - verts).norm(dim=-1).mean()
    after = (aligned.pose.vertices - verts).norm(dim=-1).mean()
    assert float(after) < 0.5 * float(before)
    # The joint transforms moved with the vertices: aligned = S @ bad with S the reported similarity.
    s = aligned.pose.joint_transforms[0] @ torch.linalg.inv(bad_pose.joint_transforms[0])
    assert torch.allclose(s[:3, :3], info["scale"] * torch.eye(3), atol=1e-4)
    assert abs(info["scale"] - 1 / 1.07) < 0.03
