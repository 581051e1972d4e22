"""Fixtures for the reconstruction tests: a skirted synthetic subject rendered from a front camera."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from backend.motion.builtin import builtin_motion
from backend.motion.skinning import skin_gaussians
from backend.reconstruct.synthetic import photo_cameras, skirted_subject
from backend.render.render import RenderSettings, render

WIDTH, HEIGHT = 72, 96


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run these tests on one torch thread: on a shared 2-core machine, two OpenMP threads next to another busy
    process spin-wait and made the fit ~50x slower (0.5 vs 30 it/s, measured); one thread is as fast idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pose_gaussians(gaussians, transforms):
    """Skin Gaussians with one pose's joint transforms [J, 4, 4]."""
    means, quats = skin_gaussians(gaussians, None, transforms[None])
    return gaussians.replace(means=means[0], quats=quats[0])


@pytest.fixture(scope="session")
def walk(default_body):
    return builtin_motion("walk", default_body, frames=6)


@pytest.fixture(scope="session")
def reference_pose_out(default_body, walk):
    with torch.no_grad():
        return default_body(None, torch.as_tensor(walk.root_orient[:1]), torch.as_tensor(walk.pose_body[:1]),
                            torch.as_tensor(walk.trans[:1]))


@pytest.fixture(scope="session")
def scene(default_body, walk, reference_pose_out, tmp_path_factory):
    """Truth subject, four cameras (front = reference, left, back, right), truth renders, reference files."""
    truth = skirted_subject(default_body, 4000, torch.Generator().manual_seed(7))
    transforms = reference_pose_out.joint_transforms[0]
    cams = photo_cameras(torch.tensor([0.0, 0.0, 0.86]), [0.0, 90.0, 180.0, 270.0], width=WIDTH, height=HEIGHT)
    with torch.no_grad():
        views = render(pose_gaussians(truth, transforms), cams, settings=RenderSettings(backend="torch"))
    folder = tmp_path_factory.mktemp("reference")
    rgba = torch.cat([views.rgb[0], views.alpha[0]], dim=-1)
    image = folder / "reference.png"
    Image.fromarray((rgba.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), "RGBA").save(image)
    camera = cams[0].to_dicts()[0]
    camera_path = folder / "camera.json"
    camera_path.write_text(json.dumps(camera))
    return {"truth": truth, "cameras": cams, "views": views, "image": image, "camera": camera,
            "camera_path": camera_path, "transforms": transforms, "folder": folder}
