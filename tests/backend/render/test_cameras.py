"""Camera JSON contract, Blender/OpenCV conventions and camera trajectories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.core.errors import InputError
from backend.render import (
    Cameras,
    cameras_around,
    diagonal_trajectories,
    diagonal_trajectory,
    frame_subject,
    load_cameras,
    look_at,
    orbit_cameras,
    save_cameras,
)

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "data" / "camera_projection.json"


def contract_projection(cam: dict, point: np.ndarray) -> np.ndarray:
    """The same formula as tests/addon/test_camera_projection.py (which checks it against Blender)."""
    local = np.linalg.inv(np.asarray(cam["world_from_camera"], dtype=np.float64)) @ np.append(point, 1.0)
    depth = -local[2]
    return np.array([cam["fx"] * local[0] / depth + cam["cx"], -cam["fy"] * local[1] / depth + cam["cy"]])


def test_fixture_cameras_project_like_the_contract(tmp_path):
    fixture = json.loads(FIXTURE.read_text())
    points = np.asarray(fixture["points"])
    for i, cam_dict in enumerate(fixture["cameras"]):
        path = tmp_path / f"cam{i}.json"
        path.write_text(json.dumps(cam_dict))
        cams = load_cameras(path)  # single-camera form
        uv, depth = cams.to(dtype=torch.float64).project(torch.from_numpy(points))
        expected = np.stack([contract_projection(cam_dict, p) for p in points])
        np.testing.assert_allclose(uv[0].numpy(), expected, atol=1e-3)
        assert bool((depth > 0).all())


def test_json_round_trip(tmp_path):
    framing = frame_subject(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, 1.8]]))
    cams = orbit_cameras(framing, num_frames=5, width=64, height=48)
    cams = Cameras(width=64, height=48, fx=cams.fx * 1.01, fy=cams.fy, cx=cams.cx + 0.25, cy=cams.cy - 1.5,
                   world_from_camera=cams.world_from_camera)
    path = save_cameras(cams, tmp_path / "sub" / "cameras.json")
    data = json.loads(path.read_text())
    assert set(data["frames"][0]) == {"width", "height", "fx", "fy", "cx", "cy", "world_from_camera"}
    back = load_cameras(path)
    assert (back.width, back.height, len(back)) == (64, 48, 5)
    for name in ("fx", "fy", "cx", "cy", "world_from_camera"):
        assert torch.equal(getattr(back, name), getattr(cams, name)), name


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.pop("fx"), "frames[1].fx"),
    (lambda c: c.update(fy=-3.0), "frames[1].fy"),
    (lambda c: c.update(width=10.5), "frames[1].width"),
    (lambda c: c.update(height=99), "frames[1].width/height"),
    (lambda c: c.update(world_from_camera=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "frames[1].world_from_camera"),
    (lambda c: c["world_from_camera"][3].__setitem__(0, 2.0), "frames[1].world_from_camera"),
    (lambda c: c.update(cx="middle"), "frames[1].cx"),
])
def test_invalid_json_names_the_field(tmp_path, mutate, field):
    cams = orbit_cameras(frame_subject(torch.rand(10, 3)), num_frames=2, width=32, height=32)
    frames = cams.to_dicts()
    mutate(frames[1])
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"frames": frames}))
    with pytest.raises(InputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_cameras(path)


def test_not_json_is_an_input_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_cameras(path)


def test_view_matrix_is_opencv():
    eye = torch.tensor([[0.0, -3.0, 1.0]])
    cams = Cameras.from_fov(look_at(eye, torch.tensor([0.0, 0.0, 1.0])), width=100, height=80, fov_y_deg=40)
    view = cams.view_matrices()[0]
    # the look-at point is straight ahead (+z), world up is image up (−y in OpenCV), world +X is image right
    ahead = view @ torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(ahead[:3], torch.tensor([0.0, 0.0, 3.0]), atol=1e-5)
    up = view @ torch.tensor([0.0, 0.0, 2.0, 1.0])
    assert up[1] < -0.9
    right = view @ torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert right[0] > 0.9
    uv, _ = cams.project(torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([50.0, 40.0]), atol=1e-4)


def test_diagonal_trajectory_matches_the_paper():
    points = torch.tensor([[-0.4, -0.2, 0.0], [0.4, 0.2, 1.8]])
    framing = frame_subject(points)
    traj = diagonal_trajectory(framing, start_azimuth_deg=90.0)
    cams = traj.cameras
    assert (len(cams), cams.width, cams.height) == (81, 480, 832)
    i = torch.arange(81, dtype=torch.float64)
    assert torch.allclose(traj.azimuths_deg.double(), 90.0 - 30.0 + 60.0 * i / 80, atol=1e-4)
    assert torch.allclose(traj.times.double(), -1.0 + 2.0 * i / 80, atol=1e-6)
    # vertical field of view 40°
    assert torch.allclose(2 * torch.atan(cams.height / 2 / cams.fy), torch.tensor(math.radians(40.0)), atol=1e-6)
    # look at the centre, from the framing distance, 10° above it
    offset = cams.positions - framing.center
    assert torch.allclose(offset.norm(dim=-1), torch.tensor(framing.distance), atol=1e-4)
    assert torch.allclose(torch.asin(offset[:, 2] / offset.norm(dim=-1)), torch.tensor(math.radians(10.0)),
                          atol=1e-5)
    uv, _ = cams.project(framing.center[None])
    assert torch.allclose(uv[:, 0], torch.tensor([240.0, 416.0]), atol=1e-2)
    # azimuth 90° = camera on +X (counter-clockwise from the front view at −Y)
    mid = offset[40]
    assert mid[0] > 0.9 * mid[:2].norm()
    assert torch.equal(traj.frame_indices(21)[[0, 40, 80]], torch.tensor([0, 10, 20]))
    starts = [t.azimuths_deg[40].item() for t in diagonal_trajectories(framing, count=5)]
    assert starts == pytest.approx([0.0, 72.0, 144.0, 216.0, 288.0], abs=1e-4)


def test_frame_subject_keeps_the_subject_in_view_from_every_azimuth():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(500, 3, generator=gen) * torch.tensor([0.8, 0.4, 1.8])
    framing = frame_subject(points, width=480, height=832)
    for el in (0.0, 10.0):
        cams = orbit_cameras(framing, num_frames=12, elevation_deg=el, width=480, height=832)
        uv, depth = cams.project(points)
        assert bool((depth > 0).all())
        assert bool((uv[..., 0] >= 0).all() & (uv[..., 0] <= 480).all())
        assert bool((uv[..., 1] >= 0).all() & (uv[..., 1] <= 832).all())
    # and it is not absurdly far: the subject spans at least half the image height from the front
    uv, _ = orbit_cameras(framing, num_frames=1, width=480, height=832).project(points)
    assert float(uv[0, :, 1].max() - uv[0, :, 1].min()) > 0.5 * 832


def test_cameras_around_matches_orbit():
    framing = frame_subject(torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.3, 1.7]]))
    orbit = orbit_cameras(framing, num_frames=4, elevation_deg=-5.0, width=40, height=30)
    around = cameras_around(framing, torch.tensor([0.0, 90.0, 180.0, 270.0]), elevation_deg=-5.0, width=40,
                            height=30)
    assert torch.allclose(orbit.world_from_camera, around.world_from_camera, atol=1e-6)
